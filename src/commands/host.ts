import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { hostContextOf } from './host-context.ts';

export function registerHost(program: Command, _context: ContextFactory): void {
  const context = hostContextOf(program);
  const host = program.command('host').description('the host contract: base-image folder, AppArmor rule, storage pools');
  host
    .command('setup')
    .description(
      'check the host contract and print the plan of what is missing (IVM_BASE_DIR root-owned 0755 with 0444 images, ' +
        'IVM_VM_DIR, one AppArmor rule for IVM_BASE_DIR where AppArmor is enabled, pools basepool and vmpool in system mode); ' +
        '--apply does it. Safe to run again.',
    )
    .option('--apply', 'do the plan (otherwise it is only printed)')
    .action(async (options: { apply?: boolean }) => (await import('../core/host/host-setup.ts')).hostSetup(context(), { apply: Boolean(options.apply) }));
}

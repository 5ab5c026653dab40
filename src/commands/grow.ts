import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { seconds } from './lifecycle.ts';

export function registerGrow(program: Command, context: ContextFactory): void {
  program
    .command('grow')
    .argument('<name>', 'machine name')
    .description(
      "grow a stopped VM's /var disk to meta.nix's varSize (qemu-img resize; the guest grows its filesystem at its next boot). " +
        'Never shrinks: a varSize smaller than the disk is refused',
    )
    .option('--restart', 'if the VM runs: shut it down gracefully, grow, start it again')
    .option('-t, --timeout <seconds>', 'how long --restart waits for the shutdown', seconds, 120)
    .action(async (name: string, options: { restart?: boolean; timeout: number }) =>
      (await import('../core/disks/grow.ts')).growVm(context(), name, { restart: Boolean(options.restart), timeoutSeconds: options.timeout }),
    );
}

import type { Command } from 'commander';
import { wholeSeconds } from './options.ts';
import type { ContextFactory } from '../cli.ts';

/** The implementation, loaded when a command runs (start-up loads only the commands' definitions). */
const core = () => import('../core/vm/lifecycle.ts');

/** Parses a --timeout value. */
export const seconds = wholeSeconds(1);

export function registerLifecycle(program: Command, context: ContextFactory): void {
  program
    .command('start')
    .argument('<name>', 'machine name')
    .description('start the VM')
    .action(async (name: string) => (await core()).startVm(context(), name));
  program
    .command('stop')
    .argument('<name>', 'machine name')
    .description('shut the VM down gracefully and wait until it is off')
    .option('-f, --force', 'power it off at once (virsh destroy), no graceful shutdown')
    .option('-t, --timeout <seconds>', 'how long to wait for a graceful shutdown', seconds, 120)
    .action(async (name: string, options: { force?: boolean; timeout: number }) =>
      (await core()).stopVm(context(), name, { force: Boolean(options.force), timeoutSeconds: options.timeout }),
    );
  program
    .command('reboot')
    .argument('<name>', 'machine name')
    .description('reboot a running VM: ask its OS (virsh reboot: ACPI, or the guest agent), or with --force reset it at once')
    .option('-f, --force', 'reset it at once (virsh reset): no shutdown, so what the guest had not written to disk is lost')
    .action(async (name: string, options: { force?: boolean }) => (await core()).rebootVm(context(), name, { force: Boolean(options.force) }));
  program
    .command('console')
    .argument('<name>', 'machine name')
    .description("attach to the VM's serial console (leave with Ctrl+])")
    .action(async (name: string) => (await core()).consoleVm(context(), name));
  program
    .command('destroy')
    .argument('<name>', 'machine name')
    .description('undefine the VM (with its NVRAM), remove its boot overlays and serial log; the /var disk is kept')
    .option('--delete-var', 'also delete the /var disk: all of its data is lost')
    .option('-f, --force', 'power the VM off if it runs, and discard a saved memory image (otherwise both are refused)')
    .action(async (name: string, options: { deleteVar?: boolean; force?: boolean }) =>
      (await core()).destroyVm(context(), name, { deleteVar: Boolean(options.deleteVar), force: Boolean(options.force) }),
    );
}

// `ivm clone SRC NEW`: the options; the work is in src/core/vm/clone.ts.
import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { seconds } from './lifecycle.ts';

export function registerClone(program: Command, context: ContextFactory): void {
  program
    .command('clone')
    .argument('<src>', 'machine name (the machine to copy)')
    .argument('<new>', 'name of the new machine (a hostname label: lowercase letters, digits, dashes)')
    .description(
      "a new machine NEW from SRC: SRC's meta.nix (not its address), default.nix and the identity files that are not one machine's, " +
        "NEW's own machine-id, hostname and host key, a copy of SRC's /var (its snapshots are not copied) with /var/identity rewritten; defined on SRC's base",
    )
    .option('--stop', 'if SRC runs: shut it down gracefully, clone it, start it again (after a failure it stays off)')
    .option('--start', 'start NEW once it is defined')
    .option('-t, --timeout <seconds>', 'how long --stop waits for the shutdown', seconds, 120)
    .action(async (source: string, name: string, options: { stop?: boolean; start?: boolean; timeout: number }) =>
      (await import('../core/vm/clone.ts')).cloneVm(context(), source, name, { stop: Boolean(options.stop), start: Boolean(options.start), timeoutSeconds: options.timeout }),
    );
}

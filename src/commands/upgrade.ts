import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { seconds } from './lifecycle.ts';

export function registerUpgrade(program: Command, context: ContextFactory): void {
  program
    .command('upgrade')
    .argument('<name>', 'machine name')
    .description(
      "move a stopped VM to its newly built base and resync /var/identity (nothing else on /var is touched); grow the /var disk if meta.nix's varSize grew; redefine it and apply meta.nix's autostart",
    )
    .option('--no-build', 'use the base last built by `ivm build` instead of building')
    .option('--restart', 'if the VM runs: shut it down gracefully, upgrade, start it again')
    .option('-t, --timeout <seconds>', 'how long --restart waits for the shutdown', seconds, 120)
    .action(async (name: string, options: { build: boolean; restart?: boolean; timeout: number }) =>
      (await import('../core/vm/upgrade.ts')).upgradeVm(context(), name, { build: options.build, restart: Boolean(options.restart), timeoutSeconds: options.timeout }),
    );
  program
    .command('rollback')
    .argument('<name>', 'machine name')
    .description('put the boot overlay back onto the base before the last upgrade (the current one becomes the rollback target)')
    .option('--restart', 'if the VM runs: shut it down gracefully, roll back, start it again')
    .option('-t, --timeout <seconds>', 'how long --restart waits for the shutdown', seconds, 120)
    .action(async (name: string, options: { restart?: boolean; timeout: number }) =>
      (await import('../core/vm/upgrade.ts')).rollbackVm(context(), name, { restart: Boolean(options.restart), timeoutSeconds: options.timeout }),
    );
  program
    .command('recreate')
    .argument('<name>', 'machine name')
    .description('start afresh: new boot overlay AND new /var disk (all /var data is lost; asks, or needs --yes)')
    .option('-y, --yes', 'do not ask: yes, delete the /var disk')
    .option('--no-build', 'use the base last built by `ivm build` instead of building')
    .option('--start', 'start the VM once it is defined')
    .action(async (name: string, options: { yes?: boolean; build: boolean; start?: boolean }) =>
      (await import('../core/vm/recreate.ts')).recreateVm(context(), name, { yes: Boolean(options.yes), build: options.build, start: Boolean(options.start) }),
    );
}

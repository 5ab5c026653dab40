import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';

export function registerCreate(program: Command, context: ContextFactory): void {
  program
    .command('create')
    .argument('<name>', 'machine name')
    .description('create the VM: boot overlay on the base image, a new /var disk with the identity, XML, virsh define (and virsh autostart with meta.nix autostart = true)')
    .option('--no-build', 'use the base last built by `ivm build` instead of building')
    .option('--start', 'start the VM once it is defined')
    .action(async (name: string, options: { build: boolean; start?: boolean }) => {
      const { createVm } = await import('../core/vm/create.ts');
      await createVm(context(), name, { build: options.build, start: Boolean(options.start) });
    });
}

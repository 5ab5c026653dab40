import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';

export function registerBuild(program: Command, context: ContextFactory): void {
  program
    .command('build')
    .argument('<name>', 'machine name')
    .description("nix build the machine's image and install it once into IVM_BASE_DIR (read-only, shared); prints the base path")
    .action(async (name: string) => {
      const { buildBase } = await import('../core/base/build.ts');
      const ctx = context();
      const built = await buildBase(ctx, name);
      if (!ctx.runner.dryRun) {
        if (!built.copied) process.stderr.write(`${built.base} is already installed: nothing copied\n`);
        ctx.say(built.base);
      }
    });
}

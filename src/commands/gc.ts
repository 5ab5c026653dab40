import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';

export function registerGc(program: Command, context: ContextFactory): void {
  program
    .command('gc')
    .description('delete base images that no disk in IVM_VM_DIR or of any libvirt domain uses (as current or rollback base) and no machine last built')
    .action(async () => {
      const { collectGarbage } = await import('../core/base/gc.ts');
      const ctx = context();
      const result = await collectGarbage(ctx);
      const verb = ctx.runner.dryRun ? 'would remove' : 'removed';
      for (const { base, why } of result.kept) ctx.say(`kept ${base} (used by ${why})`);
      for (const { base, bytes } of result.removed) ctx.say(`${verb} ${base} (${bytes} bytes)`);
      const total = result.removed.reduce((sum, r) => sum + r.bytes, 0);
      ctx.say(result.removed.length === 0 ? 'nothing to remove' : `${verb} ${result.removed.length} base image(s), ${total} bytes freed`);
    });
}

import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';

export function registerIdentity(program: Command, context: ContextFactory): void {
  program
    .command('identity')
    .argument('<name>', 'machine name (a folder in machines/)')
    .description("create the machine's missing identity files (machine-id, hostname, SSH host key, known_hosts); never overwrites")
    .action(async (name: string) => {
      const [{ ensureIdentity }, { machineDir }, { withVmLock }] = await Promise.all([
        import('../core/identity/identity.ts'),
        import('../core/machine/machine.ts'),
        import('../core/lock.ts'),
      ]);
      const ctx = context();
      const dir = machineDir(ctx.project, name);
      const writes = await withVmLock(ctx, name, 'identity', async () => ensureIdentity(ctx, dir, name));
      if (writes.length === 0) ctx.say(`${name}: identity complete, nothing to write`);
    });
}

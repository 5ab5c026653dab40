import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';

export function registerStatus(program: Command, context: ContextFactory): void {
  program
    .command('status')
    .argument('<name>', 'machine name')
    .description('state, current and rollback base, disk sizes, identity files and whether /var/identity is in sync (read-only)')
    .option('--json', 'print JSON')
    .action(async (name: string, options: { json?: boolean }) => {
      const { formatStatus, vmStatus } = await import('../core/vm/status.ts');
      const ctx = context();
      const status = await vmStatus(ctx, name);
      if (options.json) process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
      else for (const line of formatStatus(status)) ctx.say(line);
    });
}

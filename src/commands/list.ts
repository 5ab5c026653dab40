import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { listVms } from '../core/lifecycle.ts';

export function registerList(program: Command, context: ContextFactory): void {
  program
    .command('list')
    .description('every machine in machines/ with the state of its domain (one virsh call)')
    .option('--json', 'print JSON: [{"name", "state"}]')
    .action(async (options: { json?: boolean }) => {
      const entries = await listVms(context());
      if (options.json) {
        process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        return;
      }
      const width = Math.max(4, ...entries.map((e) => e.name.length));
      process.stdout.write(`${'NAME'.padEnd(width)}  STATE\n`);
      for (const entry of entries) process.stdout.write(`${entry.name.padEnd(width)}  ${entry.state}\n`);
    });
}

import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import type { ListEntry } from '../core/vm/lifecycle.ts';

export function registerList(program: Command, context: ContextFactory): void {
  program
    .command('list')
    .description(
      "every machine in machines/ with the state of its domain, whether libvirt autostarts it (two virsh calls) and whether its base is the machine's latest build",
    )
    .option('--json', 'print JSON: [{"name", "state", "base", "autostart"}], base one of latest, behind, gone, none, unknown; autostart true, false, or null without a domain')
    .action(async (options: { json?: boolean }) => {
      const { listVms } = await import('../core/vm/lifecycle.ts');
      const entries = await listVms(context());
      if (options.json) {
        process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
        return;
      }
      const width = Math.max(4, ...entries.map((e) => e.name.length));
      const stateWidth = Math.max(5, ...entries.map((e) => e.state.length));
      const base: Record<ListEntry['base'], (name: string) => string> = {
        latest: () => 'latest build',
        behind: (name) => `older than the latest build (ivm upgrade ${name} --no-build)`,
        gone: (name) => `its base file is gone (ivm upgrade ${name})`,
        none: () => '-',
        unknown: () => 'not built here',
      };
      const autostart = (entry: ListEntry) => (entry.autostart === null ? '-' : entry.autostart ? 'yes' : 'no');
      process.stdout.write(`${'NAME'.padEnd(width)}  ${'STATE'.padEnd(stateWidth)}  AUTOSTART  BASE\n`);
      for (const entry of entries) {
        process.stdout.write(`${entry.name.padEnd(width)}  ${entry.state.padEnd(stateWidth)}  ${autostart(entry).padEnd(9)}  ${base[entry.base](entry.name)}\n`);
      }
    });
}

import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import path from 'node:path';

export function registerXml(program: Command, context: ContextFactory): void {
  program
    .command('xml')
    .argument('[names...]', 'machine names (default: every machine that has its identity)')
    .description('print the libvirt domain XML of machines, or write it to libvirt/<name>.xml with --write')
    .option('-w, --write', 'write libvirt/<name>.xml instead of printing')
    .action(async (names: string[], options: { write?: boolean }) => {
      const [{ renderXml }, { machineNames }, { vmPaths }, { hasMachineId }, { withVmLock }, { writeFileAtomic }] = await Promise.all([
        import('../core/vm/lifecycle.ts'),
        import('../core/machine/project.ts'),
        import('../core/disks/vm-paths.ts'),
        import('../core/identity/identity.ts'),
        import('../core/lock.ts'),
        import('../core/safe-files.ts'),
      ]);
      const ctx = context();
      const all = names.length === 0;
      const targets = all ? machineNames(ctx.project) : names;
      for (const name of targets) {
        // Every machine: those without identity yet have no uuid or MAC to render; say so, go on.
        if (all && !hasMachineId(path.join(ctx.project.machinesDir, name))) {
          process.stderr.write(`skipped ${name}: no identity yet (ivm identity ${name})\n`);
          continue;
        }
        const xml = await renderXml(ctx, name);
        if (!options.write) {
          process.stdout.write(xml);
          continue;
        }
        const file = vmPaths(ctx.settings, ctx.project, name).xml;
        if (ctx.runner.dryRun) {
          ctx.say(`would write ${file}`);
          continue;
        }
        await withVmLock(ctx, name, 'xml --write', async () => writeFileAtomic(file, xml));
        ctx.say(file);
      }
    });
  program
    .command('define')
    .argument('<name>', 'machine name')
    .description("write libvirt/<name>.xml and (re)define the domain; the uuid and MAC stay the same; libvirt's autostart is made meta.nix's")
    .action(async (name: string) => (await import('../core/vm/lifecycle.ts')).defineVm(context(), name));
}

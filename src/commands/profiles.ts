// `ivm profiles`: the profile catalogue (modules/profiles/catalogue.json: the project's own, else
// ivm's), each profile's name and its one line.
import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import type { Project } from '../core/machine/project.ts';

export function registerProfiles(program: Command, _context: ContextFactory): void {
  program
    .command('profiles')
    .description("list the profiles a machine's default.nix can enable (ivm.profiles.NAME.enable = true;), from modules/profiles/catalogue.json")
    .option('--json', 'print JSON: [{"name", "description"}]')
    .action(async (options: { json?: boolean }) => {
      const [{ readCatalogue }, { findProject }] = await Promise.all([import('../core/machine/new-machine.ts'), import('../core/machine/project.ts')]);
      // Outside a project, ivm's own catalogue (an IVM_ROOT that is wrong is still an error).
      let project: Project | undefined;
      try {
        project = findProject();
      } catch (error) {
        if (process.env.IVM_ROOT) throw error;
      }
      const catalogue = readCatalogue(project);
      if (program.opts<{ verbose?: boolean }>().verbose) process.stderr.write(`ivm: catalogue ${catalogue.file}\n`);
      if (options.json) {
        process.stdout.write(`${JSON.stringify(catalogue.profiles, null, 2)}\n`);
        return;
      }
      const width = Math.max(7, ...catalogue.profiles.map((p) => p.name.length));
      process.stdout.write(`${'PROFILE'.padEnd(width)}  DESCRIPTION\n`);
      for (const p of catalogue.profiles) process.stdout.write(`${p.name.padEnd(width)}  ${p.description}\n`);
    });
}

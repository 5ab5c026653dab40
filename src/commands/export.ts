import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { BadInputError } from '../errors.ts';

export function registerExport(program: Command, context: ContextFactory): void {
  program
    .command('export')
    .usage('[options] NAME DIR | --all DIR')
    .argument('<name>', 'machine name (with --all: the folder DIR)')
    .argument('[dir]', 'the folder to write into (made if missing; it must be empty unless --force)')
    .description(
      'write a standalone provisioner of the VM into DIR: a Makefile (up, down, create, start, stop, console, ip, ssh, status, destroy) ' +
        'with the domain XML, a ready /var image holding its identity (0600, git-ignored), the known_hosts that pins its host key and a README; ' +
        'it needs make, virsh, qemu-img and ssh, never ivm. The VM needs an identity and a built base (the last `ivm build`, or --build)',
    )
    .option('--all', 'every machine: one provisioner per machine in DIR/NAME, and a Makefile in DIR that runs them')
    .option('-f, --force', 'write into a folder that is not empty, replacing the files export writes there (others are kept; never through a link)')
    .option('--build', 'build the base image first (default: the base last built by `ivm build`)')
    .action(async (first: string, second: string | undefined, options: { all?: boolean; force?: boolean; build?: boolean }) => {
      const { exportAll, exportVm } = await import('../core/fleet/export.ts');
      const flags = { force: Boolean(options.force), build: Boolean(options.build) };
      if (options.all) {
        if (second !== undefined) throw new BadInputError('ivm export --all takes one folder, not a machine name: ivm export --all DIR');
        return exportAll(context(), first, flags);
      }
      if (second === undefined) throw new BadInputError('ivm export needs the machine and the folder: ivm export NAME DIR (or ivm export --all DIR)');
      return exportVm(context(), first, second, flags);
    });
}

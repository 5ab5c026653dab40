// The runner a command uses, from the global options (--dry-run, --verbose, --quiet) and the
// environment. Every command's runner is made here (src/cli.ts's context factory and the host
// commands' alike), so this is also where the one progress reporter is made: from --quiet and
// --dry-run, and whether stderr is a terminal.
import type { Command } from 'commander';
import { Runner } from '../host/runner.ts';
import { readSettings } from '../host/settings.ts';
import { checkImageFolders } from '../core/base/base-dir.ts';
import { createProgress, type Progress } from '../core/progress.ts';

export interface GlobalOptions {
  dryRun?: boolean;
  verbose?: boolean;
  quiet?: boolean;
}

/**
 * Progress on stderr: none under --quiet, nor under --dry-run (the plan is printed instead); redrawn
 * in place only on a terminal (TERM=dumb is not one that can).
 */
export function progressOf(options: GlobalOptions, stream: NodeJS.WriteStream = process.stderr, env: NodeJS.ProcessEnv = process.env): Progress {
  return createProgress({
    quiet: Boolean(options.quiet || options.dryRun),
    tty: Boolean(stream.isTTY) && env.TERM !== 'dumb',
    write: (text) => void stream.write(text),
    columns: () => stream.columns,
  });
}

/** One reporter per program (a command that makes its context twice still draws one step line). */
const reporters = new WeakMap<Command, Progress>();

export function runnerOf(program: Command): Runner {
  const options = program.opts<GlobalOptions>();
  const settings = readSettings();
  checkImageFolders(settings);
  let progress = reporters.get(program);
  if (!progress) reporters.set(program, (progress = progressOf(options)));
  return new Runner(settings, { dryRun: Boolean(options.dryRun), verbose: Boolean(options.verbose), progress });
}

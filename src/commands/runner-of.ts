// The runner a command uses, from the global options (--dry-run, --verbose) and the environment.
import type { Command } from 'commander';
import { Runner } from '../host/runner.ts';
import { readSettings } from '../host/settings.ts';
import { checkImageFolders } from '../core/base-dir.ts';

export interface GlobalOptions {
  dryRun?: boolean;
  verbose?: boolean;
}

export function runnerOf(program: Command): Runner {
  const options = program.opts<GlobalOptions>();
  const settings = readSettings();
  checkImageFolders(settings);
  return new Runner(settings, { dryRun: Boolean(options.dryRun), verbose: Boolean(options.verbose) });
}

// Builds a HostContext from the global options, like the context factory of src/cli.ts, without
// requiring a project.
import type { Command } from 'commander';
import type { GlobalOptions } from '../cli.ts';
import { makeHostContext, type HostContext } from '../core/host-context.ts';
import { Runner } from '../host/runner.ts';
import { readSettings } from '../host/settings.ts';

export function hostContextOf(program: Command): () => HostContext {
  return () => {
    const options = program.opts<GlobalOptions>();
    const settings = readSettings();
    return makeHostContext(settings, new Runner(settings, { dryRun: Boolean(options.dryRun), verbose: Boolean(options.verbose) }));
  };
}

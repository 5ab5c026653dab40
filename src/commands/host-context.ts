// Builds a HostContext from the global options, like the context factory of src/cli.ts, without
// requiring a project.
import type { Command } from 'commander';
import { makeHostContext, type HostContext } from '../core/host/host-context.ts';
import { runnerOf } from './lazy-runner.ts';

export function hostContextOf(program: Command): () => HostContext {
  return () => {
    const runner = runnerOf(program);
    return makeHostContext(runner.settings, runner);
  };
}

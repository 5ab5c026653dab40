// The runner, and execa with it, loaded when a command is about to run (src/cli.ts's preAction hook)
// rather than at start-up: `ivm --version`, `--help` and `completion` never run a command, and
// loading execa is most of what they would otherwise wait for.
import type { Command } from 'commander';
import type { Runner } from '../host/runner.ts';

let loaded: typeof import('./runner-of.ts') | undefined;

/** Commands of ivm itself that never run a program: no runner is loaded for them. */
const RUN_NOTHING = new Set(['completion']);

/** A preAction hook: loads the runner before the action of `action` runs. */
export async function loadRunnerOf(_hooked?: Command, action?: Command): Promise<void> {
  if (action && action.parent && !action.parent.parent && RUN_NOTHING.has(action.name())) return;
  loaded ??= await import('./runner-of.ts');
}

/** runner-of.ts's runnerOf, once loadRunnerOf has run (before every action). */
export function runnerOf(program: Command): Runner {
  if (!loaded) throw new Error('internal: the runner is not loaded (src/cli.ts loads it before every action)');
  return loaded.runnerOf(program);
}

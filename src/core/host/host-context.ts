// A context for the host commands (host setup, doctor, net, ip, ssh, wait): like Context, but the
// project is optional, since the host can be set up and checked outside a repository.
import { BadInputError } from '../../errors.ts';
import type { Runner } from '../../host/runner.ts';
import type { Settings } from '../../host/settings.ts';
import type { Context } from '../context.ts';
import { findProject, type Project } from '../machine/project.ts';

export type HostContext = Omit<Context, 'project'> & { project: Project | undefined };

/** The project when there is one (undefined outside a repository); other errors propagate. */
export function optionalProject(env: NodeJS.ProcessEnv = process.env): Project | undefined {
  try {
    return findProject(env);
  } catch (error) {
    if (error instanceof BadInputError && !env.IVM_ROOT) return undefined;
    throw error;
  }
}

export function makeHostContext(settings: Settings, runner: Runner): HostContext {
  return { project: optionalProject(), settings, runner, say: (line) => process.stdout.write(`${line}\n`) };
}

/** The project, or the error a command that needs one gives. */
export function requireProject(ctx: HostContext): Project {
  return ctx.project ?? findProject();
}

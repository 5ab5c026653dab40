import type { Runner } from '../host/runner.ts';
import type { Settings } from '../host/settings.ts';
import type { Project } from './machine/project.ts';

/** What every operation needs: where the project is, how to run commands, where to report. */
export interface Context {
  project: Project;
  settings: Settings;
  /** Runs commands; runner.progress reports steps on stderr (src/core/progress.ts). */
  runner: Runner;
  /** Results for the user (stdout); progress goes to runner.progress, never here. */
  say: (line: string) => void;
}

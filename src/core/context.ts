import type { Runner } from '../host/runner.ts';
import type { Settings } from '../host/settings.ts';
import type { Project } from './project.ts';

/** What every operation needs: where the project is, how to run commands, where to report. */
export interface Context {
  project: Project;
  settings: Settings;
  runner: Runner;
  /** Progress and results for the user (stdout). */
  say: (line: string) => void;
}

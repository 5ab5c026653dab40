// An operation as data: the steps it will take, each with how to undo it. One mechanism prints a
// plan (--dry-run), runs it, and rolls back the steps already done when a later one fails.
import { IvmError, fileSystemError } from '../errors.ts';
import { readRegularFile, regularFileExists, removeFile, writeFileAtomic } from './safe-files.ts';
import type { Command, Runner } from '../host/runner.ts';

export type Step =
  | { kind: 'run'; title: string; command: Command; undo?: Command }
  | { kind: 'write'; title: string; path: string; content: string };

export interface Plan {
  title: string;
  steps: Step[];
}

/** Shown with the first error when a plan had to be rolled back. */
export class PlanFailedError extends IvmError {
  constructor(error: IvmError | Error, step: Step, undone: string[], undoErrors: string[]) {
    // A file the user may not touch (EACCES, EROFS, ...) keeps its exit code and hint through the rollback.
    const cause = error instanceof IvmError ? error : (fileSystemError(error) ?? error);
    const lines = [`${step.title} failed: ${cause.message}`];
    if (undone.length > 0) lines.push(`rolled back: ${undone.join('; ')}`);
    if (undoErrors.length > 0) lines.push(`could not roll back (clean up by hand): ${undoErrors.join('; ')}`);
    super(lines.join('\n'), { exitCode: cause instanceof IvmError ? cause.exitCode : 1, hint: cause instanceof IvmError ? cause.hint : undefined });
  }
}

export function describePlan(runner: Runner, plan: Plan): string[] {
  return plan.steps.map((step) =>
    step.kind === 'run' ? `# ${step.title}\n${runner.describe(step.command)}` : `# ${step.title}\n# (write ${step.path})`,
  );
}

/**
 * Runs (or, under --dry-run, prints) the steps in order, each reported to runner.progress as it
 * starts ("[3/6] title", on stderr); on failure undoes the finished ones in reverse.
 */
export async function executePlan(runner: Runner, plan: Plan, print: (line: string) => void): Promise<void> {
  if (runner.dryRun) {
    print(`# ${plan.title} (dry run: nothing is changed)`);
    for (const line of describePlan(runner, plan)) print(line);
    return;
  }
  const undos: { title: string; undo: () => Promise<void> }[] = [];
  const total = plan.steps.length;
  if (total > 0) runner.progress.plan(plan.title, total);
  for (const [at, step] of plan.steps.entries()) {
    try {
      await runner.progress.step(
        step.title,
        async () => {
          if (step.kind === 'run') {
            await runner.run(step.command);
            const undo = step.undo;
            if (undo) undos.push({ title: runner.describe(undo), undo: async () => void (await runner.run(undo)) });
          } else {
            undos.push({ title: `restore ${step.path}`, undo: writeFile(step.path, step.content) });
          }
        },
        { index: at + 1, total },
      );
    } catch (error) {
      const undone: string[] = [];
      const undoErrors: string[] = [];
      for (const { title, undo } of undos.reverse()) {
        try {
          await undo();
          undone.push(title);
        } catch (undoError) {
          undoErrors.push(`${title}: ${(undoError as Error).message}`);
        }
      }
      throw new PlanFailedError(error as Error, step, undone, undoErrors);
    }
  }
}

/**
 * Writes a file whole (temporary file, then rename; a link there is refused, never written
 * through); returns how to put back what was there before (or remove it).
 */
function writeFile(file: string, content: string): () => Promise<void> {
  const before = regularFileExists(file) ? readRegularFile(file) : undefined;
  writeFileAtomic(file, content);
  return async () => {
    if (before === undefined) removeFile(file);
    else writeFileAtomic(file, before);
  };
}

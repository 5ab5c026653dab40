// ivm apply: does what `ivm plan` (fleet-plan.ts) printed. First each distinct base is installed
// once (machines whose builds give the same store path share it), then each machine's actions run
// through the verbs that own them (createVm, upgradeVm, defineVm, growVm, startVm), each with its
// own checks, plan and rollback, all under the machine's lock taken once for the whole of it. A
// machine that fails is reported and the others go on; the summary names each failure.
import { IvmError, fileSystemError } from '../../errors.ts';
import { virshCommand } from '../../host/virsh.ts';
import { readlink } from '../../host/files.ts';
import { findImage, installPlan, writeBuildRecord } from '../base/base-image.ts';
import type { Context } from '../context.ts';
import { growVm } from '../disks/grow.ts';
import { hostFileExists } from '../disks/vm-files.ts';
import { withBaseLock, withVmLock } from '../lock.ts';
import { executePlan } from '../plan.ts';
import { createVm } from '../vm/create.ts';
import { defineVm, startVm } from '../vm/lifecycle.ts';
import { isRunning, ownDefinedVm, stopForChange } from '../vm/running.ts';
import { upgradeVm } from '../vm/upgrade.ts';
import { recordSyncedIdentity } from './fleet-identity.ts';
import { orphanBlocked, orphanHasParts, removeOrphan } from './fleet-orphans.ts';
import { diskStamp, type ActionKind, type BuildPlan, type FleetPlan, type MachinePlan } from './fleet-plan.ts';
import type { IdentitySource } from '../identity/identity.ts';
import { vmPaths } from '../disks/vm-paths.ts';

export interface ApplyOptions {
  /** How long a shutdown (--restart) may take. */
  timeoutSeconds: number;
}

export interface Failure {
  message: string;
  hint: string | undefined;
  exitCode: number;
}

export interface Outcome {
  name: string;
  /** "orphan": an orphan named by --remove-orphan. */
  kind: 'machine' | 'orphan';
  result: 'changed' | 'up to date' | 'needs restart' | 'failed';
  /** The actions done (for an orphan: "remove"). */
  done: (ActionKind | 'remove')[];
  /** Left for a restart (the VM runs and --restart was not given). */
  waiting: ActionKind[];
  error: Failure | undefined;
}

function failure(error: unknown): Failure {
  const known = error instanceof IvmError ? error : fileSystemError(error);
  if (!known) throw error; // a bug: reported as one, not as a machine's failure
  return { message: known.message, hint: known.hint, exitCode: known.exitCode };
}

export async function applyFleet(ctx: Context, plan: FleetPlan, options: ApplyOptions): Promise<Outcome[]> {
  const outcomes: Outcome[] = [];
  const planned = new Map(plan.machines.map((entry) => [entry.name, entry]));
  // 1. Each distinct base once; a failed install fails the machines that build to it.
  const buildFailures = new Map<string, Failure>();
  if (plan.options.build) {
    for (const build of plan.builds) {
      const users = build.machines.filter((name) => !planned.get(name)?.error);
      if (users.length === 0) continue;
      try {
        await installBuild(ctx, build, users);
      } catch (error) {
        buildFailures.set(build.base, failure(error));
      }
    }
  }
  // 2. Each machine, in the plan's order.
  for (const entry of plan.machines) {
    const outcome: Outcome = { name: entry.name, kind: 'machine', result: 'up to date', done: [], waiting: entry.waiting.map((a) => a.action), error: undefined };
    outcomes.push(outcome);
    const internal = plan.internal.get(entry.name);
    const buildFailure = internal ? buildFailures.get(internal.base) : undefined;
    if (entry.error) {
      outcome.result = 'failed';
      outcome.error = { ...entry.error, message: `not planned: ${entry.error.message}` };
      continue;
    }
    if (buildFailure && entry.actions.some((action) => action.action === 'build' || action.action === 'create' || action.action === 'upgrade')) {
      outcome.result = 'failed';
      outcome.error = { ...buildFailure, message: `its base was not installed: ${buildFailure.message}` };
      continue;
    }
    // The build was installed above: what is left is the machine's own.
    const own = entry.actions.filter((action) => action.action !== 'build');
    if (entry.actions.length > own.length) outcome.done.push('build');
    const record = internal?.deepInSync && internal.sources && internal.deepStamp !== undefined && !ctx.runner.dryRun;
    if (own.length === 0 && record) {
      // Nothing else to do: the record only spares the next plan a disk read, so a lock held by
      // another run leaves it unwritten rather than failing the machine.
      await withVmLock(ctx, entry.name, 'apply', () => recordDeepSync(ctx, entry.name, internal!)).catch(() => undefined);
    } else if (own.length > 0) {
      ctx.say(`# ${entry.name}: ${own.map((action) => action.action).join(', ')}`);
      try {
        await withVmLock(ctx, entry.name, 'apply', async () => {
          // --deep found the disk in sync where the record did not say so: the record says so now,
          // under the lock and only if the disk is as plan read it (a restore since would have
          // brought back another identity). Before the actions, none of which touches /identity.
          if (record) await recordDeepSync(ctx, entry.name, internal!);
          await applyMachine(ctx, plan, entry, options);
        });
        outcome.done.push(...own.map((action) => action.action));
      } catch (error) {
        outcome.result = 'failed';
        outcome.error = failure(error);
        continue;
      }
    }
    outcome.result = entry.waiting.length > 0 ? 'needs restart' : outcome.done.length > 0 ? 'changed' : 'up to date';
  }
  // 3. The orphans named for removal (never their /var disk).
  for (const orphan of plan.orphans.filter((candidate) => candidate.remove)) {
    const outcome: Outcome = { name: orphan.name, kind: 'orphan', result: 'up to date', done: [], waiting: [], error: undefined };
    outcomes.push(outcome);
    if (!orphanHasParts(orphan)) continue;
    const blocked = orphanBlocked(orphan, ctx.settings.libvirtUri);
    if (blocked) {
      outcome.result = 'failed';
      outcome.error = { message: blocked.message, hint: blocked.hint, exitCode: 3 };
      continue;
    }
    ctx.say(`# orphan ${orphan.name}: remove (undefine, boot overlays; its /var disk is kept)`);
    try {
      await removeOrphan(ctx, orphan);
      outcome.result = 'changed';
      outcome.done = ['remove'];
    } catch (error) {
      outcome.result = 'failed';
      outcome.error = failure(error);
    }
  }
  return outcomes;
}

/** Records what --deep read (`internal.sources` in sync) if the /var disk was not written since it was read. */
async function recordDeepSync(ctx: Context, name: string, internal: { sources: IdentitySource[] | undefined; deepStamp?: string }): Promise<void> {
  const file = vmPaths(ctx.settings, ctx.project, name).var;
  try {
    if (!internal.sources || !(await hostFileExists(ctx.runner, file))) return;
    if ((await diskStamp(ctx.runner, file)) !== internal.deepStamp) return;
  } catch {
    return; // not known to be unchanged: no record, and the next plan says the identity is unknown
  }
  recordSyncedIdentity(ctx.project, name, internal.sources);
}

/** Installs one build (as `ivm build` does: copy, 0444, rename, under the base folder's lock) and records it for its machines. */
async function installBuild(ctx: Context, build: BuildPlan, names: string[]): Promise<void> {
  await withBaseLock(ctx, 'apply', async () => {
    if (!(await hostFileExists(ctx.runner, build.base))) {
      // Installed when plan looked (so it did not read the image), gone now (an ivm gc between the
      // two): installed again from the build's output, as plan would have.
      const image = build.image ?? (await readlink(ctx.runner, findImage(build.storePath)));
      await executePlan(ctx.runner, installPlan(ctx.settings, image, build.base), ctx.say);
      if (!ctx.runner.dryRun) ctx.say(`installed ${build.base}: the latest build of ${names.join(', ')}`);
    }
    // As `ivm build` records it: `create --no-build`, `upgrade --no-build` and `list` see the same build.
    if (!ctx.runner.dryRun) for (const name of names) writeBuildRecord(ctx.project, name, { storePath: build.storePath, base: build.base });
  });
}

/**
 * One machine's actions, each through its verb (which checks again what it needs, takes its plan
 * and rolls it back on failure). upgrade also redefines the domain, grows /var and sets autostart;
 * upgrade and grow with --restart shut a running VM down and start it again themselves.
 */
async function applyMachine(ctx: Context, plan: FleetPlan, entry: MachinePlan, options: ApplyOptions): Promise<void> {
  const { name } = entry;
  const has = (kind: ActionKind) => entry.actions.some((action) => action.action === kind);
  const base = plan.internal.get(name)?.base;
  const { restart } = plan.options;
  if (has('create')) {
    await createVm(ctx, name, { build: false, start: has('start'), ...(base ? { base } : {}) });
    return;
  }
  if (has('upgrade')) {
    await upgradeVm(ctx, name, { build: false, restart, timeoutSeconds: options.timeoutSeconds, ...(base ? { base } : {}) });
  } else {
    if (has('redefine')) await defineVm(ctx, name);
    if (has('grow')) await growVm(ctx, name, { restart, timeoutSeconds: options.timeoutSeconds });
    else if (has('restart')) await restartVm(ctx, name, options.timeoutSeconds);
  }
  if (has('start')) await startVm(ctx, name);
}

/** A running VM defined anew: shut down gracefully and started again, so that it runs what is defined. */
async function restartVm(ctx: Context, name: string, timeoutSeconds: number): Promise<void> {
  const { state } = await ownDefinedVm(ctx, name);
  if (!isRunning(state)) {
    ctx.say(`${name} is ${state} now: it runs its new definition when it starts`);
    return;
  }
  await stopForChange(ctx, name, timeoutSeconds);
  await ctx.runner.progress.step(`start ${name} again`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
  if (!ctx.runner.dryRun) ctx.say(`restarted ${name}: it runs with its new definition`);
}

/** Exit code of `ivm apply`: 1 when any machine (or named orphan) failed, else 0. */
export function applyExitCode(outcomes: Outcome[]): number {
  return outcomes.some((outcome) => outcome.result === 'failed') ? 1 : 0;
}

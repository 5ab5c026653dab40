// ivm snapshot restore: put a VM's /var disk back to one of its snapshots. The current state is
// kept first as an automatic snapshot (before-restore-<UTC time>), so a restore is undone by
// restoring that one; then `qemu-img snapshot -a`; then the identity on the disk is made the
// machine's current one exactly as upgrade does (resyncVarDisk: /identity resynced with
// machines/NAME, the domain redefined, the boot overlay on its base), since a snapshot holds the
// identity files of its own time (an older authorized key, a removed secret).
//
// Cut short anywhere, the disk holds the state before (with or without the automatic snapshot) or
// the restored one (its identity perhaps not yet resynced): never a mix. Running it again finishes it.
import { IvmError, fileSystemError } from '../../errors.ts';
import { requireBaseInBaseDir } from '../base/base-dir.ts';
import { lastBuiltBase } from '../base/build.ts';
import type { Context } from '../context.ts';
import { requireIdentity } from '../identity/identity.ts';
import { withVmLock } from '../lock.ts';
import { loadMachine } from '../machine/machine.ts';
import { validateMachineName } from '../machine/names.ts';
import { executePlan, type Plan } from '../plan.ts';
import { isRunning } from '../vm/running.ts';
import { resyncVarDisk } from '../vm/upgrade.ts';
import { backingOf } from './boot-overlay.ts';
import { diskSnapshots, findSnapshot, freeName, qemuImg, refuseRunning, snapshotVm, utcStamp, validateSnapshotName, whileStopped, withHint, type DiskSnapshot } from './snapshot.ts';
import { updateNotes } from './snapshot-notes.ts';
import { forgetSyncedIdentity } from '../fleet/fleet-identity.ts';

export interface SnapshotRestoreOptions {
  stop: boolean;
  timeoutSeconds: number;
}

export function snapshotRestorePlan(name: string, disk: string, snapshot: string, keep: string): Plan {
  return {
    title: `restore ${name} to snapshot ${snapshot}`,
    steps: [
      // No undo: if a later step fails, the state before stays kept; the message says how to go back to it.
      { kind: 'run', title: `keep the current state as snapshot ${keep}`, command: qemuImg(['snapshot', '-c', keep, disk], true) },
      { kind: 'run', title: `put the /var disk back to snapshot ${snapshot}`, command: qemuImg(['snapshot', '-a', snapshot, disk], true) },
    ],
  };
}

export async function snapshotRestore(ctx: Context, name: string, snapshot: string, options: SnapshotRestoreOptions): Promise<void> {
  validateMachineName(name);
  validateSnapshotName(snapshot);
  await withVmLock(ctx, name, 'snapshot restore', async () => {
    // Everything resyncVarDisk needs is checked before the disk changes: meta.nix, the identity
    // files (none is generated here: the VM's own are on its disk), the base.
    const machine = await loadMachine(ctx.runner, ctx.project, name);
    requireIdentity(machine.dir, name);
    const { paths, state } = await snapshotVm(ctx, name);
    const snapshots = await diskSnapshots(ctx.runner, paths.var);
    const target = findSnapshot(snapshots, snapshot, name);
    if (!options.stop) refuseRunning(name, state, 'a restore', true);
    // The base stays the one the VM boots now; a VM without a boot overlay (destroyed, its /var
    // kept) gets one on the machine's last build, as upgrade --no-build would.
    const base = (await backingOf(ctx.runner, paths.boot)) ?? (await lastBuiltBase(ctx, name));
    requireBaseInBaseDir(ctx.settings, base);
    const keep = freeName(`before-restore-${utcStamp(new Date())}`, snapshots);
    const running = isRunning(state);
    await whileStopped(ctx, name, running, options.timeoutSeconds, async () => {
      // Set once the disk holds the snapshot: a later failure must not read "nothing was changed".
      let applied = false;
      try {
        // Until the resync is done, plan cannot say the identity is in sync (the snapshot's is older).
        if (!ctx.runner.dryRun) forgetSyncedIdentity(ctx.project, name);
        await executePlan(ctx.runner, snapshotRestorePlan(name, paths.var, snapshot, keep), ctx.say);
        applied = true;
        if (ctx.runner.dryRun) {
          ctx.say(`# then resync /identity with machines/${name}, redefine the domain and keep the boot overlay on ${base}, as upgrade does`);
          ctx.say('# (one guestfish session; not opened under --dry-run, since the identity it compares is the snapshot\'s)');
          return;
        }
        await noteKept(ctx, name, paths.var, snapshots, keep, snapshot);
        await resyncVarDisk(ctx, name, { base, verb: 'restore' });
      } catch (error) {
        if (ctx.runner.dryRun) throw error;
        throw await keptHint(ctx, name, paths.var, keep, applied ? snapshot : undefined, error);
      }
    });
    if (ctx.runner.dryRun) return;
    ctx.say(`restored ${name}'s /var disk to snapshot ${target.name} (made ${new Date(target.dateSec * 1000).toISOString().replace('.000Z', 'Z')})${running ? `; ${name} was shut down for it and started again` : ''}`);
    ctx.say(`the state before is kept as snapshot ${keep}; to undo: ivm snapshot restore ${name} ${keep}`);
  });
}

/** The automatic snapshot's note, saying what it is. */
async function noteKept(ctx: Context, name: string, disk: string, before: DiskSnapshot[], keep: string, snapshot: string): Promise<void> {
  const after = await diskSnapshots(ctx.runner, disk);
  const made = after.find((s) => s.name === keep && !before.some((b) => b.id === s.id));
  if (made) updateNotes(ctx.project, name, after, { add: { name: keep, dateSec: made.dateSec, dateNsec: made.dateNsec, note: `automatic: the state before restoring ${snapshot}` } });
}

/**
 * A failed restore says where the state before it is, once it was kept; and, once the disk holds
 * the snapshot (`applied`), that it did change: the resync's own "nothing was changed" (a refused
 * machine-id, a base that is gone) speaks only of the resync.
 */
async function keptHint(ctx: Context, name: string, disk: string, keep: string, applied: string | undefined, error: unknown): Promise<unknown> {
  const failure = applied === undefined ? error : appliedError(error, name, applied);
  let kept = false;
  try {
    kept = (await diskSnapshots(ctx.runner, disk)).some((s) => s.name === keep);
  } catch {
    return failure;
  }
  return kept ? withHint(failure, `the state before the restore is kept as snapshot ${keep}: ivm snapshot restore ${name} ${keep} goes back to it`) : failure;
}

/** The error of a restore that failed after the disk was put back to `snapshot`: it says so first. */
export function appliedError(failure: unknown, name: string, snapshot: string): unknown {
  const error = failure instanceof IvmError ? failure : fileSystemError(failure);
  if (!error) return failure;
  const cause = error.message.replace(/[;,:] nothing (was|is) changed$/, '');
  return new IvmError(
    `${name}'s /var disk was put back to snapshot ${snapshot}, but the rest of the restore (the identity resync, the domain, the boot overlay) failed: ${cause}`,
    { exitCode: error.exitCode, hint: [error.hint, `once this is fixed, run the restore again: ivm snapshot restore ${name} ${snapshot}`].filter(Boolean).join('\n') },
  );
}

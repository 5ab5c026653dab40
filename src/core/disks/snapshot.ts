// ivm snapshot: internal qcow2 snapshots of a VM's /var disk (`qemu-img snapshot`), made, restored
// and deleted only while the VM is shut off (or, with --stop, after a graceful shutdown).
//
// Why internal snapshots: they live inside the /var disk file itself, so they follow it wherever the
// disk goes and nothing else has to know about them: upgrade and rollback never touch /var, destroy
// keeps it (unless --delete-var), gc touches only base images. libvirt refuses internal domain
// snapshots of UEFI VMs (pflash NVRAM), and external disk-only snapshots would put a new file on top
// of the /var disk, changing the chain that the domain XML and ivm's own paths name.
//
// qemu-img's snapshot table (`qemu-img info --output=json`) is the truth of which snapshots exist;
// the notes live in .ivm/snapshots/NAME.json (snapshot-notes.ts). qemu-img itself allows two
// snapshots of one name and reads an all-digit name as a snapshot ID first, so ivm refuses a name
// that is taken, and names that are digits only.
import { BadInputError, IvmError, RefusedError, fileSystemError } from '../../errors.ts';
import { parseImageJson } from '../../host/qemu-img.ts';
import type { Command, Runner } from '../../host/runner.ts';
import { virshCommand } from '../../host/virsh.ts';
import type { Context } from '../context.ts';
import { withVmLock } from '../lock.ts';
import { validateMachineName } from '../machine/names.ts';
import { executePlan, type Plan } from '../plan.ts';
import { isRunning, ownVm, savedError, stopForChange } from '../vm/running.ts';
import { leftStopped } from '../vm/upgrade.ts';
import { noteOf, readNotes, updateNotes, validateNote, type SnapshotKey } from './snapshot-notes.ts';
import { hostFileExists } from './vm-files.ts';
import { vmPaths, type VmPaths } from './vm-paths.ts';

/** A snapshot name: it goes to qemu-img as one argument, and into a table and a shell line. */
export const SNAPSHOT_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export function validateSnapshotName(name: string): string {
  if (!SNAPSHOT_NAME.test(name) || /^[0-9]+$/.test(name)) {
    throw new BadInputError(
      `invalid snapshot name ${JSON.stringify(name)}`,
      'a snapshot name is 1 to 64 letters, digits, dots, dashes or underscores, a letter or digit first, and not digits only (qemu-img reads a number as a snapshot ID)',
    );
  }
  return name;
}

/**
 * A name or ID from a disk's snapshot table, as shown on a terminal: qemu-img keeps any bytes there
 * (a snapshot made by hand, a disk from elsewhere), so one holding a control character (C0, DEL or
 * C1: an escape sequence would act on the terminal) is shown quoted, each of them escaped.
 */
export function shownText(text: string): string {
  // eslint-disable-next-line no-control-regex
  if (!/[\u0000-\u001f\u007f-\u009f]/.test(text)) return text;
  // JSON.stringify escapes C0 only: DEL and C1 are escaped here too.
  return JSON.stringify(text).replace(/[\u007f-\u009f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** YYYYMMDD-HHMMSS in UTC: the time part of the default names. */
export function utcStamp(date: Date): string {
  return date.toISOString().replace(/\.\d+Z$/, '').replace(/-|:/g, '').replace('T', '-');
}

/** `base`, or base-2, base-3, ... when it is taken (two automatic names within one second). */
export function freeName(base: string, taken: DiskSnapshot[]): string {
  const names = new Set(taken.map((s) => s.name));
  if (!names.has(base)) return base;
  for (let n = 2; ; n++) if (!names.has(`${base}-${n}`)) return `${base}-${n}`;
}

/** One internal snapshot, as qemu-img lists it. */
export interface DiskSnapshot extends SnapshotKey {
  /** qemu-img's ID (a number, as a string). */
  id: string;
}

export function qemuImg(args: string[], mutates: boolean): Command {
  return { tool: 'qemu-img', args, mutates };
}

/** The internal snapshots of a qcow2 disk, oldest first. Read-only (-U: also while a VM has the disk open; see README). */
export async function diskSnapshots(runner: Runner, disk: string): Promise<DiskSnapshot[]> {
  return (await diskInfo(runner, disk)).snapshots;
}

async function diskInfo(runner: Runner, disk: string): Promise<{ snapshots: DiskSnapshot[]; allocatedBytes: number | undefined }> {
  // -f qcow2: never a guess at the format (a /var disk is qcow2; anything else is an error here).
  const command = qemuImg(['info', '--output=json', '-U', '-f', 'qcow2', disk], false);
  const result = await runner.run(command);
  const info = parseImageJson(result.stdout, { what: 'qemu-img info', file: disk, chain: false, commandLine: runner.describe(command) });
  return { snapshots: parseSnapshots((info as { snapshots?: unknown }).snapshots, disk), allocatedBytes: info['actual-size'] };
}

/** qemu-img's "snapshots" list (absent when there are none); anything else is an error naming the disk. */
export function parseSnapshots(value: unknown, disk: string): DiskSnapshot[] {
  if (value === undefined) return [];
  const bad = () => new IvmError(`qemu-img info printed a snapshot list that ivm cannot read for ${disk}: ${JSON.stringify(value).slice(0, 200)}`);
  if (!Array.isArray(value)) throw bad();
  return value.map((entry: unknown) => {
    const e = entry as { id?: unknown; name?: unknown; 'date-sec'?: unknown; 'date-nsec'?: unknown } | null;
    if (typeof e !== 'object' || e === null || typeof e.id !== 'string' || typeof e.name !== 'string' || !Number.isInteger(e['date-sec'])) throw bad();
    return { id: e.id, name: e.name, dateSec: e['date-sec'] as number, dateNsec: Number.isInteger(e['date-nsec']) ? (e['date-nsec'] as number) : 0 };
  });
}

/**
 * The bytes of data a snapshot's view of the disk holds: `qemu-img measure` of it, i.e. what a
 * standalone qcow2 copy of that snapshot would take. Not what deleting it frees: a snapshot shares
 * every cluster that did not change with the live disk and the other snapshots.
 */
async function snapshotDataBytes(runner: Runner, disk: string, id: string): Promise<number | undefined> {
  // qemu-img numbers its snapshots; any other ID (a disk from elsewhere) would be parsed as more
  // options of `-l snapshot.id=...` (a comma starts one): not measured.
  if (!/^[0-9]+$/.test(id)) return undefined;
  const result = await runner.run(qemuImg(['measure', '--output=json', '-U', '-f', 'qcow2', '-O', 'qcow2', '-l', `snapshot.id=${id}`, disk], false), { allowFailure: true });
  if (result.exitCode !== 0) return undefined;
  try {
    const required = (JSON.parse(result.stdout) as { required?: unknown }).required;
    return typeof required === 'number' ? required : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The one snapshot of that name; an unknown name is bad input, a name qemu-img holds twice is
 * refused, and so is a name that is another snapshot's ID (qemu-img -a and -d look a word up as an
 * ID first; qemu-img numbers them, but a disk made elsewhere may hold any ID).
 */
export function findSnapshot(snapshots: DiskSnapshot[], name: string, vm: string): DiskSnapshot {
  const found = snapshots.filter((s) => s.name === name);
  if (found.length === 0) {
    throw new BadInputError(
      `${vm}'s /var disk has no snapshot ${JSON.stringify(name)}; nothing was changed`,
      snapshots.length > 0 ? `its snapshots: ${snapshots.map((s) => shownText(s.name)).join(', ')} (ivm snapshot list ${vm})` : `it has no snapshots; make one: ivm snapshot create ${vm}`,
    );
  }
  if (found.length > 1) {
    throw new RefusedError(
      `${vm}'s /var disk holds ${found.length} snapshots named ${name} (IDs ${found.map((s) => shownText(s.id)).join(', ')}; made by other means than ivm): qemu-img would pick the first; nothing was changed`,
      'rename none of them by hand; use qemu-img snapshot with the ID, or delete the extra ones (qemu-img snapshot -d ID)',
    );
  }
  const byId = snapshots.find((s) => s.id === name && s !== found[0]);
  if (byId) {
    throw new RefusedError(
      `${vm}'s /var disk holds a snapshot whose ID is ${name} (named ${shownText(byId.name)}; made by other means than ivm): qemu-img would take that one for ${name}; nothing was changed`,
      'use qemu-img snapshot by hand, or delete one of them (qemu-img snapshot -d ID)',
    );
  }
  return found[0]!;
}

interface SnapshotVm {
  paths: VmPaths;
  /** libvirt's state, or "undefined" (destroyed, /var kept). */
  state: string;
}

/**
 * A machine of this project whose /var disk is there: machines/NAME with its machine-id, a domain
 * of that name (if any) that is this machine's, no saved memory image (resuming it would meet a
 * changed disk). Everything is checked before anything changes.
 */
export async function snapshotVm(ctx: Context, name: string): Promise<SnapshotVm> {
  const info = await ownVm(ctx, name);
  if (info?.managedSave) throw savedError(name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  if (!(await hostFileExists(ctx.runner, paths.var))) {
    throw new RefusedError(`${name} has no /var disk (${paths.var}), so it has no snapshots`, `create the VM: ivm create ${name}`);
  }
  return { paths, state: info?.state ?? 'undefined' };
}

export function refuseRunning(name: string, state: string, verb: string, canStop: boolean): void {
  if (!isRunning(state)) return;
  throw new RefusedError(
    `${name} is ${state}: its /var disk is in use, and ${verb} of a disk in use would not be consistent; nothing was changed`,
    canStop ? `stop it first (ivm stop ${name}), or add --stop: ivm shuts it down gracefully, does it, and starts it again` : `stop it first: ivm stop ${name}`,
  );
}

/**
 * --stop: a graceful shutdown first (up to the timeout; if it does not come, nothing else is done),
 * then `work`, then the VM is started again. A failure leaves it shut off and says so.
 */
export async function whileStopped(ctx: Context, name: string, running: boolean, timeoutSeconds: number, work: () => Promise<void>): Promise<void> {
  if (running) await stopForChange(ctx, name, timeoutSeconds);
  try {
    await work();
  } catch (error) {
    throw running ? leftStopped(error, name) : error;
  }
  if (running) await startAgain(ctx, name);
}

/**
 * Starts a VM that --stop or --restart shut down, once its change is made: a failure to start says
 * that the change itself was made (it is not rolled back), not only that virsh failed.
 */
export async function startAgain(ctx: Context, name: string): Promise<void> {
  try {
    await ctx.runner.progress.step(`start ${name} again`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
  } catch (failure) {
    const error = failure instanceof IvmError ? failure : fileSystemError(failure);
    if (!error) throw failure;
    throw new IvmError(`the change to ${name} was made, but starting it again failed: ${error.message}`, {
      exitCode: error.exitCode,
      hint: [error.hint, `${name} is shut off; start it once this is fixed: ivm start ${name}`].filter(Boolean).join('\n'),
    });
  }
}

export interface SnapshotCreateOptions {
  /** Default: snap-YYYYMMDD-HHMMSS (UTC). */
  snapshot?: string;
  note?: string;
  stop: boolean;
  timeoutSeconds: number;
}

export function snapshotCreatePlan(name: string, disk: string, snapshot: string): Plan {
  return { title: `snapshot ${name}`, steps: [{ kind: 'run', title: `snapshot ${snapshot} of the /var disk`, command: qemuImg(['snapshot', '-c', snapshot, disk], true) }] };
}

export async function snapshotCreate(ctx: Context, name: string, options: SnapshotCreateOptions): Promise<void> {
  validateMachineName(name);
  if (options.snapshot !== undefined) validateSnapshotName(options.snapshot);
  if (options.note !== undefined) validateNote(options.note);
  await withVmLock(ctx, name, 'snapshot create', async () => {
    const { paths, state } = await snapshotVm(ctx, name);
    const before = await diskSnapshots(ctx.runner, paths.var);
    const snapshot = options.snapshot ?? freeName(`snap-${utcStamp(new Date())}`, before);
    if (before.some((s) => s.name === snapshot)) {
      throw new RefusedError(`${name}'s /var disk already has a snapshot ${snapshot}; nothing was changed`, `pick another name, or delete that one first: ivm snapshot delete ${name} ${snapshot}`);
    }
    // A name that is another snapshot's ID could never be restored or deleted by name (findSnapshot).
    if (before.some((s) => s.id === snapshot)) {
      throw new RefusedError(`${name}'s /var disk holds a snapshot whose ID is ${snapshot}: qemu-img would take that one for the name; nothing was changed`, 'pick another name');
    }
    if (!options.stop) refuseRunning(name, state, 'a snapshot', true);
    const running = isRunning(state);
    await whileStopped(ctx, name, running, options.timeoutSeconds, async () => {
      await executePlan(ctx.runner, snapshotCreatePlan(name, paths.var, snapshot), ctx.say);
      if (ctx.runner.dryRun) {
        if (options.note !== undefined) ctx.say(`# and its note in ${ctx.project.stateDir}/snapshots/${name}.json`);
        return;
      }
      if (options.note !== undefined) recordNote(ctx, name, await diskSnapshots(ctx.runner, paths.var), before, snapshot, options.note);
    });
    if (!ctx.runner.dryRun) ctx.say(`made snapshot ${snapshot} of ${name}'s /var disk${running ? ` (${name} was shut down for it and started again)` : ''}; to go back to it: ivm snapshot restore ${name} ${snapshot}`);
  });
}

/** Records the note of the snapshot just made (the one of that name that was not there before). */
function recordNote(ctx: Context, name: string, after: DiskSnapshot[], before: DiskSnapshot[], snapshot: string, note: string): void {
  const made = after.find((s) => s.name === snapshot && !before.some((b) => b.id === s.id));
  if (!made) throw new IvmError(`the snapshot ${snapshot} of ${name} was made, but qemu-img does not list it: its note was not recorded`);
  updateNotes(ctx.project, name, after, { add: { name: made.name, dateSec: made.dateSec, dateNsec: made.dateNsec, note } });
}

export interface SnapshotListEntry {
  name: string;
  id: string;
  /** When qemu-img made it (ISO 8601, UTC). */
  created: string;
  /** What a standalone copy of its view of the disk would take (qemu-img measure); null if unknown. */
  dataBytes: number | null;
  note: string | null;
}

export interface SnapshotList {
  machine: string;
  disk: string;
  state: string;
  /** The /var disk file's allocated bytes on the host: the live state and every snapshot together. */
  diskAllocatedBytes: number | null;
  snapshots: SnapshotListEntry[];
}

/** Read-only: no lock, nothing written. A running VM's disk is read with qemu-img -U (metadata only). */
export async function snapshotList(ctx: Context, name: string): Promise<SnapshotList> {
  const { paths, state } = await snapshotVm(ctx, name);
  const info = await diskInfo(ctx.runner, paths.var);
  const notes = readNotes(ctx.project, name);
  const snapshots: SnapshotListEntry[] = [];
  for (const s of info.snapshots) {
    snapshots.push({
      name: s.name,
      id: s.id,
      created: new Date(s.dateSec * 1000).toISOString().replace('.000Z', 'Z'),
      dataBytes: (await snapshotDataBytes(ctx.runner, paths.var, s.id)) ?? null,
      note: noteOf(notes, s) ?? null,
    });
  }
  return { machine: name, disk: paths.var, state, diskAllocatedBytes: info.allocatedBytes ?? null, snapshots };
}

export async function snapshotDelete(ctx: Context, name: string, snapshot: string): Promise<void> {
  validateMachineName(name);
  validateSnapshotName(snapshot);
  await withVmLock(ctx, name, 'snapshot delete', async () => {
    const { paths, state } = await snapshotVm(ctx, name);
    const snapshots = await diskSnapshots(ctx.runner, paths.var);
    const target = findSnapshot(snapshots, snapshot, name);
    refuseRunning(name, state, 'deleting a snapshot', false);
    await executePlan(
      ctx.runner,
      { title: `delete snapshot ${snapshot} of ${name}`, steps: [{ kind: 'run', title: `delete snapshot ${snapshot}`, command: qemuImg(['snapshot', '-d', snapshot, paths.var], true) }] },
      ctx.say,
    );
    if (ctx.runner.dryRun) return;
    updateNotes(ctx.project, name, await diskSnapshots(ctx.runner, paths.var), { remove: target });
    ctx.say(`deleted snapshot ${snapshot} of ${name}'s /var disk`);
  });
}

/** An error with one more line of hint (the same message and exit code). */
export function withHint(failure: unknown, line: string): unknown {
  const error = failure instanceof IvmError ? failure : fileSystemError(failure);
  if (!error) return failure;
  return new IvmError(error.message, { exitCode: error.exitCode, hint: [error.hint, line].filter(Boolean).join('\n') });
}



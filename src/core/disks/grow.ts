// Growing a VM's /var disk to meta.nix's varSize. The host part is one `qemu-img resize` of the
// stopped VM's qcow2 (its virtual size; nothing of the data moves); the guest grows its ext4 to the
// disk at its next boot, online (NixOS: autoResize, systemd-growfs@var.service; see
// modules/filesystem.nix). Never shrinks: ext4 cannot be shrunk while mounted, and a disk cut
// shorter than its filesystem loses whatever lies beyond the cut.
//
// `ivm grow` is the verb; `ivm upgrade` (and so resyncVarDisk) takes the same step when varSize grew.
// The pieces are plain functions for planners: varDiskSize (what the disk is), compareVarSize and
// growNeeded (what meta.nix wants of it), growSteps and growPlan (what to run).
import { IvmError, RefusedError } from '../../errors.ts';
import { imageInfo } from '../../host/qemu-img.ts';
import type { Command } from '../../host/runner.ts';
import type { Context } from '../context.ts';
import { withVmLock } from '../lock.ts';
import { loadMachine, sizeInBytes, type Machine } from '../machine/machine.ts';
import { executePlan, type Plan, type Step } from '../plan.ts';
import { isRunning, ownVm, savedError, stopForChange } from '../vm/running.ts';
import { leftStopped } from '../vm/upgrade.ts';
import { startAgain } from './snapshot.ts';
import { hostFileExists } from './vm-files.ts';
import { vmPaths, type VmPaths } from './vm-paths.ts';

/**
 * The virtual size in bytes of the VM's /var disk (`qemu-img info -U`: it reads the image's header
 * only, so it may run while the VM does); undefined when there is no /var disk. Read-only: it runs
 * under --dry-run too.
 */
export async function varDiskSize(ctx: Context, paths: VmPaths): Promise<number | undefined> {
  if (!(await hostFileExists(ctx.runner, paths.var))) return undefined;
  const size = (await imageInfo(ctx.runner, paths.var))['virtual-size'];
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size <= 0) {
    throw new IvmError(`qemu-img info gave no virtual size for ${paths.var}: ${JSON.stringify(size)}`, { hint: 'QEMU_IMG, when set, must be the whole qemu-img command' });
  }
  return size;
}

/** meta.nix's varSize in bytes, as qemu-img makes it: rounded up to whole 512-byte sectors. */
export function wantedVarBytes(machine: Machine): number {
  return Math.ceil(sizeInBytes(machine.meta.varSize) / 512) * 512;
}

/** What meta.nix's varSize asks of the /var disk. */
export interface VarSizeChange {
  kind: 'grow' | 'shrink' | 'equal';
  /** The disk's virtual size now. */
  diskBytes: number;
  /** varSize, in bytes (wantedVarBytes). */
  wantedBytes: number;
}

export function compareVarSize(machine: Machine, diskBytes: number): VarSizeChange {
  const wantedBytes = wantedVarBytes(machine);
  const kind = wantedBytes > diskBytes ? 'grow' : wantedBytes < diskBytes ? 'shrink' : 'equal';
  return { kind, diskBytes, wantedBytes };
}

/** True when meta.nix's varSize is larger than the /var disk (of `diskBytes`, from varDiskSize). */
export function growNeeded(machine: Machine, diskBytes: number): boolean {
  return compareVarSize(machine, diskBytes).kind === 'grow';
}

/** Bytes as qemu-img and meta.nix write sizes: "256M", "20G", or plain bytes when no unit divides them. */
export function formatSize(bytes: number): string {
  for (const [unit, power] of [['T', 4], ['G', 3], ['M', 2], ['K', 1]] as const) {
    const factor = 1024 ** power;
    if (bytes >= factor && bytes % factor === 0) return `${bytes / factor}${unit}`;
  }
  return String(bytes);
}

/** `qemu-img resize` to a larger virtual size (without --shrink, so qemu-img itself refuses to cut one). */
export function resizeCommand(file: string, bytes: number): Command {
  return { tool: 'qemu-img', args: ['resize', '-q', '-f', 'qcow2', file, formatSize(bytes)], mutates: true };
}

/**
 * The steps that grow the /var disk to varSize: none unless it grows. The disk must not be in use
 * (a stopped VM: the caller checks). No undo: a grown disk holds the same data, and its filesystem
 * grows only when the guest boots on it, so it is left grown when a later step fails.
 */
export function growSteps(paths: VmPaths, change: VarSizeChange): Step[] {
  if (change.kind !== 'grow') return [];
  return [
    {
      kind: 'run',
      title: `grow the /var disk ${formatSize(change.diskBytes)} -> ${formatSize(change.wantedBytes)} (its filesystem grows at the next boot)`,
      command: resizeCommand(paths.var, change.wantedBytes),
    },
  ];
}

export function growPlan(name: string, paths: VmPaths, change: VarSizeChange): Plan {
  return { title: `grow ${name}`, steps: growSteps(paths, change) };
}

/** For the summaries of grow and upgrade: what happens to the /var disk's size. */
export function describeVarSize(machine: Machine, change: VarSizeChange): string {
  const disk = formatSize(change.diskBytes);
  if (change.kind === 'grow') return `${disk} -> ${formatSize(change.wantedBytes)} (varSize ${machine.meta.varSize}; the guest grows its filesystem at its next boot)`;
  if (change.kind === 'shrink') return `${disk}, larger than varSize ${machine.meta.varSize}: left as it is (a /var disk is never shrunk; ivm grow ${machine.name} says why)`;
  return `unchanged (${disk})`;
}

/** A varSize smaller than the disk: refused (exit 3), saying why and what can be done instead. */
export function shrinkRefused(machine: Machine, change: VarSizeChange): RefusedError {
  const name = machine.name;
  return new RefusedError(
    `varSize ${machine.meta.varSize} in machines/${name}/meta.nix is smaller than the /var disk of ${name} (${formatSize(change.diskBytes)}): ` +
      'ivm never shrinks a /var disk. Its ext4 filesystem fills the whole disk and cannot be shrunk while mounted, and a disk cut shorter ' +
      'than its filesystem loses the data beyond the cut. Backing it up, recreating it smaller and restoring does not work either: the restore ' +
      'brings back the larger disk. Nothing was changed',
    `keep the disk as it is: set varSize = "${formatSize(change.diskBytes)}"; in machines/${name}/meta.nix. ` +
      `For a smaller /var: copy out the data you want to keep (ivm ssh ${name}, rsync), ivm recreate ${name} (a new, empty /var of varSize), and copy it back`,
  );
}

export interface GrowOptions {
  /** A running VM: shut it down gracefully, grow, start it again. */
  restart: boolean;
  timeoutSeconds: number;
}

/** ivm grow NAME: the /var disk to meta.nix's varSize, under the VM's lock. */
export async function growVm(ctx: Context, name: string, options: GrowOptions): Promise<void> {
  await withVmLock(ctx, name, 'grow', () => growLocked(ctx, name, options));
}

async function growLocked(ctx: Context, name: string, options: GrowOptions): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  // Only this machine's domain (its uuid); a VM with no domain (destroy kept its /var) may grow too.
  const info = await ownVm(ctx, name);
  const disk = await varDiskSize(ctx, paths);
  if (disk === undefined) throw new RefusedError(`${name} has no /var disk (${paths.var}): nothing to grow`, `create it: ivm create ${name}`);
  const change = compareVarSize(machine, disk);
  // Everything that refuses comes before any change, --restart's shutdown included.
  if (change.kind === 'shrink') throw shrinkRefused(machine, change);
  if (change.kind === 'equal') {
    ctx.say(`the /var disk of ${name} is already ${formatSize(disk)} (varSize ${machine.meta.varSize}): nothing to do`);
    return;
  }
  if (info?.managedSave) throw savedError(name);
  const state = info?.state ?? 'undefined';
  const running = isRunning(state);
  if (running && !options.restart) {
    throw new RefusedError(
      `${name} is ${state}: its /var disk is in use, and qemu-img never resizes a disk in use; nothing was changed`,
      `stop it first (ivm stop ${name}), or add --restart (shut it down gracefully, grow, start it again)`,
    );
  }
  ctx.say(`grow ${name}:\n  /var disk: ${describeVarSize(machine, change)}`);
  if (running) await stopForChange(ctx, name, options.timeoutSeconds);
  await executePlan(ctx.runner, growPlan(name, paths, change), ctx.say).catch((error: unknown) => {
    throw running ? leftStopped(error, name) : error;
  });
  if (running) await startAgain(ctx, name);
  if (!ctx.runner.dryRun) {
    ctx.say(
      `grew the /var disk of ${name} to ${formatSize(change.wantedBytes)}; ` +
        (running ? 'started it again: its filesystem grows as it boots' : 'its filesystem grows at its next boot'),
    );
  }
}

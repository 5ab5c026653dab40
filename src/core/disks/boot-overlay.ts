// The boot overlay and the previous one: which base each is backed by, and the swap that moves a VM
// to another base. The swap is made so that, wherever it is cut short, <name>-boot.qcow2 exists and
// is backed by either the old or the new base: the new overlay is made beside it and put in place
// by rename; the old one is kept (hard link) as <name>-boot-prev.qcow2, the rollback target.
import fs from 'node:fs';
import path from 'node:path';
import { removeCommand } from '../../host/files.ts';
import { createOverlayCommand, imageInfo } from '../../host/qemu-img.ts';
import type { Command, Runner } from '../../host/runner.ts';
import type { Step } from '../plan.ts';
import type { VmPaths } from './vm-paths.ts';
import { hostFileExists, sameHostFile } from './vm-files.ts';

/** The base an overlay is backed by (absolute), or undefined when the overlay does not exist. */
export async function backingOf(runner: Runner, overlay: string): Promise<string | undefined> {
  if (!(await hostFileExists(runner, overlay))) return undefined;
  // The qcow2 header read in-process where ivm sees the file as the host does (no HOST_CMD) and may
  // read it: no qemu-img process per VM (ivm list of many VMs). Anything else asks qemu-img.
  if (runner.settings.hostCmd.length === 0) {
    const header = qcow2Backing(overlay);
    if (header !== 'unknown') return header;
  }
  const top = await imageInfo(runner, overlay);
  return top['full-backing-filename'] ?? top['backing-filename'];
}

/**
 * A qcow2 file's backing file name from its header (QCOW2 spec: magic "QFI\xfb", then at byte 8
 * the backing name's offset, 8 bytes big-endian, and at 16 its length, 4 bytes), resolved from the
 * overlay's folder as qemu does; undefined when it has none; 'unknown' when the header cannot be
 * read or is not qcow2 (the caller asks qemu-img).
 */
export function qcow2Backing(file: string): string | undefined | 'unknown' {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const head = Buffer.alloc(20);
    if (fs.readSync(fd, head, 0, 20, 0) !== 20 || head.readUInt32BE(0) !== 0x514649fb) return 'unknown';
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0) return undefined;
    if (size > 1023) return 'unknown';
    const name = Buffer.alloc(size);
    if (fs.readSync(fd, name, 0, size, offset) !== size) return 'unknown';
    // As qemu-img's full-backing-filename: a relative name joined to the overlay's folder, as is.
    const text = name.toString('utf8');
    return path.isAbsolute(text) ? text : `${path.dirname(file)}/${text}`;
  } catch {
    return 'unknown';
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

const move = (from: string, to: string): Command => ({ tool: 'mv', args: ['-f', '-T', from, to], mutates: true });

export async function switchBaseSteps(runner: Runner, paths: VmPaths, target: string): Promise<Step[]> {
  const next = `${paths.boot}.next`;
  const previousNext = `${paths.bootPrevious}.next`;
  const steps: Step[] = [
    { kind: 'run', title: 'clear what an interrupted run left', command: removeCommand(next, previousNext) },
    { kind: 'run', title: `new boot overlay backed by ${target}`, command: createOverlayCommand(target, next), undo: removeCommand(next) },
  ];
  // The temporary names must not be links either: qemu-img and ln would write through them.
  await hostFileExists(runner, next);
  await hostFileExists(runner, previousNext);
  if (await hostFileExists(runner, paths.boot)) {
    steps.push({
      kind: 'run',
      title: 'keep the current overlay for rollback',
      command: { tool: 'ln', args: ['-f', '-T', paths.boot, previousNext], mutates: true },
      undo: removeCommand(previousNext),
    });
    steps.push({ kind: 'run', title: 'put the new overlay in place', command: move(next, paths.boot), undo: move(previousNext, paths.boot) });
    steps.push({ kind: 'run', title: 'the old overlay becomes the rollback target', command: move(previousNext, paths.bootPrevious) });
  } else {
    steps.push({ kind: 'run', title: 'put the new overlay in place', command: move(next, paths.boot), undo: removeCommand(paths.boot) });
  }
  return steps;
}

/**
 * What a switch cut short left behind, put right before anything else is planned. The old overlay
 * waits as <name>-boot-prev.qcow2.next between "put the new overlay in place" and "the old overlay
 * becomes the rollback target": if the new overlay is in place, finish that move (else the rollback
 * target would be lost, and the file would keep its base from gc); if not, it is a second name of
 * the current overlay, and goes.
 */
export async function finishSwitchSteps(runner: Runner, paths: VmPaths): Promise<Step[]> {
  const next = `${paths.boot}.next`;
  const previousNext = `${paths.bootPrevious}.next`;
  const steps: Step[] = [];
  if (await hostFileExists(runner, previousNext)) {
    if ((await hostFileExists(runner, paths.boot)) && !(await sameHostFile(runner, previousNext, paths.boot))) {
      steps.push({ kind: 'run', title: 'finish an interrupted switch: the old overlay becomes the rollback target', command: move(previousNext, paths.bootPrevious) });
    } else {
      steps.push({ kind: 'run', title: 'drop the second name an interrupted switch left', command: removeCommand(previousNext) });
    }
  }
  if (await hostFileExists(runner, next)) steps.push({ kind: 'run', title: 'drop the overlay an interrupted switch made', command: removeCommand(next) });
  return steps;
}

// ivm status: what a VM is made of now. Reads only: libvirt's state, the disks' backing files and
// sizes, and, when the VM is stopped, /identity on its /var disk (guestfish, read-only).
import { humanSize } from '../human-size.ts';
import fs from 'node:fs';
import path from 'node:path';
import { hostFileExists } from '../disks/vm-files.ts';
import { imageInfo } from '../../host/qemu-img.ts';
import { readBuildRecord } from '../base/base-image.ts';
import { backingOf } from '../disks/boot-overlay.ts';
import type { Context } from '../context.ts';
import { machineSources } from '../identity/identity.ts';
import { describeDiff, diffIdentity, isInSync, openVarDisk, readDiskIdentity } from '../identity/identity-sync.ts';
import { loadMachine } from '../machine/machine.ts';
import { vmPaths } from '../disks/vm-paths.ts';
import { ownVm } from './running.ts';

export interface DiskStatus {
  path: string;
  virtualBytes: number;
  allocatedBytes: number;
}

export interface VmStatus {
  name: string;
  state: string;
  base: { path: string; storePath: string | undefined; exists: boolean } | undefined;
  rollbackBase: { path: string; exists: boolean } | undefined;
  disks: { boot?: DiskStatus; var?: DiskStatus };
  identity: { files: { name: string; mode: string }[]; sync: 'in sync' | 'differs' | 'not checked'; detail: string };
}

async function disk(ctx: Context, file: string): Promise<DiskStatus | undefined> {
  if (!(await hostFileExists(ctx.runner, file))) return undefined;
  const info = await imageInfo(ctx.runner, file);
  // qemu-img's own count where ivm cannot stat the file (HOST_CMD).
  const allocated = ctx.settings.hostCmd.length === 0 ? fs.lstatSync(file).blocks * 512 : (info['actual-size'] ?? 0);
  return { path: file, virtualBytes: info['virtual-size'] ?? 0, allocatedBytes: allocated };
}

export async function vmStatus(ctx: Context, name: string): Promise<VmStatus> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  // Only this project's domain (its uuid): another of the same name is never reported as this VM.
  const info = await ownVm(ctx, name);
  const state = info === undefined ? 'undefined' : info.managedSave ? `${info.state} (with a saved memory image)` : info.state;
  const current = await backingOf(ctx.runner, paths.boot);
  const previous = await backingOf(ctx.runner, paths.bootPrevious);
  const record = readBuildRecord(ctx.project, name);
  const sources = machineSources(machine);
  let sync: VmStatus['identity']['sync'] = 'not checked';
  let detail: string;
  if (!(await hostFileExists(ctx.runner, paths.var))) detail = 'no /var disk';
  else if (state !== 'shut off' && state !== 'undefined') detail = `the VM is ${state}: guestfish never opens a running VM's disks`;
  else {
    const session = await openVarDisk(ctx.runner, paths.var, { write: false });
    let diff;
    try {
      diff = diffIdentity(sources, await readDiskIdentity(session));
      await session.close();
    } finally {
      session.abort();
    }
    sync = isInSync(diff) ? 'in sync' : 'differs';
    detail = isInSync(diff) ? `machines/${name}/ and /var/identity agree` : `upgrade would: ${describeDiff(diff)}`;
  }
  const storePath = current && record && path.resolve(record.base) === path.resolve(current) ? record.storePath : current ? `/nix/store/${path.basename(current, '.qcow2')}` : undefined;
  return {
    name,
    state,
    base: current ? { path: current, storePath, exists: await hostFileExists(ctx.runner, current) } : undefined,
    rollbackBase: previous ? { path: previous, exists: await hostFileExists(ctx.runner, previous) } : undefined,
    disks: { boot: await disk(ctx, paths.boot), var: await disk(ctx, paths.var) },
    identity: { files: sources.map((s) => ({ name: s.name, mode: s.mode })), sync, detail },
  };
}

const size = humanSize;

export function formatStatus(status: VmStatus): string[] {
  const diskLine = (d: DiskStatus | undefined) => (d ? `${d.path} (${size(d.allocatedBytes)} allocated of ${size(d.virtualBytes)})` : 'missing');
  return [
    `name:           ${status.name}`,
    `state:          ${status.state}`,
    `base:           ${status.base ? `${status.base.path}${status.base.exists ? '' : ` (MISSING: it cannot boot; ivm upgrade ${status.name} moves it to its latest base)`}` : 'none'}`,
    `  store path:   ${status.base?.storePath ?? 'unknown'}`,
    `rollback base:  ${status.rollbackBase ? `${status.rollbackBase.path}${status.rollbackBase.exists ? '' : ' (gone: rollback impossible)'}` : 'none'}`,
    `boot overlay:   ${diskLine(status.disks.boot)}`,
    `/var disk:      ${diskLine(status.disks.var)}`,
    `identity files: ${status.identity.files.map((f) => `${f.name} (${f.mode})`).join(', ')}`,
    `identity sync:  ${status.identity.sync}: ${status.identity.detail}`,
  ];
}

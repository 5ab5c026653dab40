// ivm gc: delete the base images nothing uses. A base is kept when any disk in IVM_VM_DIR has it in
// its backing chain (current and rollback overlays, and disks of VMs ivm does not know), or when it
// is the latest build of a machine of this project (create --no-build would use it).
import fs from 'node:fs';
import path from 'node:path';
import { RefusedError } from '../errors.ts';
import { removeCommand } from '../host/files.ts';
import { backingChain } from '../host/qemu-img.ts';
import { readBuildRecord } from './base-image.ts';
import type { Context } from './context.ts';
import { executePlan } from './plan.ts';
import { machineNames } from './project.ts';

/** Files in IVM_VM_DIR that cannot be disk images (logs, UEFI variables). */
const NOT_DISKS = /\.(log|fd|xml|json)$/;

export interface GcResult {
  kept: { base: string; why: string }[];
  removed: { base: string; bytes: number }[];
}

function realpath(file: string): string {
  try {
    return fs.realpathSync(file);
  } catch {
    return path.resolve(file);
  }
}

export async function collectGarbage(ctx: Context): Promise<GcResult> {
  const { baseDir, vmDir } = ctx.settings;
  const bases = fs.existsSync(baseDir)
    ? fs.readdirSync(baseDir, { withFileTypes: true }).filter((e) => e.isFile() && e.name.endsWith('.qcow2') && !e.name.startsWith('.')).map((e) => path.join(baseDir, e.name))
    : [];
  const users = new Map<string, string>();
  const disks = fs.existsSync(vmDir)
    ? fs.readdirSync(vmDir, { withFileTypes: true }).filter((e) => e.isFile() && !NOT_DISKS.test(e.name)).map((e) => path.join(vmDir, e.name))
    : [];
  for (const disk of disks) {
    let chain;
    try {
      chain = await backingChain(ctx.runner, disk);
    } catch (error) {
      throw new RefusedError(`cannot read the backing chain of ${disk}, so gc deletes nothing: ${(error as Error).message}`);
    }
    for (const image of chain.slice(1)) users.set(realpath(image.filename), disk);
  }
  for (const name of machineNames(ctx.project)) {
    const record = readBuildRecord(ctx.project, name);
    if (record && !users.has(realpath(record.base))) users.set(realpath(record.base), `latest build of ${name}`);
  }
  const result: GcResult = { kept: [], removed: [] };
  for (const base of bases) {
    const user = users.get(realpath(base));
    if (user) result.kept.push({ base, why: user });
    else result.removed.push({ base, bytes: fs.statSync(base).blocks * 512 });
  }
  if (result.removed.length > 0) {
    await executePlan(
      ctx.runner,
      { title: 'gc', steps: [{ kind: 'run', title: 'remove unused base images', command: removeCommand(...result.removed.map((r) => r.base)) }] },
      ctx.say,
    );
  }
  return result;
}

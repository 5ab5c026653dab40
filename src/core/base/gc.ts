// ivm gc: delete the base images nothing uses. A base is kept when any disk in IVM_VM_DIR (links
// followed) or any disk of any libvirt domain has it in its backing chain (current and rollback
// overlays, and disks of VMs ivm does not know), or when it is the latest build of a machine of
// this project (create --no-build would use it).
import fs from 'node:fs';
import path from 'node:path';
import { RefusedError } from '../../errors.ts';
import { removeCommand } from '../../host/files.ts';
import { backingChain } from '../../host/qemu-img.ts';
import { domainXml, listDomains } from '../../host/virsh.ts';
import { canonical } from './base-dir.ts';
import { BASE_IMAGE_NAME, readBuildRecord } from './base-image.ts';
import type { Context } from '../context.ts';
import { executePlan } from '../plan.ts';
import { withBaseLock } from '../lock.ts';
import { machineNames } from '../machine/project.ts';
import { xmlAttr } from '../xml-text.ts';

/** Files in IVM_VM_DIR that cannot be disk images (logs, UEFI variables). */
const NOT_DISKS = /\.(log|fd|xml|json)$/;

export interface GcResult {
  kept: { base: string; why: string }[];
  removed: { base: string; bytes: number }[];
}

/**
 * Regular files in a folder, or a refusal that says why the folder cannot be read. Links are
 * followed only where that can only keep more (disks that may use a base), never for what gc removes.
 */
function filesIn(dir: string, keep: (name: string) => boolean, followLinks: boolean): string[] {
  if (!fs.existsSync(dir)) return [];
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (error) {
    throw new RefusedError(`cannot list ${dir} (${(error as NodeJS.ErrnoException).code}), so gc deletes nothing`, 'run it as a user who may read the image folders (or as root)');
  }
  return names
    .filter(keep)
    .map((name) => path.join(dir, name))
    .filter((file) => {
      try {
        return (followLinks ? fs.statSync(file) : fs.lstatSync(file)).isFile();
      } catch {
        return false; // a dangling link references nothing
      }
    });
}

function certainlyMissing(ctx: Context, file: string): boolean {
  if (ctx.settings.hostCmd.length > 0) return false;
  try {
    fs.statSync(file);
    return false;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'ENOENT';
  }
}

export async function collectGarbage(ctx: Context): Promise<GcResult> {
  // Under the base folder's lock: a build cannot install a base between gc's look and its removal.
  return withBaseLock(ctx, 'gc', () => collectLocked(ctx));
}

async function collectLocked(ctx: Context): Promise<GcResult> {
  const { baseDir, vmDir } = ctx.settings;
  // Only what ivm build installs: a regular file with a base image's name (not a link, not any file).
  const bases = filesIn(baseDir, (name) => BASE_IMAGE_NAME.test(name), false);
  // Every disk that may use a base: the files in IVM_VM_DIR, and the disks of every libvirt domain
  // wherever they are.
  const disks = new Set(filesIn(vmDir, (name) => !NOT_DISKS.test(name), true));
  // A domain's disk is skipped only when it is certainly not there. One ivm cannot stat (a folder
  // closed to this user, or on the host behind HOST_CMD) is still read, by qemu-img, and if that
  // fails too, gc deletes nothing.
  for (const disk of await domainDisks(ctx)) if (!certainlyMissing(ctx, disk)) disks.add(disk);
  const users = new Map<string, string>();
  for (const disk of disks) {
    let chain;
    try {
      chain = await backingChain(ctx.runner, disk);
    } catch (error) {
      throw new RefusedError(`cannot read the backing chain of ${disk}, so gc deletes nothing: ${(error as Error).message}`);
    }
    // The disk itself too: a domain may use a base directly, or a link in IVM_VM_DIR point at one.
    for (const image of chain) users.set(canonical(image.filename), disk);
  }
  for (const name of machineNames(ctx.project)) {
    const record = readBuildRecord(ctx.project, name);
    if (record && !users.has(canonical(record.base))) users.set(canonical(record.base), `latest build of ${name}`);
  }
  const result: GcResult = { kept: [], removed: [] };
  for (const base of bases) {
    const user = users.get(canonical(base));
    if (user) result.kept.push({ base, why: user });
    else result.removed.push({ base, bytes: fs.lstatSync(base).blocks * 512 });
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

/**
 * The file-backed disks of every libvirt domain: one `virsh list`, then each domain's XML (where a
 * path is one attribute, whatever blanks it holds; `domblklist` prints it in a column). A running
 * domain's defined XML is read too: the disks it boots with next time may differ from its live ones.
 */
async function domainDisks(ctx: Context): Promise<string[]> {
  const disks: string[] = [];
  for (const [domain, state] of await listDomains(ctx.runner)) {
    for (const inactive of state === 'shut off' ? [false] : [false, true]) {
      // Undefined since the list was read: it holds no disk any more.
      const xml = await domainXml(ctx.runner, domain, inactive);
      if (xml !== undefined) disks.push(...fileDisksOfDomainXml(xml));
    }
  }
  return disks;
}

/**
 * The files of a domain XML's `<disk type='file'>` elements: each one's own `<source file='...'/>`,
 * entities decoded (not the `<backingStore>` chain libvirt may add: gc reads chains itself).
 */
export function fileDisksOfDomainXml(xml: string): string[] {
  const files: string[] = [];
  for (const disk of xml.matchAll(/<disk\b([^>]*?)(?:\/>|>([\s\S]*?)<\/disk>)/g)) {
    if (xmlAttr(disk[1]!, 'type') !== 'file' || disk[2] === undefined) continue;
    const own = disk[2].split(/<backingStore\b/)[0]!;
    const source = /<source\b[^>]*>/.exec(own)?.[0];
    const file = source === undefined ? undefined : xmlAttr(source, 'file');
    if (file) files.push(file);
  }
  return files;
}

// The base-image directory contract: IVM_BASE_DIR is the only place a backing file may live (it is
// what the one AppArmor rule of `ivm host setup` lets QEMU read). create and upgrade call
// requireBaseInBaseDir before they make an overlay; doctor checks every VM's backing file the same way.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, RefusedError } from '../../errors.ts';
import { inHiddenFolderOf } from '../../host/settings.ts';
import type { Settings } from '../../host/settings.ts';

/** The canonical path (symlinks resolved) of a file or of its nearest existing parent. */
export function canonical(file: string): string {
  const abs = path.resolve(file);
  const missing: string[] = [];
  for (let dir = abs; ; dir = path.dirname(dir)) {
    try {
      return path.join(fs.realpathSync(dir), ...missing.reverse());
    } catch {
      if (dir === path.dirname(dir)) return abs;
      missing.push(path.basename(dir));
    }
  }
}

/** True when `file` lies inside `dir` (after resolving symlinks). */
export function isInside(dir: string, file: string): boolean {
  const rel = path.relative(canonical(dir), canonical(file));
  return rel !== '' && rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel);
}

/** Refuses (exit 3) a base image outside IVM_BASE_DIR. */
export function requireBaseInBaseDir(settings: Settings, base: string): void {
  if (isInside(settings.baseDir, base)) return;
  throw new RefusedError(
    `the base image ${base} is outside IVM_BASE_DIR (${settings.baseDir}), the only place a backing file may live`,
    'install it there with `ivm build NAME` (or point IVM_BASE_DIR at its folder and run `ivm host setup --apply`)',
  );
}

/**
 * The home folders AppArmor calls @{HOME} (/root and /home/<user>), plus $HOME. A disk image in a
 * hidden folder under one of them (@{HOME}/.*) is denied to QEMU by libvirt's AppArmor abstractions.
 */
export function homeOf(file: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const abs = path.resolve(file);
  const candidates = ['/root'];
  const match = /^\/home\/[^/]+/.exec(abs);
  if (match) candidates.push(match[0]);
  if (env.HOME && env.HOME !== '/') candidates.push(path.resolve(env.HOME));
  return candidates.find((home) => abs.startsWith(`${home}/`));
}

/** The home folder when `file` is in a hidden folder under it, else undefined. */
export function hiddenHomeFolder(file: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const home = homeOf(file, env);
  return home !== undefined && inHiddenFolderOf(home, path.resolve(file)) ? home : undefined;
}

/** Folders that are never an image folder: the system's own, where a chmod or an AppArmor rule would reach far. */
const SYSTEM_FOLDERS = [
  '/', '/bin', '/boot', '/dev', '/etc', '/home', '/lib', '/lib32', '/lib64', '/libx32', '/media', '/mnt', '/nix', '/nix/store',
  '/opt', '/proc', '/root', '/run', '/sbin', '/srv', '/sys', '/tmp', '/usr', '/usr/local', '/var', '/var/lib', '/var/lib/libvirt',
  '/var/log', '/var/tmp',
];

/**
 * Refuses (exit 2) image folders that would make ivm act far beyond its own files: the base folder
 * and the VM folder the same, or one inside the other (host setup makes every base 0444 and lets
 * QEMU read the whole base folder: /var disks, which hold host keys, must never be in it), a system
 * folder, or a home folder itself. Checked on the canonical paths, links resolved.
 */
export function checkImageFolders(settings: Pick<Settings, 'baseDir' | 'vmDir'>, env: NodeJS.ProcessEnv = process.env): void {
  const base = canonical(settings.baseDir);
  const vm = canonical(settings.vmDir);
  const fail = (what: string) => {
    throw new BadInputError(`${what}; nothing was changed`, 'IVM_BASE_DIR and IVM_VM_DIR must be two separate folders of their own, e.g. /var/lib/libvirt/base-images and /var/lib/libvirt/images');
  };
  const homes = new Set(['/root', ...(env.HOME && env.HOME !== '/' ? [canonical(env.HOME)] : [])]);
  for (const [variable, dir] of [['IVM_BASE_DIR', base], ['IVM_VM_DIR', vm]] as const) {
    if (SYSTEM_FOLDERS.includes(dir)) fail(`${variable}=${dir} is a system folder`);
    if (homes.has(dir) || /^\/home\/[^/]+$/.test(dir)) fail(`${variable}=${dir} is a home folder itself`);
  }
  if (base === vm) fail(`IVM_BASE_DIR and IVM_VM_DIR are the same folder (${base})`);
  if (isInside(vm, base)) fail(`IVM_BASE_DIR (${base}) is inside IVM_VM_DIR (${vm})`);
  if (isInside(base, vm)) fail(`IVM_VM_DIR (${vm}) is inside IVM_BASE_DIR (${base})`);
}

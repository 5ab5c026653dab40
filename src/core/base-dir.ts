// The base-image directory contract: IVM_BASE_DIR is the only place a backing file may live (it is
// what the one AppArmor rule of `ivm host setup` lets QEMU read). create and upgrade call
// requireBaseInBaseDir before they make an overlay; doctor checks every VM's backing file the same way.
import fs from 'node:fs';
import path from 'node:path';
import { RefusedError } from '../errors.ts';
import { inHiddenFolderOf } from '../host/settings.ts';
import type { Settings } from '../host/settings.ts';

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
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
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

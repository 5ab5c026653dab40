// Identity on an existing /var disk: read what /identity holds, compare it with machines/<name>/,
// and change only what differs, all in one guestfish session. Nothing outside /identity is touched.
import crypto from 'node:crypto';
import fs from 'node:fs';
import { RefusedError } from '../errors.ts';
import { fishLine, guestfishSessionCommand } from '../host/guestfish.ts';
import type { Runner, Session } from '../host/runner.ts';
import { VAR_DIRS, VAR_IDENTITY_DIR, VAR_LABEL } from './identity-files.ts';
import type { IdentitySource } from './identity.ts';
import { octalMode } from './file-mode.ts';

export interface DiskFile {
  name: string;
  /** "0444" */
  mode: string;
  uid: number;
  regular: boolean;
  sha256: string | undefined;
}

export interface IdentityDiff {
  added: string[];
  changed: string[];
  /** Same content, wrong mode or owner. */
  fixed: string[];
  removed: string[];
  /** /identity itself is missing or has the wrong mode. */
  fixDir: boolean;
}

export function isInSync(diff: IdentityDiff): boolean {
  return !diff.fixDir && [diff.added, diff.changed, diff.fixed, diff.removed].every((list) => list.length === 0);
}

export function describeDiff(diff: IdentityDiff): string {
  if (isInSync(diff)) return 'in sync';
  const parts: string[] = [];
  if (diff.added.length) parts.push(`added ${diff.added.join(', ')}`);
  if (diff.changed.length) parts.push(`changed ${diff.changed.join(', ')}`);
  if (diff.fixed.length) parts.push(`mode or owner fixed ${diff.fixed.join(', ')}`);
  if (diff.removed.length) parts.push(`removed ${diff.removed.join(', ')}`);
  if (diff.fixDir) parts.push(`${VAR_IDENTITY_DIR} made 0755`);
  return parts.join('; ');
}

/** Opens the /var disk in one guestfish launch (the drive writable only with write) and mounts it. */
export async function openVarDisk(runner: Runner, varDisk: string, options: { write: boolean }): Promise<Session> {
  const session = runner.startSession(guestfishSessionCommand());
  const label = await session.send([
    fishLine('add-drive', varDisk, 'format:qcow2', `readonly:${options.write ? 'false' : 'true'}`),
    'run',
    fishLine('vfs-label', '/dev/sda'),
  ]);
  if (label.trim() !== VAR_LABEL) {
    await session.close().catch(() => undefined);
    throw new RefusedError(`${varDisk} does not hold the ivm /var filesystem (label ${JSON.stringify(label.trim())}, not ${VAR_LABEL})`);
  }
  // Mounted read-only even when the drive may be written: a run that changes nothing leaves the
  // filesystem (mount count, times) as it was. remountWritable() switches before the first change.
  await session.send([fishLine('mount-ro', '/dev/sda', '/')]);
  return session;
}

/** Remounts the /var filesystem read-write (the drive must have been opened with write: true). */
export function remountWritable(): string[] {
  return [fishLine('umount', '/'), fishLine('mount', '/dev/sda', '/')];
}

const DIR_MODE = VAR_DIRS.find((dir) => dir.path === VAR_IDENTITY_DIR)?.mode ?? '0755';

/** What /identity holds: name, mode, owner and content hash of each entry. */
export async function readDiskIdentity(session: Session): Promise<{ dirMode: string | undefined; files: Map<string, DiskFile> }> {
  const files = new Map<string, DiskFile>();
  const isDir = (await session.send([fishLine('is-dir', VAR_IDENTITY_DIR)])).trim() === 'true';
  if (!isDir) return { dirMode: undefined, files };
  const dirStat = parseStat(await session.send([fishLine('lstatns', VAR_IDENTITY_DIR)]));
  const names = (await session.send([fishLine('ls', VAR_IDENTITY_DIR)])).split('\n').filter(Boolean);
  if (names.length === 0) return { dirMode: dirStat.mode, files };
  const stats = (await session.send(names.map((name) => fishLine('lstatns', `${VAR_IDENTITY_DIR}/${name}`))))
    .split(/\n(?=st_dev:)/)
    .map(parseStat);
  const regular = names.filter((_, i) => stats[i]?.regular);
  const sums = regular.length
    ? (await session.send(regular.map((name) => fishLine('checksum', 'sha256', `${VAR_IDENTITY_DIR}/${name}`)))).split('\n').filter(Boolean)
    : [];
  names.forEach((name, i) => {
    const stat = stats[i]!;
    const sum = stat.regular ? sums[regular.indexOf(name)] : undefined;
    files.set(name, { name, mode: stat.mode, uid: stat.uid, regular: stat.regular, sha256: sum });
  });
  return { dirMode: dirStat.mode, files };
}

function parseStat(text: string): { mode: string; uid: number; regular: boolean } {
  const field = (key: string) => Number(new RegExp(`^${key}: (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const mode = field('st_mode');
  return { mode: octalMode(mode), uid: field('st_uid'), regular: (mode & 0o170000) === 0o100000 };
}

export function sha256Of(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

export function diffIdentity(sources: IdentitySource[], disk: { dirMode: string | undefined; files: Map<string, DiskFile> }): IdentityDiff {
  const diff: IdentityDiff = { added: [], changed: [], fixed: [], removed: [], fixDir: disk.dirMode !== DIR_MODE };
  for (const source of sources) {
    const found = disk.files.get(source.name);
    if (!found) diff.added.push(source.name);
    else if (!found.regular || found.sha256 !== sha256Of(source.local)) diff.changed.push(source.name);
    else if (found.mode !== source.mode || found.uid !== 0) diff.fixed.push(source.name);
  }
  const wanted = new Set(sources.map((source) => source.name));
  for (const name of disk.files.keys()) if (!wanted.has(name)) diff.removed.push(name);
  return diff;
}

/** The guestfish commands that make /identity equal to the sources (only what differs). */
export function syncScript(sources: IdentitySource[], diff: IdentityDiff): string[] {
  const lines: string[] = [];
  if (diff.fixDir) lines.push(fishLine('mkdir-p', VAR_IDENTITY_DIR), fishLine('chmod', DIR_MODE, VAR_IDENTITY_DIR), fishLine('chown', '0', '0', VAR_IDENTITY_DIR));
  for (const name of diff.removed) lines.push(fishLine('rm-rf', `${VAR_IDENTITY_DIR}/${name}`));
  for (const source of sources) {
    const target = `${VAR_IDENTITY_DIR}/${source.name}`;
    if (diff.changed.includes(source.name)) lines.push(fishLine('rm-rf', target));
    if (diff.added.includes(source.name) || diff.changed.includes(source.name)) lines.push(fishLine('upload', source.local, target));
    if ([diff.added, diff.changed, diff.fixed].some((list) => list.includes(source.name))) {
      lines.push(fishLine('chown', '0', '0', target), fishLine('chmod', source.mode, target));
    }
  }
  if (lines.length > 0) return [...remountWritable(), ...lines, 'sync'];
  return lines;
}

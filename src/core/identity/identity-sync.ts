// Identity on an existing /var disk: read what /identity holds, compare it with machines/<name>/,
// and change only what differs, all in one guestfish session. Nothing outside /identity is touched.
import crypto from 'node:crypto';
import { IvmError, RefusedError } from '../../errors.ts';
import { fishLine, guestfishSessionCommand } from '../../host/guestfish.ts';
import type { Runner, Session } from '../../host/runner.ts';
import { SECRETS_DIR, SECRETS_FOLDER, VAR_DIRS, VAR_IDENTITY_DIR, VAR_LABEL } from './identity-files.ts';
import type { IdentitySource } from './identity.ts';
import { octalMode } from '../file-mode.ts';

export interface DiskFile {
  name: string;
  /** "0444" */
  mode: string;
  uid: number;
  regular: boolean;
  folder?: boolean;
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
  /**
   * Names on the disk that ivm cannot name back to guestfish safely (bytes that are not UTF-8): the
   * guest controls /var, so such a name is reported, never guessed at. Never "in sync".
   */
  unreadable: string[];
  /** Names in `changed` that are not regular files on the disk (a folder, a link). */
  notRegular: string[];
  /** The secrets folder must be made, or its mode fixed, before secrets are written into it. */
  fixSecretsDir?: boolean;
}

export function isInSync(diff: IdentityDiff): boolean {
  return !diff.fixDir && !diff.fixSecretsDir && [diff.added, diff.changed, diff.fixed, diff.removed, diff.unreadable].every((list) => list.length === 0);
}

export function describeDiff(diff: IdentityDiff): string {
  if (isInSync(diff)) return 'in sync';
  const parts: string[] = [];
  if (diff.added.length) parts.push(`added ${diff.added.join(', ')}`);
  if (diff.changed.length) parts.push(`changed ${diff.changed.join(', ')}`);
  if (diff.fixed.length) parts.push(`mode or owner fixed ${diff.fixed.join(', ')}`);
  if (diff.removed.length) parts.push(`removed ${diff.removed.map(shownName).join(', ')}`);
  if (diff.unreadable.length) parts.push(`names that are not UTF-8 (removed by hand only) ${diff.unreadable.join(', ')}`);
  if (diff.fixDir) parts.push(`${VAR_IDENTITY_DIR} made 0755`);
  if (diff.fixSecretsDir) parts.push(`${SECRETS_DIR.path} made ${SECRETS_DIR.mode}`);
  return parts.join('; ');
}

/** Opens the /var disk in one guestfish launch (the drive writable only with write) and mounts it. */
export async function openVarDisk(runner: Runner, varDisk: string, options: { write: boolean }): Promise<Session> {
  const session = runner.startSession(guestfishSessionCommand());
  const label = await runner.progress.step('open the /var disk (guestfish appliance)', () =>
    session.send([fishLine('add-drive', varDisk, 'format:qcow2', `readonly:${options.write ? 'false' : 'true'}`), 'run', fishLine('vfs-label', '/dev/sda')]),
  );
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

/** A name as shown to the user: JSON-quoted when it holds anything but printable characters. */
export function shownName(name: string): string {
  if (/^[\x21-\x7e]+$/.test(name)) return name;
  // JSON.stringify escapes C0 controls only: DEL and the C1 controls (which a terminal obeys) too.
  return JSON.stringify(name).replace(/[\x7f-\x9f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

export interface DiskIdentity {
  dirMode: string | undefined;
  /** The mode of /identity/secrets when it is a folder, else undefined. */
  secretsDirMode?: string | undefined;
  /** Entries by name; those in the secrets folder as `secrets/NAME`. */
  files: Map<string, DiskFile>;
  /** Names that are not valid UTF-8, shown with their bytes escaped. */
  unreadable: string[];
}

/** What /identity holds: name, mode, owner and content hash of each entry, the secrets folder's too. */
export async function readDiskIdentity(session: Session): Promise<DiskIdentity> {
  const files = new Map<string, DiskFile>();
  const unreadable: string[] = [];
  const isDir = (await session.send([fishLine('is-dir', VAR_IDENTITY_DIR)])).trim() === 'true';
  if (!isDir) return { dirMode: undefined, files, unreadable };
  const dirStat = parseStat(await session.send([fishLine('lstatns', VAR_IDENTITY_DIR)]));
  await readFolder(session, VAR_IDENTITY_DIR, '', files, unreadable);
  // The secrets folder is read as a folder of entries `secrets/NAME`, not as one entry.
  const secrets = files.get(SECRETS_FOLDER);
  let secretsDirMode: string | undefined;
  if (secrets?.folder) {
    files.delete(SECRETS_FOLDER);
    secretsDirMode = secrets.mode;
    await readFolder(session, SECRETS_DIR.path, `${SECRETS_FOLDER}/`, files, unreadable);
  }
  return { dirMode: dirStat.mode, secretsDirMode, files, unreadable };
}

/** The entries of one folder into `files` (named prefix + name): names NUL-safe, then lstat and sha256. */
async function readFolder(session: Session, dir: string, prefix: string, files: Map<string, DiskFile>, unreadable: string[]): Promise<void> {
  // The guest controls these names: read them NUL-separated (ls0 to standard output), so that a
  // name holding a newline (or anything else) is one name, never several lines.
  const listing = await session.sendRaw([fishLine('ls0', dir, '-')]);
  const names: string[] = [];
  for (const raw of splitNul(listing)) {
    const name = raw.toString('utf8');
    if (Buffer.from(name, 'utf8').equals(raw)) names.push(name);
    else unreadable.push(JSON.stringify(`${prefix}${raw.toString('latin1')}`));
  }
  if (names.length === 0) return;
  // ls0 gives the folder's own (hashed) order, which differs from disk to disk: byte order, so that
  // every list made from these (removed, unreadable, status) reads the same each time.
  names.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  unreadable.sort();
  const stats = (await session.send(names.map((name) => fishLine('lstatns', `${dir}/${name}`))))
    .split(/\n(?=st_dev:)/)
    .map(parseStat);
  if (stats.length !== names.length) throw new IvmError(`guestfish answered ${stats.length} file states for the ${names.length} names in ${dir} on the /var disk`);
  const regular = names.filter((_, i) => stats[i]?.regular);
  const sums = regular.length
    ? (await session.send(regular.map((name) => fishLine('checksum', 'sha256', `${dir}/${name}`)))).split('\n').filter(Boolean)
    : [];
  names.forEach((name, i) => {
    const stat = stats[i]!;
    const sum = stat.regular ? sums[regular.indexOf(name)] : undefined;
    files.set(`${prefix}${name}`, { name: `${prefix}${name}`, mode: stat.mode, uid: stat.uid, regular: stat.regular, folder: stat.folder, sha256: sum });
  });
}

function splitNul(bytes: Buffer): Buffer[] {
  const parts: Buffer[] = [];
  let start = 0;
  for (let i = 0; i < bytes.length; i += 1) {
    if (bytes[i] === 0) {
      if (i > start) parts.push(bytes.subarray(start, i));
      start = i + 1;
    }
  }
  if (start < bytes.length && bytes.subarray(start).toString().trim() !== '') parts.push(bytes.subarray(start));
  return parts;
}

function parseStat(text: string): { mode: string; uid: number; regular: boolean; folder: boolean } {
  const field = (key: string) => Number(new RegExp(`^${key}: (\\d+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  const mode = field('st_mode');
  return { mode: octalMode(mode), uid: field('st_uid'), regular: (mode & 0o170000) === 0o100000, folder: (mode & 0o170000) === 0o040000 };
}

export function sha256Of(content: Buffer): string {
  return crypto.createHash('sha256').update(content).digest('hex');
}

export function diffIdentity(sources: IdentitySource[], disk: DiskIdentity): IdentityDiff {
  const diff: IdentityDiff = { added: [], changed: [], fixed: [], removed: [], fixDir: disk.dirMode !== DIR_MODE, unreadable: [...disk.unreadable], notRegular: [] };
  for (const source of sources) {
    const found = disk.files.get(source.name);
    if (!found) diff.added.push(source.name);
    else if (!found.regular) {
      diff.changed.push(source.name);
      diff.notRegular.push(source.name);
    } else if (source.content === undefined || found.sha256 !== sha256Of(source.content)) diff.changed.push(source.name);
    else if (found.mode !== source.mode || found.uid !== 0) diff.fixed.push(source.name);
  }
  const wanted = new Set(sources.map((source) => source.name));
  const anySecret = sources.some((source) => source.name.startsWith(`${SECRETS_FOLDER}/`));
  if (anySecret) diff.fixSecretsDir = disk.secretsDirMode !== SECRETS_DIR.mode;
  if (!anySecret && disk.secretsDirMode !== undefined) {
    // No secrets any more: the folder goes, with what it holds.
    diff.removed.push(SECRETS_FOLDER);
    for (const name of disk.files.keys()) if (!wanted.has(name) && !name.startsWith(`${SECRETS_FOLDER}/`)) diff.removed.push(name);
    return diff;
  }
  // With secrets, a non-folder squatting the folder's name is replaced by fixSecretsDir.
  for (const name of disk.files.keys()) if (!wanted.has(name) && !(anySecret && name === SECRETS_FOLDER)) diff.removed.push(name);
  return diff;
}

/** The temporary name a file is written under on the /var filesystem (in its own folder) before it is renamed into place. */
export function pendingName(name: string): string {
  const slash = name.lastIndexOf('/');
  return `${VAR_IDENTITY_DIR}/${name.slice(0, slash + 1)}.${name.slice(slash + 1)}.ivm-new`;
}

/**
 * The guestfish commands that make /identity equal to the sources (only what differs), whole or not
 * at all for each file: every new content is written under a temporary name (pendingName) at its
 * mode and owner first, then renamed over the old file (rename(2): a reader, or a cut-off run, sees
 * the old file or the new one, never none). Temporary files a cut-off run left are names the table
 * does not know, so the next sync removes them.
 */
export function syncScript(sources: IdentitySource[], diff: IdentityDiff): string[] {
  if (diff.unreadable.length > 0) {
    throw new RefusedError(
      `${VAR_IDENTITY_DIR} on the /var disk holds names that are not UTF-8 (${diff.unreadable.join(', ')}): ivm does not guess at them; nothing was changed`,
      'remove them by hand with guestfish on the stopped VM\'s /var disk (guestfish -a DISK -m /dev/sda, then ls0 /identity -), then run the command again',
    );
  }
  const lines: string[] = [];
  // A link or a file squatting /identity is removed itself (never followed), a real folder stays.
  if (diff.fixDir) lines.push(fishLine('-rm', VAR_IDENTITY_DIR), fishLine('mkdir-p', VAR_IDENTITY_DIR), fishLine('chmod', DIR_MODE, VAR_IDENTITY_DIR), fishLine('chown', '0', '0', VAR_IDENTITY_DIR));
  if (diff.fixSecretsDir) {
    // A file squatting the name goes first; the folder is closed (0700) before any secret enters it.
    if (diff.removed.includes(SECRETS_FOLDER)) throw new Error('internal: the secrets folder both fixed and removed');
    lines.push(fishLine('-rm', SECRETS_DIR.path), fishLine('mkdir-p', SECRETS_DIR.path), fishLine('chown', '0', '0', SECRETS_DIR.path), fishLine('chmod', SECRETS_DIR.mode, SECRETS_DIR.path));
  }
  const rewrite = sources.filter((source) => diff.added.includes(source.name) || diff.changed.includes(source.name));
  // Stale files and leftovers of a cut-off run first (they may hold a pending name).
  for (const name of diff.removed) lines.push(fishLine('rm-rf', `${VAR_IDENTITY_DIR}/${name}`));
  for (const source of rewrite) {
    const pending = pendingName(source.name);
    // Made at its owner and mode before any content goes in (upload keeps an existing file's mode):
    // a host key cut off midway is never readable by others.
    lines.push(fishLine('rm-rf', pending), fishLine('touch', pending), fishLine('chown', '0', '0', pending), fishLine('chmod', source.mode, pending), fishLine('upload', source.local, pending));
  }
  // Only when every new file is complete: a failure above leaves every old file in place.
  for (const source of rewrite) {
    const target = `${VAR_IDENTITY_DIR}/${source.name}`;
    // rename(2) replaces a file (or a link), not a folder: something not a regular file goes first.
    if (diff.notRegular.includes(source.name)) lines.push(fishLine('rm-rf', target));
    lines.push(fishLine('rename', pendingName(source.name), target));
  }
  for (const source of sources) {
    if (!diff.fixed.includes(source.name)) continue;
    const target = `${VAR_IDENTITY_DIR}/${source.name}`;
    lines.push(fishLine('chown', '0', '0', target), fishLine('chmod', source.mode, target));
  }
  if (lines.length > 0) return [...remountWritable(), ...lines, 'sync'];
  return lines;
}

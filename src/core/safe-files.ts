// Files ivm reads and writes itself, treated as untrusted: the project folder may hold links or odd
// files (a cloned repository, a careless `ln -s`), and what ivm reads may later be handed to tools
// running as root (SUDO). So every such file must be a regular file that is not a symbolic link,
// checked without following links (lstat, O_NOFOLLOW), or ivm refuses with exit 2 naming it.
// Writes go to a new temporary file in the same folder (O_EXCL: never through a link) and are then
// renamed into place, so a reader sees the old file or the new one, never half of one.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError } from '../errors.ts';

/** A path ivm will not use: a symbolic link, or something that is not a regular file (or folder). */
export class UnsafeFileError extends BadInputError {
  constructor(file: string, what: string, wanted: 'file' | 'folder' = 'file') {
    super(
      `${file} is ${what}, not a regular ${wanted}: ivm never follows links or uses odd files there; nothing was changed`,
      `replace it with a plain ${wanted} (or remove it), then run the command again`,
    );
  }
}

export type FileKind = 'missing' | 'file' | 'folder' | 'link' | 'other';

/** What is at a path, without following a link at the path itself. */
export function kindOf(file: string): FileKind {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'missing';
    throw error;
  }
  if (st.isSymbolicLink()) return 'link';
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'folder';
  return 'other';
}

function describe(kind: FileKind): string {
  return kind === 'link' ? 'a symbolic link' : kind === 'folder' ? 'a folder' : 'a special file (fifo, socket or device)';
}

/** True when a regular file is there, false when nothing is; anything else is refused. */
export function regularFileExists(file: string): boolean {
  const kind = kindOf(file);
  if (kind === 'missing') return false;
  if (kind === 'file') return true;
  throw new UnsafeFileError(file, describe(kind));
}

/** True when a real folder is there, false when nothing is; a link or a file is refused. */
export function folderExists(dir: string): boolean {
  const kind = kindOf(dir);
  if (kind === 'missing') return false;
  if (kind === 'folder') return true;
  throw new UnsafeFileError(dir, describe(kind), 'folder');
}

/** Makes a folder (and its parents) unless it is there; a link or a file in its place is refused. */
export function ensureFolder(dir: string, mode = 0o755): void {
  if (folderExists(dir)) return;
  fs.mkdirSync(dir, { recursive: true, mode });
  if (kindOf(dir) !== 'folder') throw new UnsafeFileError(dir, describe(kindOf(dir)), 'folder');
}

/** Reads a regular file, refusing a link (O_NOFOLLOW) or a special file (checked on the open file). */
export function readRegularFile(file: string): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: a fifo put there opens at once (and is then refused) instead of hanging.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ELOOP') throw new UnsafeFileError(file, 'a symbolic link');
    throw error;
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new UnsafeFileError(file, st.isDirectory() ? 'a folder' : 'a special file (fifo, socket or device)');
    return fs.readFileSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function readRegularText(file: string): string {
  return readRegularFile(file).toString('utf8');
}

/** A new file under a name nobody can guess, in `dir` (O_EXCL: fails rather than follow anything there). */
function writeTemporary(dir: string, base: string, content: string | Buffer, mode: number): string {
  const temporary = path.join(dir, `.${base}.ivm-${crypto.randomBytes(6).toString('hex')}.tmp`);
  const fd = fs.openSync(temporary, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, mode);
  try {
    fs.writeFileSync(fd, content);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } catch (error) {
    fs.closeSync(fd);
    fs.rmSync(temporary, { force: true });
    throw error;
  }
  fs.closeSync(fd);
  return temporary;
}

/**
 * Writes a file whole: a temporary file in the same folder, then rename. The file there before (if
 * any) must be a regular file; a link is refused, never written through. The folder is made if missing.
 */
export function writeFileAtomic(file: string, content: string | Buffer, mode = 0o644): void {
  const dir = path.dirname(file);
  ensureFolder(dir);
  regularFileExists(file);
  const temporary = writeTemporary(dir, path.basename(file), content, mode);
  try {
    fs.renameSync(temporary, file);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  }
}

/**
 * Creates a file that must not exist yet: written whole under a temporary name, then hard-linked to
 * its name (link(2) fails if anything, a link included, is there), so it is never overwritten and
 * never seen half-written.
 */
export function createFileExclusive(file: string, content: string | Buffer, mode: number): void {
  const dir = path.dirname(file);
  if (!folderExists(dir)) throw new UnsafeFileError(dir, 'missing', 'folder');
  const temporary = writeTemporary(dir, path.basename(file), content, mode);
  try {
    fs.linkSync(temporary, file);
  } finally {
    fs.rmSync(temporary, { force: true });
  }
}

/** Removes a file ivm wrote (a link is removed itself, never what it points at). */
export function removeFile(file: string): void {
  if (kindOf(file) === 'folder') throw new UnsafeFileError(file, 'a folder');
  fs.rmSync(file, { force: true });
}


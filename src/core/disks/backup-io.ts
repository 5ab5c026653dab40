// A backup file on the host: its length, its tar layout, its members' checksums, the image inside it
// (read by qemu-img in place, never unpacked), and the commands that make one. backup-format.ts
// says what the bytes must be; this file asks the host what they are.
//
// Checksums are taken in-process where ivm may read the file itself (no HOST_CMD, and the file is
// readable: ivm runs as root, or in session mode): one read at the speed of OpenSSL's sha256. Where it
// may not (a root-only file read through SUDO, or HOST_CMD), the member is unpacked into a private
// folder and `sha256sum` reads it there.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, CommandFailedError, IvmError } from '../../errors.ts';
import { imageInfo } from '../../host/qemu-img.ts';
import type { Command, Runner } from '../../host/runner.ts';
import { UnsafeFileError } from '../safe-files.ts';
import { hostFileExists } from './vm-files.ts';
import {
  BLOCK,
  CorruptBackupError,
  IMAGE,
  MANIFEST,
  SUMS,
  dataOffset,
  parseLayout,
  parseManifest,
  parseSums,
  sha256,
  type BackupManifest,
  type Layout,
  type Member,
} from './backup-format.ts';
import crypto from 'node:crypto';

/** Nothing may be printed on stderr by these tar runs: tar only warns (exit 0) about a damaged end-of-archive block. */
const NO_STDERR = /(?!)/;

/** The file opened by ivm itself, when it may (no HOST_CMD; readable); undefined when only the host's tools may read it. */
async function openInProcess(runner: Runner, file: string): Promise<fs.promises.FileHandle | undefined> {
  if (runner.settings.hostCmd.length > 0) return undefined;
  try {
    return await fs.promises.open(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ELOOP') throw new UnsafeFileError(file, 'a symbolic link');
    if (code === 'EACCES' || code === 'EPERM') return undefined;
    throw error;
  }
}

/** The length of a regular file on the host (stat through the runner where ivm cannot look itself). Read-only. */
export async function hostFileBytes(runner: Runner, file: string): Promise<number> {
  if (runner.settings.hostCmd.length === 0) {
    try {
      const st = fs.lstatSync(file);
      if (!st.isFile()) throw new UnsafeFileError(file, st.isSymbolicLink() ? 'a symbolic link' : 'not a regular file');
      return st.size;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'EACCES' && code !== 'EPERM') throw error;
    }
  }
  const result = await runner.run({ tool: 'stat', args: ['-c', '%s', '--', file], mutates: false });
  const bytes = Number(result.stdout.trim());
  if (!Number.isSafeInteger(bytes)) throw new IvmError(`stat printed no size for ${file}: ${JSON.stringify(result.stdout.trim())}`);
  return bytes;
}

/** sha256 of `length` bytes at `offset` of an open file (the whole file without a range). */
async function hashRange(handle: fs.promises.FileHandle, offset = 0, length = Number.POSITIVE_INFINITY): Promise<string> {
  const hash = crypto.createHash('sha256');
  const buffer = Buffer.allocUnsafe(8 * 1024 * 1024);
  let at = offset;
  let left = length;
  while (left > 0) {
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, left), at);
    if (bytesRead === 0) break;
    hash.update(buffer.subarray(0, bytesRead));
    at += bytesRead;
    left -= bytesRead;
  }
  return hash.digest('hex');
}

async function readRange(handle: fs.promises.FileHandle, offset: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length);
  const { bytesRead } = await handle.read(buffer, 0, length, offset);
  return buffer.subarray(0, bytesRead);
}

/** sha256 of a whole file on the host: in-process where ivm may read it, else `sha256sum`. Read-only. */
export async function hostFileSha256(runner: Runner, file: string): Promise<string> {
  const handle = await openInProcess(runner, file);
  if (handle) {
    try {
      return await hashRange(handle);
    } finally {
      await handle.close();
    }
  }
  const result = await runner.run({ tool: 'sha256sum', args: ['--', file], mutates: false });
  const digest = /^([0-9a-f]{64})\b/.exec(result.stdout)?.[1];
  if (!digest) throw new IvmError(`sha256sum printed no checksum for ${file}: ${JSON.stringify(result.stdout.slice(0, 200))}`);
  return digest;
}

/** GNU tar's listing with each header's block number: the layout is read from it (tar checks every header's checksum). */
export function listCommand(file: string): Command {
  return { tool: 'tar', args: ['-t', '-v', '--block-number', '--numeric-owner', '-f', file], mutates: false, expectedStderr: NO_STDERR };
}

/** One member's bytes on stdout (the small ones only: the manifest and SHA256SUMS). */
function memberToStdout(file: string, member: string): Command {
  return { tool: 'tar', args: ['-x', '-O', '-f', file, '--', member], mutates: false, expectedStderr: NO_STDERR };
}

/** What a verified backup is: its layout and manifest (every byte checked). */
export interface VerifiedBackup {
  file: string;
  layout: Layout;
  manifest: BackupManifest;
}

/**
 * Checks every byte of a backup (see backup-format.ts) and returns its manifest; a file that is
 * not intact is CorruptBackupError (exit 2). Read-only: it runs under --dry-run too (where ivm
 * cannot read the file itself, the image is unpacked into a private folder under `scratch` to be
 * checksummed, and that folder removed).
 */
export async function verifyBackup(runner: Runner, file: string, scratch: string): Promise<VerifiedBackup> {
  if (!(await hostFileExists(runner, file))) throw new BadInputError(`no such backup file: ${file}`, 'ivm backup list NAME shows the backups of a machine');
  const bytes = await hostFileBytes(runner, file);
  if (bytes < 5 * BLOCK) throw new CorruptBackupError(file, `it is ${bytes} bytes long`);
  const listed = await runner.run(listCommand(file), { allowFailure: true }).catch((error: unknown) => {
    // tar exits 0 but warns about a damaged block after the end: the runner's check of its stderr.
    if (error instanceof CommandFailedError) throw new CorruptBackupError(file, `tar found a damaged block (${lastLine(error.stderrTail)})`);
    throw error;
  });
  if (listed.exitCode !== 0) throw new CorruptBackupError(file, `tar cannot read it (${lastLine(listed.stderr) || `exit ${listed.exitCode}`})`);
  const layout = parseLayout(file, listed.stdout, bytes);
  const handle = await openInProcess(runner, file);
  try {
    const small = async (member: Member): Promise<Buffer> =>
      handle ? readRange(handle, dataOffset(member), member.bytes) : Buffer.from((await runner.run(memberToStdout(file, member.name))).stdout, 'utf8');
    const sumsBytes = await small(layout.sums);
    const sums = parseSums(file, sumsBytes.toString('utf8'));
    const manifestBytes = await small(layout.manifest);
    if (manifestBytes.length !== layout.manifest.bytes || sha256(manifestBytes) !== sums.manifest) throw new CorruptBackupError(file, `its ${MANIFEST} does not match its checksum`);
    const manifest = parseManifest(file, manifestBytes.toString('utf8'), layout.image.bytes);
    if (manifest.image.sha256 !== sums.image) throw new CorruptBackupError(file, `its manifest and ${SUMS} name different images`);
    const imageSha = await runner.progress.step(`checksum ${path.basename(file)} (sha256 of ${layout.image.bytes} bytes)`, () =>
      handle ? hashRange(handle, dataOffset(layout.image), layout.image.bytes) : unpackedSha256(runner, file, scratch),
    );
    if (imageSha !== sums.image) throw new CorruptBackupError(file, `its ${IMAGE} does not match its checksum`);
    return { file, layout, manifest };
  } finally {
    await handle?.close();
  }
}

/**
 * sha256 of the image member, unpacked into a private folder (0700, root's when SUDO applies) under
 * `scratch`: for a file ivm may not read itself. The folder is a scratch copy, not a change: made and
 * removed by queries (it runs under --dry-run too).
 */
async function unpackedSha256(runner: Runner, file: string, scratch: string): Promise<string> {
  const dir = path.join(scratch, `.ivm-verify-${crypto.randomBytes(6).toString('hex')}`);
  await runner.run({ tool: 'mkdir', args: ['-m', '0700', '--', dir], mutates: false });
  try {
    await runner.run({ tool: 'tar', args: ['-x', '-f', file, '-C', dir, '--no-same-owner', '--', IMAGE], mutates: false, expectedStderr: NO_STDERR });
    const result = await runner.run({ tool: 'sha256sum', args: ['--', path.join(dir, IMAGE)], mutates: false });
    return /^([0-9a-f]{64})\b/.exec(result.stdout)?.[1] ?? '';
  } finally {
    await runner.run({ ...removeTreeCommand(dir), mutates: false }).catch(() => undefined);
  }
}

export function removeTreeCommand(dir: string): Command {
  return { tool: 'rm', args: ['-r', '-f', '--', dir], mutates: true };
}

const lastLine = (text: string) => text.trim().split('\n').pop()?.replace(/^tar: /, '') ?? '';

/**
 * The image inside a backup as qemu reads it in place: the qcow2 driver over the raw driver's window
 * (offset, size) of the file, with no backing file opened. Nothing is unpacked.
 */
export function embeddedImage(file: string, layout: Layout): string {
  return `json:${JSON.stringify({
    driver: 'qcow2',
    backing: null,
    file: { driver: 'raw', offset: dataOffset(layout.image), size: layout.image.bytes, file: { driver: 'file', filename: file } },
  })}`;
}

/**
 * Checks the image inside a verified backup before qemu-img copies from it: a qcow2 of the manifest's
 * virtual size that names no backing file and no external data file (both would make qemu read
 * another file of the host's). A backup ivm made passes; one made by other means may not.
 */
export async function checkEmbeddedImage(runner: Runner, backup: VerifiedBackup): Promise<void> {
  const info = await imageInfo(runner, embeddedImage(backup.file, backup.layout));
  const dataFile = (info as { 'format-specific'?: { data?: { 'data-file'?: unknown } } })['format-specific']?.data?.['data-file'];
  const problem =
    info.format !== 'qcow2'
      ? `its image is ${info.format}, not qcow2`
      : info['backing-filename'] !== undefined
        ? `its image names a backing file (${info['backing-filename']})`
        : dataFile !== undefined
          ? 'its image names an external data file'
          : info['virtual-size'] !== backup.manifest.varVirtualSize
            ? `its image is ${info['virtual-size']} bytes, not the ${backup.manifest.varVirtualSize} its manifest says`
            : undefined;
  if (problem) throw new CorruptBackupError(backup.file, problem);
}

/** Copies the image inside a backup into an existing qcow2 (made 0600 before: -n), reading it in place. */
export function restoreIntoCommand(backup: VerifiedBackup, disk: string): Command {
  return { tool: 'qemu-img', args: ['convert', '-q', '-n', '--target-is-zero', '-O', 'qcow2', embeddedImage(backup.file, backup.layout), disk], mutates: true };
}

/**
 * Whether this qemu-img makes qcow2 images with zstd compression (QEMU 5.1 and later, when built
 * with libzstd): much faster than zlib. Asked by creating an image on /dev/null, which writes
 * nothing anywhere: qemu-img accepts the option (and then finds /dev/null no image), or says it
 * does not know the value.
 */
export async function zstdSupported(runner: Runner): Promise<boolean> {
  const result = await runner.run({ tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', '-o', 'compression_type=zstd', '/dev/null', '1M'], mutates: false }, { allowFailure: true });
  return result.exitCode === 0 || !/compression/i.test(result.stderr);
}

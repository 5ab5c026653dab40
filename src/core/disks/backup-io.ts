// A backup file on the host: its length, its tar layout, its members' checksums, the image inside it
// (read by qemu-img in place, never unpacked), and the commands that make one. backup-format.ts
// says what the bytes must be; this file asks the host what they are.
//
// Checksums are taken in-process where ivm may read the file itself (no HOST_CMD, and the file is
// readable: ivm runs as root, or in session mode): one read at the speed of OpenSSL's sha256. Where it
// may not (a root-only file read through SUDO, or HOST_CMD), `dd` reads the byte range as root and
// ivm hashes what it prints as it comes.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, CommandFailedError, IvmError } from '../../errors.ts';
import { imageInfo } from '../../host/qemu-img.ts';
import type { Command, Runner } from '../../host/runner.ts';
import { UnsafeFileError } from '../safe-files.ts';
import { hostFileExists } from './vm-files.ts';
import type { VmPaths } from './vm-paths.ts';
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

/**
 * `length` bytes at `offset` of a file (dd as root: a range of a root-only file), on standard output
 * or into `output`. `file` is a path, or an open file descriptor ivm passes as dd's standard input
 * (then dd reads the very file ivm opened, whatever is renamed over its path meanwhile).
 */
export function rangeCommand(file: string | { fd: number }, offset: number, length: number, output?: string): Command {
  // fullblock: a short read (FUSE, a network file system) still counts its bytes, not a whole block.
  const range = ['bs=4M', 'iflag=skip_bytes,count_bytes,fullblock', `skip=${offset}`, `count=${length}`, 'status=none'];
  return {
    tool: 'dd',
    args: [...(typeof file === 'string' ? [`if=${file}`] : []), ...(output ? [`of=${output}`, 'conv=notrunc'] : []), ...range],
    mutates: output !== undefined,
    ...(typeof file === 'string' ? {} : { stdinFd: file.fd }),
  };
}

/** sha256 of `length` bytes at `offset` of a file on the host: in-process where ivm may read it, else of what `dd` reads. Read-only. */
export async function hostRangeSha256(runner: Runner, file: string, offset: number, length: number): Promise<string> {
  const handle = await openInProcess(runner, file);
  if (handle) {
    try {
      const { size } = await handle.stat();
      if (offset + length > size) throw new IvmError(`${file} is ${size} bytes, too short for ${length} bytes at ${offset} (did the file change?)`);
      return await hashRange(handle, offset, length);
    } finally {
      await handle.close();
    }
  }
  const hash = crypto.createHash('sha256');
  let read = 0;
  await runner.run({
    ...rangeCommand(file, offset, length),
    stdoutSink: (chunk) => {
      read += chunk.length;
      hash.update(chunk);
    },
  });
  if (read !== length) throw new IvmError(`dd read ${read} bytes of ${file} at ${offset}, not ${length} (did the file change?)`);
  return hash.digest('hex');
}

/** GNU tar's listing with each header's block number: the layout is read from it (tar checks every header's checksum). */
export function listCommand(file: string): Command {
  return { tool: 'tar', args: ['-t', '-v', '--block-number', '--numeric-owner', '-f', file], mutates: false, expectedStderr: NO_STDERR };
}

/** A backup whose structure, manifest and checksums were read and checked (its image: see verifyBackup, unpackImage). */
export interface BackupFile {
  file: string;
  layout: Layout;
  manifest: BackupManifest;
}

/**
 * Reads a backup's layout, SHA256SUMS and manifest and checks them (see backup-format.ts): every
 * byte but the image's. A file that is not an intact backup is CorruptBackupError (exit 2).
 * Read-only: it runs under --dry-run too.
 */
export async function readBackup(runner: Runner, file: string): Promise<BackupFile> {
  if (!(await hostFileExists(runner, file))) throw new BadInputError(`no such backup file: ${file}`, 'ivm backup list NAME shows the backups of a machine');
  const bytes = await hostFileBytes(runner, file);
  if (bytes < 5 * BLOCK) throw new CorruptBackupError(file, `it is ${bytes} bytes long`);
  const listed = await runner.run(listCommand(file), { allowFailure: true }).catch((error: unknown) => {
    // tar exits 0 but warns about a damaged block after the end: the runner's check of its stderr.
    if (error instanceof CommandFailedError) throw new CorruptBackupError(file, `tar found a damaged block (${lastLine(error.stderrTail)})`);
    throw error;
  });
  if (listed.exitCode !== 0) throw new CorruptBackupError(file, `tar cannot read it (${firstLine(listed.stderr) || `exit ${listed.exitCode}`})`);
  const layout = parseLayout(file, listed.stdout, bytes);
  const handle = await openInProcess(runner, file);
  try {
    const small = async (member: Member): Promise<Buffer> =>
      handle ? readRange(handle, dataOffset(member), member.bytes) : Buffer.from((await runner.run({ ...rangeCommand(file, dataOffset(member), member.bytes), secretOutput: true })).stdout, 'utf8');
    const sums = parseSums(file, (await small(layout.sums)).toString('utf8'));
    const manifestBytes = await small(layout.manifest);
    if (manifestBytes.length !== layout.manifest.bytes || sha256(manifestBytes) !== sums.manifest) throw new CorruptBackupError(file, `its ${MANIFEST} does not match its checksum`);
    const manifest = parseManifest(file, manifestBytes.toString('utf8'), layout.image.bytes);
    if (manifest.image.sha256 !== sums.image) throw new CorruptBackupError(file, `its manifest and ${SUMS} name different images`);
    return { file, layout, manifest };
  } finally {
    await handle?.close();
  }
}

/**
 * Checks every byte of a backup (readBackup, then the image's checksum, read in place) and returns
 * it. Read-only: it runs under --dry-run too.
 */
export async function verifyBackup(runner: Runner, file: string): Promise<BackupFile> {
  const backup = await readBackup(runner, file);
  const { image } = backup.layout;
  const digest = await runner.progress.step(`checksum ${path.basename(file)} (sha256 of ${image.bytes} bytes)`, () => hostRangeSha256(runner, file, dataOffset(image), image.bytes));
  if (digest !== backup.manifest.image.sha256) throw new CorruptBackupError(file, `its ${IMAGE} does not match its checksum`);
  return backup;
}

/**
 * Copies the image of a backup into the folder `dir` (which must exist, new and private: 0700) as
 * dir/var.qcow2, made 0600 before a byte is in it, and checks it: its length, its checksum, then
 * what qemu-img says of it (checkImage). Where ivm may read the backup, it opens it once, hashes the
 * member from that open file while dd copies from the same open file (its standard input), so the
 * copy is of the bytes checked; else dd copies by path and the copy itself is checksummed. Returns
 * the image; on any failure the caller removes `dir`.
 */
export async function unpackImage(runner: Runner, backup: BackupFile, dir: string): Promise<string> {
  const image = path.join(dir, IMAGE);
  const member = backup.layout.image;
  const made: Command[] = [
    { tool: 'truncate', args: ['-s', '0', '--', image], mutates: true },
    { tool: 'chmod', args: ['0600', image], mutates: true },
  ];
  for (const command of made) await runner.run(command);
  const handle = runner.dryRun ? undefined : await openInProcess(runner, backup.file);
  try {
    const digest = await runner.progress.step(`copy the image out and checksum it (sha256 of ${member.bytes} bytes)`, async () => {
      if (!handle) {
        await runner.run(rangeCommand(backup.file, dataOffset(member), member.bytes, image));
        return runner.dryRun ? backup.manifest.image.sha256 : hostRangeSha256(runner, image, 0, member.bytes);
      }
      // Both at once (two cores), of one open file: dd copies the member, ivm hashes it.
      const copy = rangeCommand({ fd: handle.fd }, dataOffset(member), member.bytes, image);
      const [copied, hashed] = await Promise.allSettled([runner.run(copy), hashRange(handle, dataOffset(member), member.bytes)]);
      if (copied.status === 'rejected') throw copied.reason;
      if (hashed.status === 'rejected') throw hashed.reason;
      return hashed.value;
    });
    if (!runner.dryRun && (await hostFileBytes(runner, image)) !== member.bytes) throw new CorruptBackupError(backup.file, `its ${IMAGE} could not be read whole (was it cut short meanwhile?)`);
    if (digest !== backup.manifest.image.sha256) throw new CorruptBackupError(backup.file, `its ${IMAGE} does not match its checksum`);
  } finally {
    await handle?.close();
  }
  if (!runner.dryRun) await checkImage(runner, backup, image);
  return image;
}

/** Where a restore unpacks the image for the VM with these paths: a private folder beside its /var disk, hidden. */
export function unpackFolder(paths: VmPaths): string {
  return path.join(path.dirname(paths.var), `.${path.basename(paths.var)}.restore`);
}

export function removeTreeCommand(dir: string): Command {
  return { tool: 'rm', args: ['-r', '-f', '--', dir], mutates: true };
}

const lastLine = (text: string) => text.trim().split('\n').pop()?.replace(/^tar: /, '') ?? '';
const firstLine = (text: string) => text.trim().split('\n')[0]?.replace(/^tar: /, '') ?? '';

/**
 * Checks an unpacked image before it becomes a /var disk: a qcow2 of the manifest's virtual size
 * that names no backing file and no external data file (either would make QEMU read another file of
 * the host's). A backup ivm made passes; one made by other means may not.
 */
async function checkImage(runner: Runner, backup: BackupFile, image: string): Promise<void> {
  const info = await imageInfo(runner, image);
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

// ivm backup create | list | restore: a VM's /var disk in one self-contained file (format:
// backup-format.ts), made from the stopped VM, checked byte for byte before anything is restored
// from it.
//
// create: in a private staging folder in the backup folder (.NAME-TIME.ivm-backup.partial, 0700), the
// backup file is made 0600 before anything is written to it (it holds the host's private key, as the
// /var disk does). The disk is copied compressed (qemu-img convert -c; zstd where qemu has it)
// straight into that file, where the image member's data begins (qemu-img writes through a window of
// the file: the image is written once, never copied again); the tar headers, the manifest and the
// checksums are then written around it, tar reads the whole archive back, and only the complete file
// is linked to its name (ln without -f: a file of that name is never replaced). A failed run removes
// its staging folder; a killed one leaves it, and the next backup of the machine into that folder
// removes it.
//
// restore: nothing changes before every byte of the file is checked. The image member is copied out
// (dd of its byte range, checksummed as it is read) into a private folder beside the /var disk, as a
// new file made 0600 first; the disk it replaces keeps a second name
// (NAME-var.qcow2.before-restore-TIME), the new one is renamed over the old name, and /var/identity,
// the boot overlay and the domain are brought in line (resyncVarDisk). A failure at any step puts
// the old disk back at its name; the kept name is never deleted by ivm.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, IvmError, RefusedError } from '../../errors.ts';
import packageJson from '../../../package.json' with { type: 'json' };
import { removeCommand } from '../../host/files.ts';
import { imageInfo } from '../../host/qemu-img.ts';
import type { Command, Runner } from '../../host/runner.ts';
import { isInside, requireBaseInBaseDir } from '../base/base-dir.ts';
import { buildBase, lastBuiltBase } from '../base/build.ts';
import type { Context } from '../context.ts';
import { requireIdentity } from '../identity/identity.ts';
import { withVmLock } from '../lock.ts';
import { loadMachine, sizeInBytes } from '../machine/machine.ts';
import { validateMachineName } from '../machine/names.ts';
import { executePlan, type Step } from '../plan.ts';
import { kindOf, UnsafeFileError } from '../safe-files.ts';
import { isRunning, ownDomainState } from '../vm/running.ts';
import { isSourceFileName, machineSourceOf, newVmFrom, prepareNewName, whileStopped, type MachineSource, modeOf } from '../vm/clone.ts';
import { resyncVarDisk } from '../vm/upgrade.ts';
import { backingOf } from './boot-overlay.ts';
import { vmPaths, type VmPaths } from './vm-paths.ts';
import { hostFile, hostFileExists, sameHostFile } from './vm-files.ts';
import {
  BACKUP_SUFFIX,
  BLOCK,
  CorruptBackupError,
  IMAGE,
  MANIFEST,
  SUMS,
  backupBytes,
  backupFileName,
  manifestBlocksFor,
  manifestText,
  MAX_MANIFEST_BYTES,
  sha256,
  sumsText,
  tarHeader,
  timeStamp,
  type BackupEntry,
  type BackupManifest,
} from './backup-format.ts';
import { hostFileBytes, hostRangeSha256, readBackup, removeTreeCommand, unpackFolder, unpackImage, verifyBackup, zstdSupported, type BackupFile } from './backup-io.ts';

// ---------------------------------------------------------------------------------------------
// The backup folder

interface BackupFolder {
  dir: string;
  /** The folders `mkdir -p` makes (outermost first): removed again when the backup fails. */
  made: string[];
}

/**
 * The folder a backup goes into, checked before anything is done: not a link or a file, not inside
 * IVM_BASE_DIR (QEMU may read all of it, and host setup makes its files world-readable) or machines/, and
 * writable by the tools (asked of the host with test -w: as root, a read-only or immutable folder).
 */
async function backupFolder(ctx: Context, dir: string): Promise<BackupFolder> {
  // Compared on the canonical paths too: a folder reached through a link may be the base folder itself.
  const same = (a: string, b: string) => a === b || (fs.existsSync(a) && fs.existsSync(b) && fs.realpathSync(a) === fs.realpathSync(b));
  if (same(dir, ctx.settings.baseDir) || isInside(ctx.settings.baseDir, dir)) {
    throw new BadInputError(`${dir} is inside IVM_BASE_DIR (${ctx.settings.baseDir}): backups hold host private keys and never go where QEMU may read everything`, 'give another folder with --to');
  }
  // The flake copies what git tracks in machines/ into the world-readable Nix store.
  if (same(dir, ctx.project.machinesDir) || isInside(ctx.project.machinesDir, dir)) {
    throw new BadInputError(`${dir} is inside ${ctx.project.machinesDir}: a backup holds the host private key, and never goes where the flake reads`, 'give another folder with --to');
  }
  const made: string[] = [];
  let at = dir;
  for (;;) {
    const { kind } = await hostFile(ctx.runner, at);
    if (kind === 'folder') break;
    if (kind !== 'missing') throw new UnsafeFileError(at, kind === 'link' ? 'a symbolic link' : kind === 'file' ? 'a file' : 'a special file', 'folder');
    made.unshift(at);
    if (path.dirname(at) === at) break;
    at = path.dirname(at);
  }
  const writable = await ctx.runner.run({ tool: 'test', args: ['-w', at, '-a', '-x', at], mutates: false }, { allowFailure: true });
  if (writable.exitCode !== 0) {
    throw new IvmError(`cannot write into ${at}${made.length > 0 ? ` (to make ${dir})` : ''}: it is not writable (read-only, immutable, or not the tools' to write); nothing was changed`, {
      exitCode: 4,
      hint: 'give another folder with --to, or make this one writable',
    });
  }
  return { dir, made };
}

/** Staging folders an interrupted backup of this machine left in the folder (hidden, 0700): the next backup removes them. */
function leftoverPartials(folder: BackupFolder, name: string): string[] {
  if (folder.made.length > 0 || kindOf(folder.dir) !== 'folder') return [];
  const pattern = new RegExp(`^\\.${name.replace(/-/g, '\\-')}-\\d{8}T\\d{6}Z\\${BACKUP_SUFFIX}\\.partial$`);
  return fs
    .readdirSync(folder.dir)
    .filter((entry) => pattern.test(entry))
    .map((entry) => path.join(folder.dir, entry));
}

// ---------------------------------------------------------------------------------------------
// ivm backup create

export interface BackupOptions {
  /** The folder (default: IVM_VM_DIR/backups/NAME). */
  to?: string;
  stop: boolean;
  timeoutSeconds: number;
}

/** Backs up NAME's /var disk; returns the file (undefined under --dry-run). */
export async function createBackup(ctx: Context, name: string, options: BackupOptions): Promise<string | undefined> {
  validateMachineName(name);
  return withVmLock(ctx, name, 'backup', async () => {
    const machine = await loadMachine(ctx.runner, ctx.project, name);
    const machineId = requireIdentity(machine.dir, name);
    const paths = vmPaths(ctx.settings, ctx.project, name);
    if (!(await hostFileExists(ctx.runner, paths.var))) throw new RefusedError(`${name} has no /var disk (${paths.var}): there is nothing to back up`);
    const folder = await backupFolder(ctx, path.resolve(options.to ?? paths.backupDir));
    const source = machineSourceOf(ctx, name);
    const base = (await backingOf(ctx.runner, paths.boot)) ?? null;
    return whileStopped(ctx, name, machineId, { stop: options.stop, timeoutSeconds: options.timeoutSeconds, verb: 'backup' }, () =>
      backupStopped(ctx, { name, machineId, paths, folder, source, base }),
    );
  });
}

interface BackupJob {
  name: string;
  machineId: string;
  paths: VmPaths;
  folder: BackupFolder;
  source: MachineSource;
  base: string | null;
}

/** A qemu image-opts value holding a file name: commas doubled (QEMU's escape), so no name adds an option. */
const optValue = (value: string): string => value.replace(/,/g, ',,');

async function backupStopped(ctx: Context, job: BackupJob): Promise<string | undefined> {
  const { runner } = ctx;
  let now = new Date();
  // A backup of this machine made within the same second (the VM's lock is held: it was finished):
  // this one takes the next second's name rather than refusing.
  if (await hostFileExists(runner, path.join(job.folder.dir, backupFileName(job.name, now)))) {
    await new Promise((resolve) => setTimeout(resolve, 1000 - (now.getTime() % 1000) + 5));
    now = new Date();
  }
  const mtime = Math.floor(now.getTime() / 1000);
  const file = path.join(job.folder.dir, backupFileName(job.name, now));
  if (await hostFileExists(runner, file)) throw new RefusedError(`${file} exists: a backup is never replaced; nothing was changed`, 'check the clock (a backup of this name is from the future), or back up into another folder (--to DIR)');
  const partial = path.join(job.folder.dir, `.${path.basename(file)}.partial`);
  const fresh = path.join(partial, IMAGE);
  const out = path.join(partial, 'backup.tar');
  const virtualSize = (await imageInfo(runner, job.paths.var))['virtual-size'];
  const zstd = await zstdSupported(runner);
  const compression = zstd ? 'zstd' : 'zlib';
  const manifestOf = (image: { sha256: string; bytes: number }): BackupManifest => ({
    format: 'ivm-backup',
    formatVersion: 1,
    machine: job.name,
    machineId: job.machineId,
    base: job.base,
    varVirtualSize: virtualSize,
    image: { file: IMAGE, ...image, compression },
    ivmVersion: packageJson.version,
    createdAt: now.toISOString(),
    files: job.source.files.map((f) => ({ name: f.name, mode: `0${(f.mode & 0o777).toString(8)}`, base64: f.content.toString('base64') })),
  });
  // The manifest's room is known now, so the image's place is: qemu-img writes it straight there.
  const manifestBytes = manifestBlocksFor(manifestOf({ sha256: '', bytes: 0 }));
  if (manifestBytes > MAX_MANIFEST_BYTES) {
    throw new BadInputError(`the files of machines/${job.name} that a backup carries come to ${manifestBytes} bytes, more than a backup's manifest may hold (${MAX_MANIFEST_BYTES}); nothing was changed`, 'keep meta.nix, default.nix and the identity files small (they are text)');
  }
  const imageAt = BLOCK + manifestBytes + BLOCK;
  const leftovers = leftoverPartials(job.folder, job.name);
  const madeFolders: Command | undefined = job.folder.made.length > 0 ? { tool: 'rm', args: ['-d', '--', ...[...job.folder.made].reverse()], mutates: true } : undefined;
  const stage: Step[] = [
    ...leftovers.map((l): Step => ({ kind: 'run', title: `remove what an interrupted backup left (${path.basename(l)})`, command: removeTreeCommand(l) })),
    ...(madeFolders ? [{ kind: 'run' as const, title: `make the backup folder ${job.folder.dir}`, command: { tool: 'mkdir' as const, args: ['-p', '--', job.folder.dir], mutates: true }, undo: madeFolders }] : []),
    // Private, and new: mkdir without -p fails if anything is there, so nothing planted is used.
    { kind: 'run', title: 'a private staging folder', command: { tool: 'mkdir', args: ['-m', '0700', '--', partial], mutates: true }, undo: removeTreeCommand(partial) },
    { kind: 'run', title: 'the backup file, empty', command: { tool: 'truncate', args: ['-s', '0', '--', out], mutates: true } },
    // 0600 before anything is written: the backup holds the host's private key.
    { kind: 'run', title: 'mode 0600', command: { tool: 'chmod', args: ['0600', out], mutates: true } },
    { kind: 'run', title: `an empty compressed image (${compression})`, command: { tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', ...(zstd ? ['-o', 'compression_type=zstd'] : []), fresh, String(virtualSize)], mutates: true } },
    { kind: 'run', title: 'mode 0600', command: { tool: 'chmod', args: ['0600', fresh], mutates: true } },
    { kind: 'run', title: `put it where the image member's data begins (byte ${imageAt})`, command: { tool: 'dd', args: [`if=${fresh}`, `of=${out}`, 'bs=64K', 'oflag=seek_bytes', `seek=${imageAt}`, 'conv=notrunc', 'status=none'], mutates: true } },
    {
      kind: 'run',
      title: `copy ${job.name}'s /var into it, compressed (qemu-img convert -c, through a window of the backup file)`,
      command: {
        tool: 'qemu-img',
        args: ['convert', '-q', '-n', '-c', '--target-is-zero', '-f', 'qcow2', job.paths.var, '--target-image-opts', `driver=qcow2,file.driver=raw,file.offset=${imageAt},file.file.driver=file,file.file.filename=${optValue(out)}`],
        mutates: true,
      },
    },
  ];
  // A failure once staging began: the staging folder, and the folders this run made, go again.
  const failed = async (error: unknown): Promise<never> => {
    const cleanup: Step[] = [
      { kind: 'run', title: 'remove the staging folder', command: removeTreeCommand(partial) },
      ...(madeFolders ? [{ kind: 'run' as const, title: 'remove the folders it made', command: madeFolders }] : []),
    ];
    if (!runner.dryRun) await executePlan(runner, { title: 'remove what the failed backup made', steps: cleanup }, () => undefined).catch(() => undefined);
    throw error;
  };
  await executePlan(runner, { title: `backup ${job.name}: the image`, steps: stage }, ctx.say);
  try {
    // Whole blocks: the member then needs no padding of tar's (every byte of the backup is checked).
    const written = runner.dryRun ? imageAt : await hostFileBytes(runner, out);
    const imageBytes = Math.ceil((written - imageAt) / BLOCK) * BLOCK;
    if (!runner.dryRun && imageBytes <= 0) throw new IvmError(`internal: qemu-img wrote no image into ${out} (please report it, with qemu-img --version)`);
    // Under --dry-run the sizes are not known: placeholders, never a command that would do harm if pasted.
    const imageEnd = runner.dryRun ? '<the end of the image, rounded up to 512 bytes>' : String(imageAt + imageBytes);
    const pad: Step[] = [{ kind: 'run', title: 'pad the image to whole 512-byte blocks', command: { tool: 'truncate', args: ['-s', imageEnd, '--', out], mutates: true } }];
    await executePlan(runner, { title: `backup ${job.name}: the image's end`, steps: pad }, ctx.say);
    const imageSha = runner.dryRun ? '0'.repeat(64) : await runner.progress.step(`checksum the image (sha256 of ${imageBytes} bytes)`, () => hostRangeSha256(runner, out, imageAt, imageBytes));
    const mText = manifestText(manifestOf({ sha256: imageSha, bytes: imageBytes }), manifestBytes);
    const sText = sumsText(sha256(mText), imageSha);
    const total = backupBytes(manifestBytes, imageBytes, Buffer.byteLength(sText));
    // The headers ivm writes are GNU tar's (backup-format.ts, tested against tar); tar reads them back below.
    const head = Buffer.concat([tarHeader(MANIFEST, manifestBytes, mtime), Buffer.from(mText), tarHeader(IMAGE, imageBytes, mtime)]);
    if (head.length !== imageAt) throw new IvmError(`internal: the backup's headers are ${head.length} bytes, not the ${imageAt} before the image (please report it)`);
    const tail = Buffer.concat([tarHeader(SUMS, Buffer.byteLength(sText), mtime), Buffer.from(sText), Buffer.alloc(2 * BLOCK)]);
    const pack: Step[] = [
      // Under --dry-run the manifest is not shown: it carries the files of machines/NAME (a password hash among them).
      { kind: 'run', title: `the manifest (${MANIFEST}) and the headers, before the image`, command: { tool: 'dd', args: [`of=${out}`, 'bs=64K', 'conv=notrunc', 'status=none'], input: head, secretInput: true, mutates: true } },
      {
        kind: 'run',
        // fsync: all of the file (what qemu-img wrote too) is on the disk before ivm says the backup is made.
        title: `the checksums (${SUMS}) and the end of the archive, after it; all of it flushed to the disk`,
        command: { tool: 'dd', args: [`of=${out}`, 'bs=64K', 'oflag=seek_bytes', `seek=${imageEnd}`, 'conv=notrunc,fsync', 'status=none'], input: tail, mutates: true },
      },
      { kind: 'run', title: 'the staged empty image goes', command: removeCommand(fresh) },
    ];
    await executePlan(runner, { title: `backup ${job.name}: the file`, steps: pack }, ctx.say);
    // Before it gets its name: the archive is laid out exactly as a restore will check it.
    if (!runner.dryRun) await checkPacked(runner, out, total, imageSha);
    const link: Step[] = [
      { kind: 'run', title: `give it its name, never replacing a file (${path.basename(file)})`, command: { tool: 'ln', args: ['-T', out, file], mutates: true }, undo: removeCommand(file) },
      { kind: 'run', title: 'remove the staging folder', command: removeTreeCommand(partial) },
      // The new name on the disk too: after a power cut the backup is there whole, or not at all.
      { kind: 'run', title: 'flush the backup folder to the disk', command: { tool: 'sync', args: ['--', job.folder.dir], mutates: true } },
    ];
    await executePlan(runner, { title: `backup ${job.name}: in place`, steps: link }, ctx.say);
    if (runner.dryRun) return undefined;
    ctx.say(`backup of ${job.name}: ${file} (${total} bytes, ${compression}; image sha256 ${imageSha}; base ${job.base ?? 'none'})`);
    return file;
  } catch (error) {
    return failed(error);
  }
}

/**
 * The archive is an intact backup as a restore reads it, before it gets its name: tar lists it (every
 * header, the layout, the length), and its manifest and SHA256SUMS are read back from the file and
 * checked (readBackup). The image was checksummed from the file itself.
 */
async function checkPacked(runner: Runner, out: string, total: number, imageSha: string): Promise<void> {
  let backup: BackupFile;
  try {
    backup = await readBackup(runner, out);
  } catch (error) {
    if (!(error instanceof CorruptBackupError)) throw error;
    throw new IvmError(`internal: the backup written to ${out} does not read back as one (${error.message}) (please report it, with tar --version)`);
  }
  if (backup.layout.bytes !== total) throw new IvmError(`internal: the backup written to ${out} is ${backup.layout.bytes} bytes, not ${total} (please report it)`);
  if (backup.manifest.image.sha256 !== imageSha) throw new IvmError(`internal: the backup written to ${out} names another image checksum (please report it)`);
}

// ---------------------------------------------------------------------------------------------
// ivm backup list

/** A backup file of NAME, as create names them. */
function isBackupOf(name: string, entry: string): boolean {
  return entry.startsWith(`${name}-`) && /^\d{8}T\d{6}Z$/.test(entry.slice(name.length + 1, -BACKUP_SUFFIX.length)) && entry.endsWith(BACKUP_SUFFIX);
}

/** NAME's backups in the folder, oldest first, each checked byte for byte. Read-only. */
export async function listBackups(ctx: Context, name: string, options: { in?: string }): Promise<{ dir: string; entries: BackupEntry[] }> {
  validateMachineName(name);
  const dir = path.resolve(options.in ?? vmPaths(ctx.settings, ctx.project, name).backupDir);
  const kind = kindOf(dir);
  if (kind === 'missing') return { dir, entries: [] };
  if (kind !== 'folder') throw new UnsafeFileError(dir, kind === 'link' ? 'a symbolic link' : 'a file', 'folder');
  const entries: BackupEntry[] = [];
  for (const entry of fs.readdirSync(dir).filter((e) => isBackupOf(name, e)).sort()) {
    const file = path.join(dir, entry);
    const bytes = await hostFileBytes(ctx.runner, file).catch(() => 0);
    try {
      const { manifest: m } = await verifyBackup(ctx.runner, file);
      entries.push({
        file,
        bytes,
        ok: true,
        machine: m.machine,
        machineId: m.machineId,
        createdAt: m.createdAt,
        base: m.base,
        varVirtualSize: m.varVirtualSize,
        imageSha256: m.image.sha256,
        compression: m.image.compression,
        ivmVersion: m.ivmVersion,
      });
    } catch (error) {
      // Only what is wrong with the file itself; a missing tool or a host error stops the listing.
      if (!(error instanceof BadInputError)) throw error;
      entries.push({ file, bytes, ok: false, problem: error.message.replace(/^.* is not an intact ivm backup: /, '').replace(/; nothing was changed$/, '') });
    }
  }
  return { dir, entries };
}

// ---------------------------------------------------------------------------------------------
// ivm backup restore

export interface RestoreOptions {
  /** Restore into a new machine of this name (new identity) instead of onto NAME. */
  as?: string;
  build: boolean;
  warn?: (line: string) => void;
}

/**
 * The backup file: FILE as given (relative to the working folder); a bare file name that is not
 * there is looked for in NAME's backup folder too (what `ivm backup list` shows).
 */
async function backupFile(ctx: Context, name: string, file: string): Promise<string> {
  const given = path.resolve(file);
  if (file.includes('/') || (await hostFile(ctx.runner, given)).kind !== 'missing') return given;
  const inFolder = path.join(vmPaths(ctx.settings, ctx.project, name).backupDir, file);
  return (await hostFile(ctx.runner, inFolder)).kind === 'missing' ? given : inFolder;
}

export async function restoreBackup(ctx: Context, name: string, fileArgument: string, options: RestoreOptions): Promise<void> {
  validateMachineName(name);
  if (options.as !== undefined) validateMachineName(options.as);
  const file = await backupFile(ctx, name, fileArgument);
  const warn = options.warn ?? ((line: string) => void process.stderr.write(`${line}\n`));
  if (options.as !== undefined) {
    const target = options.as;
    return withVmLock(ctx, target, 'restore', () => restoreAs(ctx, name, file, target, options.build, warn));
  }
  return withVmLock(ctx, name, 'restore', () => restoreOnto(ctx, name, file, options.build));
}

const wantedBytes = (varSize: string) => Math.ceil(sizeInBytes(varSize) / 512) * 512;

/**
 * The backup's image unpacked and checked for the VM with `paths` (unpackImage), in a private folder
 * beside its /var disk: first what an interrupted restore left goes (that folder, and `leftovers`),
 * always as one step, so that every run counts its changes alike. A failure removes the folder again:
 * a backup that does not check out changes nothing.
 */
async function stageImage(ctx: Context, backup: BackupFile, name: string, paths: VmPaths, leftovers: string[]): Promise<string> {
  const dir = unpackFolder(paths);
  const { kind } = await hostFile(ctx.runner, dir);
  if (kind !== 'missing' && kind !== 'folder') throw new UnsafeFileError(dir, kind === 'link' ? 'a symbolic link' : 'not a folder', 'folder');
  const steps: Step[] = [
    { kind: 'run', title: 'make the VM folder', command: { tool: 'mkdir', args: ['-p', ctx.settings.vmDir], mutates: true } },
    { kind: 'run', title: 'clear what an interrupted restore left', command: { tool: 'rm', args: ['-r', '-f', '--', dir, ...leftovers], mutates: true } },
    // Private, and new: the image holds the host's private key.
    { kind: 'run', title: 'a private folder to unpack the image into', command: { tool: 'mkdir', args: ['-m', '0700', '--', dir], mutates: true }, undo: removeTreeCommand(dir) },
  ];
  await executePlan(ctx.runner, { title: `restore ${name}: unpack the backup`, steps }, ctx.say);
  try {
    return await unpackImage(ctx.runner, backup, dir);
  } catch (error) {
    if (!ctx.runner.dryRun) await ctx.runner.run(removeTreeCommand(dir)).catch(() => undefined);
    throw error;
  }
}

/** The backup: under --dry-run checked whole (read-only), else its structure (the image is checked as it is unpacked). */
const backupToRestore = (ctx: Context, file: string): Promise<BackupFile> => (ctx.runner.dryRun ? verifyBackup(ctx.runner, file) : readBackup(ctx.runner, file));

/** Onto the machine it is a backup of: the same machine-id, the VM stopped or undefined. */
async function restoreOnto(ctx: Context, name: string, file: string, build: boolean): Promise<void> {
  const { runner } = ctx;
  const backup = await backupToRestore(ctx, file);
  const { manifest } = backup;
  if (kindOf(path.join(ctx.project.machinesDir, name, 'meta.nix')) === 'missing') {
    throw new BadInputError(`unknown machine ${JSON.stringify(name)}: machines/${name}/meta.nix does not exist`, `to make a new machine of the backup of ${manifest.machine}: ivm backup restore ${manifest.machine} ${file} --as ${name}`);
  }
  const machine = await loadMachine(runner, ctx.project, name);
  const machineId = requireIdentity(machine.dir, name);
  if (manifest.machineId !== machineId) {
    throw new RefusedError(
      `${file} is a backup of ${manifest.machine} (machine-id ${manifest.machineId}), not of ${name} (machine-id ${machineId}): nothing was changed`,
      `restore it as a new machine with its own identity: ivm backup restore ${manifest.machine} ${file} --as NEW`,
    );
  }
  const paths = vmPaths(ctx.settings, ctx.project, name);
  const refuseRunning = (state: string) => {
    if (isRunning(state)) throw new RefusedError(`${name} is ${state}: a restore replaces its /var disk, so it must be shut off; nothing was changed`, `stop it first: ivm stop ${name}`);
  };
  refuseRunning(await ownDomainState(ctx, name, machineId));
  if (wantedBytes(machine.meta.varSize) < manifest.varVirtualSize) {
    throw new RefusedError(
      `disk too small: the backed-up /var disk is ${manifest.varVirtualSize} bytes, more than ${name}'s varSize (${machine.meta.varSize}); nothing was changed`,
      `raise varSize in ${machine.metaFile} to at least ${Math.ceil(manifest.varVirtualSize / 1024 / 1024)}M`,
    );
  }
  const current = await backingOf(runner, paths.boot);
  const base = current !== undefined && (await hostFileExists(runner, current)) ? current : build ? (await buildBase(ctx, name)).base : await lastBuiltBase(ctx, name);
  requireBaseInBaseDir(ctx.settings, base);
  // Asked again after a build, which may take long: the VM may have been started meanwhile.
  refuseRunning(await ownDomainState(ctx, name, machineId));

  const hadDisk = await hostFileExists(runner, paths.var);
  const kept = await keptName(ctx, paths);
  const image = await stageImage(ctx, backup, name, paths, hadDisk ? await keptNamesOfLiveDisk(ctx, paths) : []);
  ctx.say(`restore ${name} from ${file}: backed up ${manifest.createdAt} on base ${manifest.base ?? 'none'}; /var ${manifest.varVirtualSize} bytes; every byte checked`);
  const dir = path.dirname(image);
  const steps: Step[] = [
    ...(hadDisk
      ? [
          // The old disk keeps a second name (the same file: nothing is copied) before its name moves on.
          // No undo: if the move back below failed, removing this name could remove the old disk's only one;
          // a second name left over is harmless (the next restore clears it).
          { kind: 'run' as const, title: `keep the disk it replaces as ${path.basename(kept)}`, command: { tool: 'ln' as const, args: ['-T', paths.var, kept], mutates: true } },
          { kind: 'run' as const, title: 'put the restored disk in its place', command: move(image, paths.var), undo: move(kept, paths.var) },
        ]
      : [{ kind: 'run' as const, title: 'give it its name, never replacing a file', command: { tool: 'ln' as const, args: ['-T', image, paths.var], mutates: true }, undo: removeCommand(paths.var) }]),
    { kind: 'run', title: 'remove the unpack folder', command: removeTreeCommand(dir) },
  ];
  await executePlan(runner, { title: `restore ${name}: the /var disk`, steps }, ctx.say).catch(async (error: unknown) => {
    await runner.run(removeTreeCommand(dir)).catch(() => undefined);
    throw error;
  });
  if (runner.dryRun) {
    ctx.say(`# then: resync /var/identity with machines/${name} (guestfish), boot overlay on ${base}, define ${name}`);
    return;
  }
  try {
    await resyncVarDisk(ctx, name, { base, verb: 'restore' });
  } catch (failure) {
    // The disk it replaced goes back to its name (the restored one is a copy of the backup).
    let note: string;
    try {
      await runner.run(hadDisk ? move(kept, paths.var) : removeCommand(paths.var));
      note = hadDisk ? `the /var disk ${name} had is back at ${paths.var}` : 'the restored disk was removed again';
    } catch (undo) {
      note = `and putting the old disk back failed (${(undo as Error).message}): it is at ${kept}; move it back yourself: mv -T ${kept} ${paths.var}`;
    }
    throw withNote(failure, note);
  }
  ctx.say(`restored ${name} from ${path.basename(file)}${hadDisk ? `; the /var disk it replaced is kept as ${kept} (remove it once the restored VM works)` : ''}`);
}

/** The error, with a line saying what was put right after it. */
function withNote(failure: unknown, note: string): unknown {
  return failure instanceof IvmError ? new IvmError(`${failure.message}\n${note}`, { exitCode: failure.exitCode, hint: failure.hint }) : failure;
}

const move = (from: string, to: string): Command => ({ tool: 'mv', args: ['-f', '-T', from, to], mutates: true });

/**
 * A name for the disk a restore replaces, NAME-var.qcow2.before-restore-<UTC time>, that nothing
 * has (a restore in the same second, killed or not, may have taken the time: then -2, -3, ...).
 * hostFileExists refuses a link there, which ln would write through as root.
 */
async function keptName(ctx: Context, paths: VmPaths): Promise<string> {
  const stem = `${paths.var}.before-restore-${timeStamp(new Date())}`;
  for (let n = 1; ; n++) {
    const name = n === 1 ? stem : `${stem}-${n}`;
    if (!(await hostFileExists(ctx.runner, name))) return name;
  }
}

/**
 * The names NAME-var.qcow2.before-restore-* that are the live disk itself (a second name an
 * interrupted restore made before its switch): removing one loses nothing. A kept name of another
 * file is the old disk of a finished restore, and stays.
 */
async function keptNamesOfLiveDisk(ctx: Context, paths: VmPaths): Promise<string[]> {
  if (kindOf(ctx.settings.vmDir) !== 'folder') return [];
  const prefix = `${path.basename(paths.var)}.before-restore-`;
  const names = fs.readdirSync(ctx.settings.vmDir).filter((entry) => entry.startsWith(prefix)).map((entry) => path.join(ctx.settings.vmDir, entry));
  const same: string[] = [];
  for (const name of names) if ((await hostFileExists(ctx.runner, name)) && (await sameHostFile(ctx.runner, name, paths.var))) same.push(name);
  return same;
}

/** Into a new machine NEW made from the backup's files (clone.ts), with an identity of its own. */
async function restoreAs(ctx: Context, name: string, file: string, target: string, build: boolean, warn: (line: string) => void): Promise<void> {
  const backup = await backupToRestore(ctx, file);
  const { manifest } = backup;
  if (manifest.machine !== name) throw new BadInputError(`${file} is a backup of ${manifest.machine}, not of ${name}: nothing was changed`, `ivm backup restore ${manifest.machine} ${file} --as ${target}`);
  const source = sourceOfBackup(backup);
  const installed = manifest.base !== null && isInside(ctx.settings.baseDir, manifest.base) && (await hostFileExists(ctx.runner, manifest.base)) ? manifest.base : undefined;
  if (installed === undefined && !build) {
    throw new RefusedError(`the base ${name} ran when it was backed up (${manifest.base ?? 'none'}) is not installed here, and --no-build: ${target} would have no base; nothing was changed`, `drop --no-build: ${target} is built (ivm build ${target}) once machines/${target} is written`);
  }
  // NEW is checked (and what an unfinished run of it left removed) before the image is unpacked for it.
  await prepareNewName(ctx, target, 'restore');
  const paths = vmPaths(ctx.settings, ctx.project, target);
  const image = await stageImage(ctx, backup, target, paths, []);
  const dir = path.dirname(image);
  warn(`note: ${target} gets its own machine-id, hostname and host key; the secrets of ${name} on the backed-up /var are not restored into it (they are one VM's own)`);
  try {
    await newVmFrom(ctx, {
      name: target,
      verb: 'restore',
      source,
      diskSteps: (disk) => [
        { kind: 'run', title: 'give the restored disk its name, never replacing a file', command: { tool: 'ln', args: ['-T', image, disk], mutates: true }, undo: removeCommand(disk) },
        { kind: 'run', title: 'remove the unpack folder', command: removeTreeCommand(dir) },
      ],
      base: async () => installed ?? (await buildBase(ctx, target)).base,
      dryRunBase: installed ?? `the base ivm build ${target} makes`,
      warn,
    });
  } catch (error) {
    if (!ctx.runner.dryRun) await ctx.runner.run(removeTreeCommand(dir)).catch(() => undefined);
    throw error;
  }
  if (!ctx.runner.dryRun) ctx.say(`restored the backup of ${name} (${path.basename(file)}) as ${target}: /var ${paths.var}; machines/${target} has its own identity`);
}

/** The machine files a backup carries, for a new machine (only the names a machine may take). */
function sourceOfBackup(backup: BackupFile): MachineSource {
  const files = backup.manifest.files
    .filter((f) => isSourceFileName(f.name))
    // The mode a file of machines/ has (0644, or 0600 for a secret), never the one the manifest says.
    .map((f) => ({ name: f.name, mode: modeOf(f.name), content: Buffer.from(f.base64, 'base64') }));
  for (const needed of ['meta.nix', 'default.nix']) {
    if (!files.some((f) => f.name === needed)) throw new CorruptBackupError(backup.file, `its manifest carries no ${needed}`);
  }
  return { from: backup.manifest.machine, files };
}

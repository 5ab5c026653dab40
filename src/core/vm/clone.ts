// ivm clone SRC NEW, and what it shares with `ivm backup restore FILE --as NEW`: a new machine made
// from another one's files (machines/SRC, or the copy a backup carries) with an identity of its own,
// and a new VM on a copy of the other one's /var, its /identity rewritten for the new machine.
//
// A new VM is made in this order, each step only once the one before it succeeded:
//   1. a record that NEW is unfinished (.ivm/unfinished/NEW.json), before anything of NEW exists;
//   2. machines/NEW: the other's meta.nix (without its address: an address is one machine's) and
//      default.nix, the identity files that are not one machine's own (IDENTITY_FILE_POLICY), then
//      NEW's own machine-id, hostname, host key and known_hosts (ensureIdentity); the public files
//      staged with git, as `ivm new` does;
//   3. NEW's /var disk: made 0600 under a temporary name, the other /var copied into it (qemu-img
//      convert -n: internal snapshots are not copied), linked to its name without replacing anything;
//   4. /identity rewritten for NEW, boot overlay and domain (resyncVarDisk, newMachineId);
//   5. the record removed.
// If a step fails, everything of NEW this run made goes again (domain, disks, machines/NEW, the git
// index entries, the record): nothing of NEW is left. If the run is killed, the record stays, and
// the next clone or restore --as of NEW removes what is left of NEW first, then starts over: the
// record says that every part of NEW is this unfinished run's. The source is only ever read.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, IvmError, RefusedError } from '../../errors.ts';
import { evalJsonFile } from '../../host/nix.ts';
import type { Command } from '../../host/runner.ts';
import { removeCommand } from '../../host/files.ts';
import { domainInfo, virshCommand } from '../../host/virsh.ts';
import { backingOf } from '../disks/boot-overlay.ts';
import { imageInfo } from '../../host/qemu-img.ts';
import { lastBuiltBase } from '../base/build.ts';
import { requireBaseInBaseDir } from '../base/base-dir.ts';
import type { Context } from '../context.ts';
import { IDENTITY_FILES, KNOWN_HOSTS_FILE, SECRETS_FOLDER } from '../identity/identity-files.ts';
import { domainUuid, ensureIdentity, hasMachineId, machineIdFrom, requireIdentity } from '../identity/identity.ts';
import { withVmLock } from '../lock.ts';
import { loadMachine, machineDir, validateMeta } from '../machine/machine.ts';
import { validateMachineName } from '../machine/names.ts';
import { executePlan, type Step } from '../plan.ts';
import { createFileExclusive, ensureFolder, folderExists, kindOf, readRegularFile, readRegularText, regularFileExists, removeFile, UnsafeFileError, writeFileAtomic } from '../safe-files.ts';
import { vmPaths } from '../disks/vm-paths.ts';
import { existingHostFiles, hostFile, hostFileExists } from '../disks/vm-files.ts';
import { removeTreeCommand, unpackFolder } from '../disks/backup-io.ts';
import { existingParts } from './create.ts';
import { isRunning, ownDomainState, stopForChange } from './running.ts';
import { leftStopped, resyncVarDisk } from './upgrade.ts';

// ---------------------------------------------------------------------------------------------
// Which of a machine's files a new machine made from it takes

/**
 * Per identity file (identity-files.json): `copied` when it says who may log in, what the firewall
 * lets in, which DNS and CA to trust: the same for a copy of the machine; `own` when it is one
 * machine's: its machine-id, hostname and host key (made afresh), and network.conf (a static address:
 * two VMs on one address collide). known_hosts (made afresh from the new host key) and secrets/
 * (per-VM secrets, by definition) are never copied either. A file added to identity-files.json and not
 * listed here is not copied (a test checks that every file is listed).
 */
export const IDENTITY_FILE_POLICY: Readonly<Record<string, 'copied' | 'own'>> = {
  'machine-id': 'own',
  hostname: 'own',
  ssh_host_ed25519_key: 'own',
  'ssh_host_ed25519_key.pub': 'own',
  'resolv.conf': 'copied',
  hosts: 'copied',
  tcp_ports: 'copied',
  udp_ports: 'copied',
  admin_authorized_keys: 'copied',
  user_authorized_keys: 'copied',
  'network.conf': 'own',
  'ca-certs.pem': 'copied',
  admin_password_hash: 'copied',
};

export const COPIED_IDENTITY_FILES: readonly string[] = IDENTITY_FILES.filter((file) => IDENTITY_FILE_POLICY[file.name] === 'copied').map((file) => file.name);

/** The machine's own files a new machine takes, besides the identity files above. */
const MACHINE_FILES = ['meta.nix', 'default.nix'] as const;

/** A file a new machine is made from. */
export interface SourceFile {
  name: string;
  /** Permission bits (0644; 0600 for a secret such as admin_password_hash). */
  mode: number;
  content: Buffer;
}

/** What a new machine is made from: another machine's name (for messages) and its files. */
export interface MachineSource {
  from: string;
  files: SourceFile[];
}

export const modeOf = (name: string): number => (IDENTITY_FILES.find((f) => f.name === name)?.secret ? 0o600 : 0o644);

/** machines/SRC's files that a new machine takes (read now, each a regular file or refused). */
export function machineSourceOf(ctx: Context, name: string): MachineSource {
  const dir = machineDir(ctx.project, name);
  const files: SourceFile[] = [];
  for (const file of [...MACHINE_FILES, ...COPIED_IDENTITY_FILES]) {
    const at = path.join(dir, file);
    if (regularFileExists(at)) files.push({ name: file, mode: modeOf(file), content: readRegularFile(at) });
    else if ((MACHINE_FILES as readonly string[]).includes(file)) throw new BadInputError(`${at} is missing`, `a machine is its meta.nix and default.nix (README.md, "Machines")`);
  }
  return { from: name, files };
}

/** The names a source may carry (for a backup's manifest, which may come from anywhere). */
export function isSourceFileName(name: string): boolean {
  return (MACHINE_FILES as readonly string[]).includes(name) || COPIED_IDENTITY_FILES.includes(name);
}

/** What of the other machine stays behind, for the user. */
function leftBehind(ctx: Context, source: MachineSource): string[] {
  const notes: string[] = [];
  const from = path.join(ctx.project.machinesDir, source.from);
  if (kindOf(path.join(from, SECRETS_FOLDER)) === 'folder') notes.push(`machines/${source.from}/secrets/ is not copied (secrets are one VM's own): put what the new machine needs in its own secrets/ and run ivm upgrade on it`);
  if (kindOf(path.join(from, 'network.conf')) === 'file') notes.push(`machines/${source.from}/network.conf is not copied (a static address is one machine's)`);
  return notes;
}

// ---------------------------------------------------------------------------------------------
// Unfinished new machines

interface UnfinishedRecord {
  verb: string;
  from: string;
  pid: number;
  since: string;
  /** The files of machines/NEW this run writes (only these are removed again). */
  files: string[];
  /** NEW's machine-id once this run made it: a machines/NEW with another one is not this run's. */
  machineId?: string;
}

/** A file name of machines/NEW as the record may name it: one plain name, never a path. */
const RECORD_FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/;

const unfinishedFile = (ctx: Context, name: string) => path.join(ctx.project.stateDir, 'unfinished', `${name}.json`);

function readUnfinished(ctx: Context, name: string): UnfinishedRecord | undefined {
  const file = unfinishedFile(ctx, name);
  if (!regularFileExists(file)) return undefined;
  try {
    const value = JSON.parse(readRegularText(file)) as Partial<UnfinishedRecord>;
    const files = value.files;
    const plain = Array.isArray(files) && files.every((f) => typeof f === 'string' && RECORD_FILE_NAME.test(f));
    const id = value.machineId === undefined || (typeof value.machineId === 'string' && /^[0-9a-f]{32}$/.test(value.machineId));
    if (typeof value.verb === 'string' && typeof value.from === 'string' && plain && id) return value as UnfinishedRecord;
  } catch {
    /* not ivm's record */
  }
  throw new BadInputError(`${file} is not the record ivm writes of an unfinished new machine`, `remove it once you have checked what of ${name} exists`);
}

/** Every file of machines/NEW a new machine may be given (the ones it copies, and its own identity). */
function filesOfNew(source: MachineSource): string[] {
  const own = IDENTITY_FILES.filter((f) => f.kind === 'generated').map((f) => f.name);
  return [...new Set([...source.files.map((f) => f.name), ...own, KNOWN_HOSTS_FILE])];
}

/**
 * Removes what an unfinished new machine left (its domain, disks, XML, git index entries,
 * machines/NEW files and the record), and only that: a domain that is not the machine's, or one that
 * runs, is refused, as are files in machines/NEW the run did not write (the folder then stays).
 */
async function removeUnfinished(ctx: Context, name: string, record: UnfinishedRecord, options: { stale: boolean }): Promise<string[]> {
  const dir = path.join(ctx.project.machinesDir, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  if (options.stale) refuseLived(ctx, name, record, dir, await existingHostFiles(ctx.runner, [paths.nvram, paths.serialLog]));
  const steps: Step[] = [];
  const domain = await domainInfo(ctx.runner, name);
  if (domain !== undefined) {
    const ours = folderExists(dir) && hasMachineId(dir) && domain.uuid === domainUuid(machineIdFrom(dir));
    if (!ours) throw new RefusedError(`a libvirt domain ${name} exists that is not the unfinished ${record.verb} of ${name}'s: nothing was changed`, 'a VM of that name was made by other means: pick another name');
    if (isRunning(domain.state) || domain.managedSave) throw new RefusedError(`${name}, an unfinished ${record.verb}, is ${domain.managedSave ? 'saved (virsh managedsave)' : domain.state}: nothing was changed`, `stop it (ivm stop --force ${name}) and run the command again`);
    steps.push({ kind: 'run', title: `undefine ${name}`, command: virshCommand(ctx.runner, ['undefine', '--nvram', name], true) });
  }
  const disks = await existingHostFiles(ctx.runner, [paths.boot, `${paths.boot}.next`, paths.bootPrevious, `${paths.bootPrevious}.next`, paths.var, `${paths.var}.new`, paths.nvram, paths.serialLog]);
  if (disks.length > 0) steps.push({ kind: 'run', title: `remove ${name}'s disks`, command: removeCommand(...disks) });
  const unpacked = unpackFolder(paths);
  if ((await hostFile(ctx.runner, unpacked)).kind === 'folder') steps.push({ kind: 'run', title: `remove the image a restore unpacked for ${name}`, command: removeTreeCommand(unpacked) });
  const unstage = await unstageSteps(ctx, name, record.files);
  steps.push(...unstage);
  await executePlan(ctx.runner, { title: `remove what the unfinished ${record.verb} of ${name} left`, steps }, ctx.say);
  const removed = [...(domain ? [`domain ${name}`] : []), ...disks];
  if (regularFileExists(paths.xml)) {
    removeFile(paths.xml);
    removed.push(paths.xml);
  }
  if (folderExists(dir)) {
    for (const file of record.files) {
      const at = path.join(dir, file);
      if (regularFileExists(at)) removeFile(at);
    }
    const others = fs.readdirSync(dir);
    if (others.length > 0) {
      throw new RefusedError(
        `${dir} holds files the unfinished ${record.verb} of ${name} did not write (${others.join(', ')}): they were left as they are`,
        `remove ${dir} yourself, then run the command again`,
      );
    }
    fs.rmdirSync(dir);
    removed.push(dir);
  }
  removeFile(unfinishedFile(ctx, name));
  return removed;
}

/**
 * A record left by a killed run is trusted only while NEW is what that run left: a machines/NEW
 * whose machine-id the run did not make (or made before the record said so), or a VM that has been
 * started since (libvirt made its NVRAM, or its serial log exists: a clone never starts NEW before
 * it is done), is somebody's machine now, and nothing of it is removed.
 */
function refuseLived(ctx: Context, name: string, record: UnfinishedRecord, dir: string, lived: string[]): void {
  const file = unfinishedFile(ctx, name);
  const hint = `if ${name} is a machine you keep, remove the stale record ${file}; otherwise remove what is left of ${name} yourself`;
  if (folderExists(dir) && hasMachineId(dir) && machineIdFrom(dir) !== record.machineId) {
    throw new RefusedError(`machines/${name}/machine-id is not the one the unfinished ${record.verb} of ${name} made: nothing of ${name} was removed`, hint);
  }
  if (lived.length > 0) throw new RefusedError(`${name} has been started since its ${record.verb} was cut short (${lived.join(', ')} exist): nothing of ${name} was removed`, hint);
}

// ---------------------------------------------------------------------------------------------
// git

async function gitPaths(ctx: Context, name: string, files: readonly string[]): Promise<{ work: boolean; paths: string[] }> {
  const { gitState } = await import('../machine/new-machine.ts');
  if ((await gitState(ctx.runner, ctx.project.root)) !== 'work-tree') return { work: false, paths: [] };
  return { work: true, paths: files.map((file) => path.relative(ctx.project.root, path.join(ctx.project.machinesDir, name, file))) };
}

/** `git rm --cached` of the paths of machines/NEW that a run staged (an unfinished machine's entries go with its files). */
async function unstageSteps(ctx: Context, name: string, files: readonly string[]): Promise<Step[]> {
  const { work, paths } = await gitPaths(ctx, name, files);
  if (!work) return [];
  return [{ kind: 'run', title: `unstage machines/${name} from git`, command: { tool: 'git', args: ['-C', ctx.project.root, 'rm', '--cached', '-q', '--ignore-unmatch', '--', ...paths], mutates: true } }];
}

/** Stages exactly the public files, as `ivm new` does; warns when git would not ignore the private key. */
async function stagePublicFiles(ctx: Context, name: string, warn: (line: string) => void): Promise<string[]> {
  const { PUBLIC_FILES, SECRET_IDENTITY_FILES, gitAddCommand, gitIgnored } = await import('../machine/new-machine.ts');
  const { work, paths: wanted } = await gitPaths(ctx, name, PUBLIC_FILES);
  if (!work) {
    warn(`note: ${ctx.project.root} is not a git work tree: add machines/${name}'s public files to git before ivm build (git add -- ${PUBLIC_FILES.map((f) => `machines/${name}/${f}`).join(' ')})`);
    return [];
  }
  const secrets = (await gitPaths(ctx, name, SECRET_IDENTITY_FILES)).paths;
  const ignored = await gitIgnored(ctx.runner, ctx.project.root, [...wanted, ...secrets]);
  for (const secret of secrets.filter((s) => !ignored.includes(s))) {
    warn(`warning: git does not ignore ${secret} (the host private key): add \`machines/*/${path.basename(secret)}\` to .gitignore, so that no \`git add\` ever takes it`);
  }
  const staged = wanted.filter((p) => !ignored.includes(p));
  await ctx.runner.run(gitAddCommand(ctx.project.root, staged));
  return staged;
}

// ---------------------------------------------------------------------------------------------
// machines/NEW

/**
 * Writes the files of machines/NEW (the caller made the folder, empty) from `source`, never over
 * anything; evaluates its meta.nix (nix eval, as loadMachine does) and drops an address from it
 * (rewritten as `ivm new` writes one, and evaluated back); makes NEW's identity and stages the public
 * files. The caller removes it all on failure.
 */
async function writeMachine(ctx: Context, name: string, source: MachineSource, warn: (line: string) => void, onIdentity: () => void = () => undefined): Promise<void> {
  const { ADDRESS_KEYS, checkWrittenMeta, renderMeta } = await import('../machine/new-machine.ts');
  const dir = path.join(ctx.project.machinesDir, name);
  for (const file of source.files) createFileExclusive(path.join(dir, file.name), file.content, file.mode);
  const metaFile = path.join(dir, 'meta.nix');
  const raw = (await ctx.runner.progress.step(`evaluate ${metaFile} (nix eval)`, () => evalJsonFile(ctx.runner, metaFile))) as Record<string, unknown>;
  validateMeta(metaFile, raw);
  const dropped = ADDRESS_KEYS.filter((key) => raw[key] !== undefined);
  if (dropped.length > 0) {
    const values = { ...raw };
    for (const key of ADDRESS_KEYS) delete values[key];
    writeFileAtomic(metaFile, renderMeta(name, values));
    await checkWrittenMeta(ctx.runner, metaFile, { values, meta: validateMeta(metaFile, values) });
    warn(`note: ${metaFile} is ${source.from}'s without ${dropped.join(', ')} (an address is one machine's; set one there and run ivm net reserve ${name} or ivm upgrade ${name})`);
  }
  ensureIdentity(ctx, dir, name);
  onIdentity();
  await stagePublicFiles(ctx, name, warn);
}

// ---------------------------------------------------------------------------------------------
// A new VM from another one's /var

export interface NewVmSpec {
  name: string;
  /** The verb, in messages and the unfinished record: clone, restore. */
  verb: 'clone' | 'restore';
  source: MachineSource;
  /** The steps that put NEW's /var disk at `disk`, never over anything (each undone if a later one fails). */
  diskSteps: (disk: string) => Step[];
  /** The base NEW's boot overlay goes on; called once machines/NEW is written (it may build NEW). */
  base: () => Promise<string>;
  /** What the dry run says of the base. */
  dryRunBase: string;
  warn: (line: string) => void;
}

/**
 * Refuses a NEW that exists in any way (exit 3; a link or odd file at machines/NEW is exit 2), after
 * removing what an unfinished clone or restore --as of NEW left, saying so.
 */
export async function prepareNewName(ctx: Context, name: string, verb: string): Promise<void> {
  const record = readUnfinished(ctx, name);
  if (record) {
    ctx.say(`${name} is an unfinished ${record.verb} of ${record.from} (started ${record.since}, pid ${record.pid}): ${ctx.runner.dryRun ? 'a run would remove' : 'removing'} what it left first`);
    if (ctx.runner.dryRun) return;
    const removed = await removeUnfinished(ctx, name, record, { stale: true });
    if (removed.length > 0) ctx.say(`removed ${removed.join(', ')}`);
  }
  const dir = path.join(ctx.project.machinesDir, name);
  const kind = kindOf(dir);
  if (kind === 'link' || kind === 'other' || kind === 'file') throw new UnsafeFileError(dir, kind === 'link' ? 'a symbolic link' : kind === 'file' ? 'a file' : 'a special file', 'folder');
  if (kind === 'folder') throw new RefusedError(`machines/${name} already exists: nothing was changed`, `pick another name for the new machine (${verb} makes a new one)`);
  const { parts } = await existingParts(ctx, name, vmPaths(ctx.settings, ctx.project, name));
  if (parts.length > 0) {
    throw new RefusedError(
      `${name} already exists here, nothing was changed:\n${parts.map((p) => `  ${p}`).join('\n')}`,
      `pick another name, or remove them if they are leftovers (virsh undefine --nvram ${name}; rm the files)`,
    );
  }
}

/**
 * The steps of a new /var disk of `bytes` (the source disk's virtual size: resyncVarDisk grows it to
 * varSize) filled from another: made 0600 under a temporary name, linked to its own.
 */
function newDiskSteps(ctx: Context, disk: string, bytes: number, fill: { title: string; command: (target: string) => Command }): Step[] {
  const partial = `${disk}.new`;
  return [
    { kind: 'run', title: 'make the VM folder', command: { tool: 'mkdir', args: ['-p', ctx.settings.vmDir], mutates: true } },
    { kind: 'run', title: `/var disk of ${bytes} bytes`, command: { tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', partial, String(bytes)], mutates: true }, undo: removeCommand(partial) },
    // 0600 before anything is written: the copy holds the host's private key until /identity is rewritten.
    { kind: 'run', title: 'mode 0600', command: { tool: 'chmod', args: ['0600', partial], mutates: true } },
    { kind: 'run', title: fill.title, command: fill.command(partial) },
    { kind: 'run', title: 'give it its name, never replacing a file', command: { tool: 'ln', args: ['-T', partial, disk], mutates: true }, undo: removeCommand(disk) },
    { kind: 'run', title: 'drop the temporary name', command: removeCommand(partial) },
  ];
}

/** Makes NEW (see the top of this file). The caller holds NEW's lock (and the source's, for a clone). */
export async function newVmFrom(ctx: Context, spec: NewVmSpec): Promise<void> {
  const { name, verb } = spec;
  validateMachineName(name);
  await prepareNewName(ctx, name, verb);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  // The temporary name must not be a link: qemu-img and chmod would write through it as root.
  await existingHostFiles(ctx.runner, [`${paths.var}.new`]);
  for (const note of leftBehind(ctx, spec.source)) spec.warn(`note: ${note}`);
  const steps = spec.diskSteps(paths.var);
  if (ctx.runner.dryRun) {
    ctx.say(`# ${verb} ${name}: write machines/${name}/ (${spec.source.files.map((f) => f.name).join(', ')}; an address in meta.nix is left out), make its identity, git add its public files`);
    await executePlan(ctx.runner, { title: `${verb} ${name}: its /var disk`, steps }, ctx.say);
    ctx.say(`# then: rewrite /identity on it for ${name} (guestfish), boot overlay on ${spec.dryRunBase}, define ${name}`);
    return;
  }
  const record: UnfinishedRecord = { verb, from: spec.source.from, pid: process.pid, since: new Date().toISOString(), files: filesOfNew(spec.source) };
  ensureFolder(path.dirname(unfinishedFile(ctx, name)), 0o700);
  createFileExclusive(unfinishedFile(ctx, name), `${JSON.stringify(record)}\n`, 0o644);
  // The folder is made after the record (a run killed now leaves one that says whose the folder is),
  // and a folder that appeared meanwhile is not this run's: it is left alone, and so is the rest.
  const dir = path.join(ctx.project.machinesDir, name);
  try {
    fs.mkdirSync(dir, { mode: 0o755 });
  } catch (error) {
    removeFile(unfinishedFile(ctx, name));
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new RefusedError(`${dir} appeared meanwhile: it was left as it is, nothing was changed`);
    throw error;
  }
  try {
    // Once NEW's identity is made the record names its machine-id: a later run removes only a NEW that has it.
    await writeMachine(ctx, name, spec.source, spec.warn, () => {
      record.machineId = machineIdFrom(dir);
      writeFileAtomic(unfinishedFile(ctx, name), `${JSON.stringify(record)}\n`);
    });
    const base = await spec.base();
    requireBaseInBaseDir(ctx.settings, base);
    await executePlan(ctx.runner, { title: `${verb} ${name}: its /var disk`, steps }, ctx.say);
    await resyncVarDisk(ctx, name, { base, verb, newMachineId: true });
  } catch (failure) {
    throw await rolledBack(ctx, name, record, failure);
  }
  removeFile(unfinishedFile(ctx, name));
}

/** The error of a failed new VM, after everything of it was removed again (or why that failed too). */
async function rolledBack(ctx: Context, name: string, record: UnfinishedRecord, failure: unknown): Promise<unknown> {
  const error = failure instanceof IvmError ? failure : undefined;
  try {
    const removed = await removeUnfinished(ctx, name, record, { stale: false });
    const note = `nothing of ${name} is left${removed.length > 0 ? ` (removed ${removed.join(', ')})` : ''}`;
    return error ? new IvmError(`${error.message}\n${note}`, { exitCode: error.exitCode, hint: error.hint }) : failure;
  } catch (cleanup) {
    const why = cleanup instanceof Error ? cleanup.message : String(cleanup);
    const note = `and what was made of ${name} could not all be removed: ${why}; run the command again to remove it`;
    return error ? new IvmError(`${error.message}\n${note}`, { exitCode: error.exitCode, hint: error.hint }) : failure;
  }
}

// ---------------------------------------------------------------------------------------------
// A source VM stopped for the length of a change

/**
 * Runs `work` on a stopped VM. A running one is refused, unless `stop`: then it is shut down
 * gracefully (up to the timeout), and started again once `work` succeeded; after a failure it stays
 * off, and the error says so. A saved memory image is refused (ownDomainState).
 */
export async function whileStopped<T>(ctx: Context, name: string, machineId: string, options: { stop: boolean; timeoutSeconds: number; verb: string }, work: () => Promise<T>): Promise<T> {
  const state = await ownDomainState(ctx, name, machineId);
  const running = isRunning(state);
  if (running && !options.stop) {
    throw new RefusedError(`${name} is ${state}: ${options.verb} reads its /var disk only while it is shut off, so that the copy is consistent; nothing was changed`, `stop it first (ivm stop ${name}), or add --stop (shut it down gracefully, ${options.verb}, start it again)`);
  }
  if (running) await stopForChange(ctx, name, options.timeoutSeconds);
  let result: T;
  try {
    result = await work();
  } catch (error) {
    throw running ? leftStopped(error, name) : error;
  }
  if (running) {
    await ctx.runner.progress.step(`start ${name} again`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
    if (!ctx.runner.dryRun) ctx.say(`started ${name} again`);
  }
  return result;
}

/** Takes both VMs' locks, in sorted name order (so that two runs never wait for each other). */
export function withVmLocks<T>(ctx: Context, names: [string, string], verb: string, work: () => Promise<T>): Promise<T> {
  const [first, second] = [...names].sort() as [string, string];
  return withVmLock(ctx, first, verb, () => withVmLock(ctx, second, verb, work));
}

// ---------------------------------------------------------------------------------------------
// ivm clone

export interface CloneOptions {
  stop: boolean;
  start: boolean;
  timeoutSeconds: number;
}

export async function cloneVm(ctx: Context, source: string, name: string, options: CloneOptions, warn: (line: string) => void = (line) => void process.stderr.write(`${line}\n`)): Promise<void> {
  validateMachineName(source);
  validateMachineName(name);
  if (source === name) throw new BadInputError(`ivm clone ${source} ${name}: the new machine needs another name`);
  await withVmLocks(ctx, [source, name], 'clone', () => cloneLocked(ctx, source, name, options, warn));
}

async function cloneLocked(ctx: Context, sourceName: string, name: string, options: CloneOptions, warn: (line: string) => void): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, sourceName);
  const sourceId = requireIdentity(machine.dir, sourceName);
  const sourcePaths = vmPaths(ctx.settings, ctx.project, sourceName);
  if (!(await hostFileExists(ctx.runner, sourcePaths.var))) throw new RefusedError(`${sourceName} has no /var disk (${sourcePaths.var}): there is nothing to clone`);
  const source = machineSourceOf(ctx, sourceName);
  const base = await sourceBase(ctx, sourceName, sourcePaths.boot, warn);
  const diskBytes = (await imageInfo(ctx.runner, sourcePaths.var))['virtual-size'];
  // NEW is checked before the source is stopped for it: a clone that cannot be made stops nothing.
  await prepareNewName(ctx, name, 'clone');
  await whileStopped(ctx, sourceName, sourceId, { stop: options.stop, timeoutSeconds: options.timeoutSeconds, verb: 'clone' }, () =>
    newVmFrom(ctx, {
      name,
      verb: 'clone',
      source,
      diskSteps: (disk) =>
        newDiskSteps(ctx, disk, diskBytes, {
          title: `copy ${sourceName}'s /var into it (its snapshots are not copied)`,
          // Read-only on the source (qemu-img takes a shared lock: a VM started meanwhile makes it fail).
          command: (target) => ({ tool: 'qemu-img', args: ['convert', '-q', '-n', '--target-is-zero', '-f', 'qcow2', '-O', 'qcow2', sourcePaths.var, target], mutates: true }),
        }),
      base: async () => base,
      dryRunBase: base,
      warn,
    }),
  );
  if (ctx.runner.dryRun) return;
  const paths = vmPaths(ctx.settings, ctx.project, name);
  ctx.say(`cloned ${sourceName} as ${name}: /var ${paths.var}, boot overlay on ${base}; its own machine-id, hostname and host key (machines/${name}/known_hosts pins it)`);
  if (options.start) {
    await ctx.runner.progress.step(`start ${name}`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
    ctx.say(`started ${name}; serial log: ${paths.serialLog}`);
  }
}

/** The base the source's boot overlay is on (or, with none, the one last built for it); it must still be there. */
async function sourceBase(ctx: Context, name: string, boot: string, warn: (line: string) => void): Promise<string> {
  const current = await backingOf(ctx.runner, boot);
  if (current === undefined) {
    const built = await lastBuiltBase(ctx, name);
    warn(`note: ${name} has no boot overlay: the new machine goes on the base last built for ${name} (${built})`);
    return built;
  }
  if (!(await hostFileExists(ctx.runner, current))) throw new RefusedError(`the base of ${name} is gone: ${current}`, `move ${name} to a base that is there first: ivm upgrade ${name}`);
  requireBaseInBaseDir(ctx.settings, current);
  return current;
}

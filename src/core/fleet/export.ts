// ivm export NAME DIR and ivm export --all DIR: a standalone provisioner of a VM (or of every
// machine), a folder that creates and runs the VM with make, virsh, qemu-img and ssh only, never ivm
// or node. It holds the domain XML (rendered for the paths the Makefile uses: IVM_VM_DIR as it is
// now, fixed), a ready /var image made exactly as `ivm create` makes one (mkfs.ext4 -d of the
// staged identity, debugfs, qemu-img convert into a qcow2 made 0600 first), the known_hosts that
// pins the host key, a README and a .gitignore for the image (it holds the host private key). The
// Makefile keeps no state besides the disks it makes, and refers to the base by its installed path.
//
// Everything is checked for every machine before anything is written: the folder (a link or a file
// there is bad input; a folder that is not empty is refused unless --force, and even then no file
// is written through a link), each machine's identity and built base, and every value baked into a
// Makefile (one make cannot hold safely is refused).
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, RefusedError } from '../../errors.ts';
import { createDiskCommand } from '../../host/qemu-img.ts';
import { buildBase, lastBuiltBase } from '../base/build.ts';
import { canonical, isInside, requireBaseInBaseDir } from '../base/base-dir.ts';
import type { Context } from '../context.ts';
import { copyIntoDiskCommand, mkfsCommand, ownershipCommand, stageVarTree } from '../disks/var-image.ts';
import { vmPaths } from '../disks/vm-paths.ts';
import { IDENTITY_FILES, KNOWN_HOSTS_FILE } from '../identity/identity-files.ts';
import { domainUuid, machineIdFrom, machineSources, macAddress, type IdentitySource } from '../identity/identity.ts';
import { loadMachine, type Machine } from '../machine/machine.ts';
import { validateMachineName } from '../machine/names.ts';
import { machineNames } from '../machine/project.ts';
import { withVmLock } from '../lock.ts';
import { executePlan } from '../plan.ts';
import { kindOf, readRegularText, regularFileExists, UnsafeFileError, writeFileAtomic } from '../safe-files.ts';
import { renderDomainXml } from '../vm/domain-xml.ts';

export interface ExportOptions {
  /** Write into a folder that is not empty (replacing the files export writes, never through a link). */
  force: boolean;
  /** Build the base first (else the base last built, as `create --no-build`). */
  build: boolean;
}

/** The files of one machine's provisioner, in the order they are written (the Makefile last). */
export const PROVISIONER_FILES = ['domain.xml', 'known_hosts', 'README.md', '.gitignore', 'var.qcow2', 'Makefile'] as const;
/** The files of the folder of `export --all` besides the machines' folders. */
export const FLEET_FILES = ['README.md', '.gitignore', 'Makefile'] as const;

const VAR_IMAGE = 'var.qcow2';

const template = (file: string) => fs.readFileSync(new URL(`./${file}`, import.meta.url), 'utf8');

/** Everything one machine's provisioner is made of, checked and rendered; nothing written yet. */
interface Prepared {
  machine: Machine;
  sources: IdentitySource[];
  texts: Record<Exclude<(typeof PROVISIONER_FILES)[number], 'var.qcow2'>, string>;
  base: string;
}

export async function exportVm(ctx: Context, name: string, dir: string, options: ExportOptions): Promise<void> {
  validateMachineName(name);
  const target = checkFolder(ctx, dir, options.force);
  const prepared = await prepareMachine(ctx, name, options);
  checkFiles(target, PROVISIONER_FILES);
  await writeProvisioner(ctx, prepared, target);
  if (!ctx.runner.dryRun) {
    ctx.say(`exported ${name} to ${target}: make -C ${target} up (base ${prepared.base})`);
  }
}

export async function exportAll(ctx: Context, dir: string, options: ExportOptions): Promise<void> {
  const target = checkFolder(ctx, dir, options.force);
  const names = machineNames(ctx.project);
  if (names.length === 0) throw new BadInputError(`no machines in ${ctx.project.machinesDir}`, 'add one: ivm new NAME');
  // Every machine is checked (identity, base, values) before anything is written.
  const prepared: Prepared[] = [];
  for (const name of names) prepared.push(await prepareMachine(ctx, name, options));
  checkFiles(target, FLEET_FILES);
  for (const name of names) {
    const sub = path.join(target, name);
    const kind = kindOf(sub);
    if (kind !== 'missing' && kind !== 'folder') throw new UnsafeFileError(sub, kind === 'link' ? 'a symbolic link' : kind === 'file' ? 'a file' : 'a special file (fifo, socket or device)', 'folder');
    refuseTheirFolders(ctx, sub);
    if (kind === 'folder') checkFiles(sub, PROVISIONER_FILES);
  }
  for (const one of prepared) await writeProvisioner(ctx, one, path.join(target, one.machine.name));
  writeFiles(ctx, target, [
    ['README.md', fleetReadme(names)],
    ['.gitignore', GITIGNORE],
    ['Makefile', fleetMakefile(names)],
  ]);
  if (!ctx.runner.dryRun) ctx.say(`exported ${names.length} machines (${names.join(', ')}) to ${target}: make -C ${target} up`);
}

/**
 * The folder to write into, as an absolute path: missing (it is made), or an empty folder, or (with
 * --force) a folder with files in it. A link there is never followed and a file is not a folder
 * (exit 2); the project folder, its machines/, libvirt/ and .ivm/, and the image folders are refused.
 */
function checkFolder(ctx: Context, dir: string, force: boolean): string {
  if (dir === '') throw new BadInputError('the folder to export into is empty');
  const target = path.resolve(dir);
  const kind = kindOf(target);
  if (kind === 'link') throw new UnsafeFileError(target, 'a symbolic link', 'folder');
  if (kind === 'file' || kind === 'other') throw new UnsafeFileError(target, kind === 'file' ? 'a file' : 'a special file (fifo, socket or device)', 'folder');
  refuseTheirFolders(ctx, target);
  if (kind === 'folder' && !force && fs.readdirSync(target).length > 0) {
    throw new RefusedError(`${target} is not empty: nothing was written`, 'export into a new or empty folder, or add --force to replace the files export writes there (others are left alone)');
  }
  return target;
}

/** The project folder, its machines/, libvirt/ and .ivm/, and the image folders are no export folders (exit 2). */
function refuseTheirFolders(ctx: Context, target: string): void {
  const { project, settings } = ctx;
  const same = (a: string) => canonical(a) === canonical(target);
  if (same(project.root)) throw new BadInputError(`${target} is the project folder: export into a folder of its own`);
  for (const [what, folder] of [['the project\'s machines/', project.machinesDir], ['the project\'s libvirt/', project.libvirtDir], ['the project\'s .ivm/', project.stateDir], ['IVM_BASE_DIR', settings.baseDir], ['IVM_VM_DIR', settings.vmDir]] as const) {
    if (same(folder) || isInside(folder, target)) throw new BadInputError(`${target} is in ${what} (${folder}): export into a folder of its own`);
  }
}

/** Each file export will write in `dir` is missing or a regular file (a link is refused, never written through). */
function checkFiles(dir: string, files: readonly string[]): void {
  if (kindOf(dir) === 'missing') return;
  for (const file of files) regularFileExists(path.join(dir, file));
}

async function prepareMachine(ctx: Context, name: string, options: ExportOptions): Promise<Prepared> {
  // Under the VM's lock: its identity is read whole, not while `ivm identity` or `ivm new` writes it.
  return withVmLock(ctx, name, 'export', async () => {
    const machine = await loadMachine(ctx.runner, ctx.project, name);
    const missing = IDENTITY_FILES.filter((file) => file.kind === 'generated' && !regularFileExists(path.join(machine.dir, file.name))).map((file) => file.name);
    if (missing.length > 0) throw new RefusedError(`${name} has no identity yet (machines/${name}/ lacks ${missing.join(', ')})`, `run: ivm identity ${name}`);
    const machineId = machineIdFrom(machine.dir);
    const knownHosts = pinnedKnownHosts(machine);
    const sources = machineSources(machine);
    const base = options.build ? (await buildBase(ctx, name)).base : await lastBuiltBase(ctx, name).catch((error: unknown) => {
      // lastBuiltBase's hint speaks of create's --no-build: export builds with --build.
      throw error instanceof RefusedError ? new RefusedError(error.message, `run: ivm build ${name} (or add --build)`) : error;
    });
    requireBaseInBaseDir(ctx.settings, base);
    const paths = vmPaths(ctx.settings, ctx.project, name);
    const values = makefileValues(ctx, machine, machineId, base);
    return {
      machine,
      sources,
      base,
      texts: {
        'domain.xml': renderDomainXml(machine, machineId, paths, ctx.settings),
        known_hosts: knownHosts,
        'README.md': fill(template('export-vm.README.md'), readmeValues(ctx, machine, base)),
        '.gitignore': GITIGNORE,
        Makefile: fill(template('export-vm.mk'), values),
      },
    };
  });
}

/** machines/NAME/known_hosts, which must pin a key under the machine's name (as ivm identity writes it). */
function pinnedKnownHosts(machine: Machine): string {
  const file = path.join(machine.dir, KNOWN_HOSTS_FILE);
  if (!regularFileExists(file)) throw new RefusedError(`${file} is missing: there is no pinned host key for ${machine.name}`, `run: ivm identity ${machine.name}`);
  const text = readRegularText(file);
  const pinned = text.split('\n').some((line) => line.trim().split(/\s+/)[0]?.split(',').includes(machine.name));
  if (!pinned) throw new RefusedError(`${file} pins no host key under the name ${machine.name}`, `it should hold one line "${machine.name} ssh-ed25519 ...", as ivm identity writes it`);
  return text;
}

const GITIGNORE = '# the ready /var image holds the VM\'s host private key (and its secrets): never commit it\nvar.qcow2\n';

/**
 * A value as the right-hand side of a make assignment (`VAR := value`): `$` is written `$$` and `#`
 * `\#`. What make cannot hold there is refused (exit 2): a control character (a newline ends the
 * line), blanks at either end (make strips or keeps them), a backslash before `#` or at the end (it
 * would escape the `#` or join the next line).
 */
export function makeValue(value: string, what: string): string {
  if (/[\x00-\x1f\x7f]/.test(value) || value.trim() !== value || /\\(#|$)/.test(value)) {
    throw new BadInputError(
      `${what} ${JSON.stringify(value)} cannot be written into a Makefile safely: it holds a control character, blanks at an end, or a backslash before "#" or at the end`,
      'use a path without them',
    );
  }
  return value.replace(/\$/g, '$$$$').replace(/#/g, '\\#');
}

function makefileValues(ctx: Context, machine: Machine, machineId: string, base: string): Record<string, string> {
  const { settings } = ctx;
  const mac = macAddress(machineId);
  const userNet = settings.mode === 'session' && machine.meta.bridge === undefined;
  return {
    NAME: machine.name,
    UUID: domainUuid(machineId),
    MAC: mac,
    MAC_UPPER: mac.toUpperCase(),
    // Names and addresses validated by meta.nix's checks: letters, digits, dots, dashes only.
    NETWORK: userNet ? '' : (machine.meta.network ?? ''),
    IP_ADDRESS: settings.mode === 'system' && machine.meta.network !== undefined ? (machine.meta.ipAddress ?? '') : '',
    USER_NET: userNet ? '1' : '',
    MODE: settings.mode,
    VM_DIR: makeValue(settings.vmDir, 'IVM_VM_DIR'),
    BASE: makeValue(base, 'the base image'),
    LIBVIRT_URI: makeValue(settings.libvirtUri, 'LIBVIRT_URI'),
  };
}

function readmeValues(ctx: Context, machine: Machine, base: string): Record<string, string> {
  const { settings } = ctx;
  const { network, bridge } = machine.meta;
  const networkText =
    settings.mode === 'session' && bridge === undefined
      ? 'user-mode networking (session mode): the VM reaches out, the host cannot reach it (`make ssh` needs `ADDRESS=` and `PORT=` of a port forward).'
      : bridge !== undefined
        ? `the host bridge \`${bridge}\` (in session mode, allowed in \`/etc/qemu/bridge.conf\`).`
        : `the libvirt network \`${network}\`, defined and active (\`virsh net-list\`)${machine.meta.ipAddress ? `; \`make create\` adds the DHCP reservation of \`${machine.meta.ipAddress}\` for the VM's MAC` : ''}.`;
  return {
    NAME: machine.name,
    BASE_TEXT: base,
    VM_DIR_TEXT: settings.vmDir,
    LIBVIRT_URI_TEXT: settings.libvirtUri,
    NETWORK_TEXT: networkText,
  };
}

/** Replaces each @@KEY@@ of a template; a key without a value is a bug, not a silent blank. */
function fill(text: string, values: Record<string, string>): string {
  return text.replace(/@@([A-Z_]+)@@/g, (_all, key: string) => {
    const value = values[key];
    if (value === undefined) throw new Error(`internal: no value for @@${key}@@`);
    return value;
  });
}

/** The top-level Makefile of export --all: each target of every machine, and TARGET-NAME for one. */
export function fleetMakefile(names: string[]): string {
  const all = ['up', 'down', 'create', 'start', 'stop', 'status', 'destroy'];
  const each = [...all, 'console', 'ip', 'ssh'];
  const perMachine = names.flatMap((name) => each.map((t) => `${t}-${name}`));
  const lines = [
    `# Standalone provisioners of the ivm machines ${names.join(', ')}, written by \`ivm export --all\`: one`,
    '# folder each, with its own Makefile and README.md. This one runs their targets; README.md says more.',
    '',
    'ifneq ($(filter-out Makefile,$(lastword $(MAKEFILE_LIST))),)',
    '$(error run this Makefile in its own folder: make -C <folder> <target>)',
    'endif',
    '',
    'SHELL := /bin/sh',
    '.SUFFIXES:',
    '.DEFAULT_GOAL := help',
    '',
    '# The machines the targets run on (make up MACHINES="a b": only those).',
    `MACHINES ?= ${names.join(' ')}`,
    '',
    `.PHONY: help ${all.join(' ')} ${perMachine.join(' ')}`,
    '',
    'help:',
    "\t@printf '%s\\n' 'The provisioners of $(MACHINES) (README.md says more). make -C <this folder> TARGET:' \\",
    `\t  '  ${all.join(', ')}: that target of every machine (make -j: at the same time)' \\`,
    `\t  '  TARGET-NAME: one machine'"'"'s target (also console, ip, ssh), e.g. make up-${names[0]}, or make -C NAME TARGET'`,
    '',
    ...all.map((t) => `${t}: $(addprefix ${t}-,$(MACHINES))`),
    '',
    ...names.flatMap((name) => [...each.map((t) => `${t}-${name}:\n\t+@$(MAKE) --no-print-directory -C ${name} ${t}`), '']),
  ];
  return `${lines.join('\n')}`;
}

function fleetReadme(names: string[]): string {
  return fill(template('export-fleet.README.md'), {
    COUNT: String(names.length),
    MACHINES_TEXT: names.map((name) => `\`${name}/\``).join(', '),
    FIRST: names[0]!,
  });
}

/**
 * Writes one machine's provisioner into `dir`: the /var image is made in a private folder (0700) as
 * create makes one, then copied into `dir` at 0600; the text files are each written whole (a
 * temporary file, then rename), the Makefile last, so a folder with a Makefile is a whole export.
 */
async function writeProvisioner(ctx: Context, prepared: Prepared, dir: string): Promise<void> {
  const { machine, sources, texts } = prepared;
  const stage = stageVarTree(ctx.project.stateDir, sources, ctx.runner.dryRun);
  try {
    const image = path.join(path.dirname(stage.raw), VAR_IMAGE);
    // 0600 before anything is written into it (it will hold the host private key); qemu-img create
    // keeps the file, its owner and its mode, and only truncates it.
    if (!ctx.runner.dryRun) fs.closeSync(fs.openSync(image, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW, 0o600));
    await executePlan(
      ctx.runner,
      {
        title: `export ${machine.name}: its /var image`,
        steps: [
          { kind: 'run', title: `the /var filesystem (ext4, label ivm-var, ${machine.meta.varSize}) from the identity`, command: mkfsCommand(stage, machine.meta.varSize) },
          { kind: 'run', title: 'every file on it root\'s', command: ownershipCommand(stage) },
          { kind: 'run', title: `the /var image of ${machine.meta.varSize}`, command: createDiskCommand(image, machine.meta.varSize) },
          { kind: 'run', title: 'copy the /var filesystem into it', command: copyIntoDiskCommand(stage, image) },
        ],
      },
      ctx.say,
    );
    const { Makefile, ...rest } = texts;
    writeFiles(ctx, dir, Object.entries(rest));
    if (ctx.runner.dryRun) ctx.say(`# (write ${path.join(dir, VAR_IMAGE)}, mode 0600: the /var image)`);
    else placePrivateFile(image, path.join(dir, VAR_IMAGE));
    writeFiles(ctx, dir, [['Makefile', Makefile]]);
  } finally {
    stage.remove();
  }
}

function writeFiles(ctx: Context, dir: string, files: [string, string][]): void {
  for (const [name, content] of files) {
    const file = path.join(dir, name);
    if (ctx.runner.dryRun) ctx.say(`# (write ${file})`);
    else writeFileAtomic(file, content, 0o644);
  }
}

/**
 * Copies a file made 0600 into `to`: under an unguessable temporary name in the same folder (made
 * exclusively, so nothing there is followed), at 0600, then renamed into place (a link at `to` was
 * refused by checkFiles, and rename replaces a name, never writes through it).
 */
function placePrivateFile(from: string, to: string): void {
  regularFileExists(to);
  // What a killed export left under this name (a copy of the /var image, with the host key): removed.
  const leftover = new RegExp(`^\\.${path.basename(to).replace(/[.]/g, '\\.')}\\.ivm-[0-9a-f]{12}\\.tmp$`);
  for (const entry of fs.readdirSync(path.dirname(to))) {
    const file = path.join(path.dirname(to), entry);
    const st = leftover.test(entry) ? fs.lstatSync(file, { throwIfNoEntry: false }) : undefined;
    if (st?.isFile() && st.uid === process.getuid?.()) fs.rmSync(file, { force: true });
  }
  const temporary = path.join(path.dirname(to), `.${path.basename(to)}.ivm-${crypto.randomBytes(6).toString('hex')}.tmp`);
  try {
    fs.copyFileSync(from, temporary, fs.constants.COPYFILE_EXCL);
    fs.chmodSync(temporary, 0o600);
    fs.renameSync(temporary, to);
  } catch (error) {
    fs.rmSync(temporary, { force: true });
    throw error;
  }
}

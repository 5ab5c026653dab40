// ivm new NAME: a new machine folder from flags (or answers): machines/NAME/meta.nix and default.nix,
// rendered as plain, commented Nix a user edits afterwards, the identity (ensureIdentity), and the
// public files staged with git (the flake sees only tracked files). And the profile catalogue that
// `ivm profiles` lists and `ivm new --profile` checks against.
//
// meta.nix is checked exactly as a hand-written one: validateMeta on the values before anything is
// written, then the written file is evaluated back (nix eval --json --file, through the runner, as
// loadMachine does) and must give the same values, or what was written is removed again.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import { BadInputError, CommandFailedError, ExitCode, IvmError, RefusedError, ToolMissingError } from '../../errors.ts';
import { evalJsonFile } from '../../host/nix.ts';
import type { Runner } from '../../host/runner.ts';
import type { Context } from '../context.ts';
import { ensureIdentity } from '../identity/identity.ts';
import { IDENTITY_FILES, KNOWN_HOSTS_FILE } from '../identity/identity-files.ts';
import { withVmLock } from '../lock.ts';
import { machineDir, SYSTEMS, validateMeta, type MachineMeta } from './machine.ts';
import { validateMachineName } from './names.ts';
import type { Project } from './project.ts';
import { createFileExclusive, folderExists, kindOf, readRegularText, regularFileExists, removeFile, UnsafeFileError } from '../safe-files.ts';

// ---------------------------------------------------------------------------------------------
// The profile catalogue

export interface Profile {
  name: string;
  description: string;
}

export interface Catalogue {
  /** The file it was read from. */
  file: string;
  /** True when it is the project's own modules/profiles/catalogue.json, false for ivm's copy. */
  own: boolean;
  profiles: Profile[];
}

/** ivm's own catalogue, next to its modules (src/core/machine/ and dist/core/machine/ are both three folders below the root). */
export const IVM_CATALOGUE_FILE = fileURLToPath(new URL('../../../modules/profiles/catalogue.json', import.meta.url));

/** Where a project keeps its catalogue, when its flake has its own modules (as this repository does). */
export function projectCatalogueFile(project: Project): string {
  return path.join(project.root, 'modules', 'profiles', 'catalogue.json');
}

/** A profile name: a Nix attribute name without quotes and a file name (modules/profiles/NAME.nix). */
const PROFILE_NAME = /^[a-z][a-z0-9-]*$/;

/** The profiles of a catalogue.json's text; anything malformed is refused, naming the file. */
export function parseCatalogue(file: string, text: string): Profile[] {
  const fail = (what: string): never => {
    throw new BadInputError(`${file}: ${what}`, 'it is {"profiles": [{"name": "...", "description": "one line"}, ...]} (docs/flake.md, "Profiles")');
  };
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    fail(`not JSON (${(error as Error).message})`);
  }
  const list = (data as { profiles?: unknown } | null)?.profiles;
  if (!Array.isArray(list)) return fail('no "profiles" list');
  const seen = new Set<string>();
  return list.map((entry, i) => {
    const { name, description } = (entry ?? {}) as { name?: unknown; description?: unknown };
    if (typeof name !== 'string' || !PROFILE_NAME.test(name)) fail(`profile ${i + 1}: the name ${JSON.stringify(name)} is not lowercase letters, digits and dashes`);
    if (seen.has(name as string)) fail(`the profile ${name} is listed twice`);
    seen.add(name as string);
    if (typeof description !== 'string' || description.trim() === '' || /[\u0000-\u001f\u007f]/.test(description)) {
      fail(`profile ${name}: the description must be one line of text`);
    }
    return { name: name as string, description: description as string };
  });
}

/**
 * The catalogue of the flake the project uses: the project's own modules/profiles/catalogue.json
 * when it has one (its flake's modules), else ivm's copy (a project whose flake takes ivm's modules).
 */
export function readCatalogue(project: Project | undefined): Catalogue {
  if (project) {
    const own = projectCatalogueFile(project);
    if (regularFileExists(own)) return { file: own, own: true, profiles: parseCatalogue(own, readRegularText(own)) };
  }
  if (kindOf(IVM_CATALOGUE_FILE) !== 'file') {
    throw new IvmError(`ivm's profile catalogue ${IVM_CATALOGUE_FILE} is missing: this ivm is installed without its modules`, {
      exitCode: ExitCode.environment,
      hint: 'install ivm from its repository (git clone; npm ci), or give the project its own modules/profiles/catalogue.json',
    });
  }
  return { file: IVM_CATALOGUE_FILE, own: false, profiles: parseCatalogue(IVM_CATALOGUE_FILE, readRegularText(IVM_CATALOGUE_FILE)) };
}

/** `--profile a,b` (given once or more) as catalogue names, in the order given, each once; an unknown one is refused with the list. */
export function selectProfiles(words: string[], catalogue: Catalogue): string[] {
  const names = [...new Set(words.flatMap((word) => word.split(',')).map((w) => w.trim()).filter((w) => w !== ''))];
  const known = catalogue.profiles.map((p) => p.name);
  const unknown = names.filter((n) => !known.includes(n));
  if (unknown.length > 0) {
    throw new BadInputError(
      `unknown profile${unknown.length > 1 ? 's' : ''} ${unknown.map((n) => JSON.stringify(n)).join(', ')}: the profiles are ${known.join(', ')}`,
      `ivm profiles describes each one (catalogue: ${catalogue.file})`,
    );
  }
  return names;
}

/**
 * The profiles a default.nix enables: its `ivm.profiles.<name>.enable = true;` lines (comments
 * left out), as `ivm new` writes them and machines/web has it. Another form (an attribute set,
 * mkIf) is not seen: this is a reading of the text, not an evaluation.
 */
export function enabledProfiles(defaultNix: string): string[] {
  const code = defaultNix
    .replace(/\/\*[\s\S]*?\*\//g, ' ')
    .split('\n')
    .map((line) => line.replace(/#.*$/, ''))
    .join('\n');
  const found = [...code.matchAll(/(?<![\w.'-])ivm\s*\.\s*profiles\s*\.\s*([A-Za-z_][A-Za-z0-9_'-]*)\s*\.\s*enable\s*=\s*true\s*;/g)].map((m) => m[1]!);
  return [...new Set(found)];
}

// ---------------------------------------------------------------------------------------------
// The values of a new machine

/** What `ivm new` is told: each flag as given (strings, checked by validateMeta), undefined when not given. */
export interface NewMachineOptions {
  /** --profile, each occurrence (a comma-separated list); undefined: none given. */
  profiles?: string[];
  memory?: string;
  vcpus?: string;
  varSize?: string;
  network?: string;
  bridge?: string;
  ip?: string;
  system?: string;
  virtType?: string;
  /** --autostart: libvirt starts the VM when the host boots (meta.nix `autostart = true`). */
  autostart?: boolean;
  /** Another machine whose meta.nix values and profiles are the starting point. */
  from?: string;
}

/** The system of the machine ivm runs on (the default of a new machine). */
export function hostSystem(arch: string = process.arch): string {
  return arch === 'arm64' ? 'aarch64-linux' : 'x86_64-linux';
}

/** Where nothing else is said: the defaults of validateMeta, written out, on this host's system. */
export function defaultValues(): Record<string, unknown> {
  return { system: hostSystem(), memory: 2048, vcpus: 2, varSize: '20G', network: 'default', virtType: 'kvm' };
}

/** A flag's text as meta.nix would hold it: digits are a number, anything else stays a string (which validateMeta refuses where a number belongs). */
export function flagValue(text: string): string | number {
  return /^[0-9]+$/.test(text) ? Number(text) : text;
}

/** The flags of `ivm new`, by meta.nix key, for messages. */
export const FLAG_OF_KEY: Record<string, string> = {
  system: '--system',
  memory: '--memory',
  vcpus: '--vcpus',
  varSize: '--var-size',
  network: '--network',
  bridge: '--bridge',
  virtType: '--virt-type',
  ipAddress: '--ip',
  autostart: '--autostart',
};

/** The keys of a machine's address: one machine's own, so --from never takes them (gateway and dns go with ipAddress). */
export const ADDRESS_KEYS = ['ipAddress', 'gateway', 'dns'] as const;

/** A new machine's meta.nix: the values written (every key explicit) and what validateMeta makes of them. */
export interface MachineValues {
  values: Record<string, unknown>;
  meta: MachineMeta;
}

/**
 * The values of a new machine: `base` (the defaults, or another machine's meta.nix over them) with
 * the flags over it, checked by validateMeta as meta.nix `file` would be. Bad values are exit 2.
 */
export function machineValues(file: string, base: Record<string, unknown>, options: NewMachineOptions): MachineValues {
  if (options.network !== undefined && options.bridge !== undefined) {
    throw new BadInputError('--network and --bridge: give one, not both', 'a VM is on a libvirt network (--network NAME) or on a host bridge (--bridge BR)');
  }
  const values: Record<string, unknown> = { ...base };
  const set = (key: string, text: string | undefined, asNumber = false) => {
    if (text !== undefined) values[key] = asNumber ? flagValue(text) : text;
  };
  set('system', options.system);
  set('memory', options.memory, true);
  set('vcpus', options.vcpus, true);
  set('varSize', options.varSize);
  set('virtType', options.virtType);
  if (options.network !== undefined) {
    delete values.bridge;
    values.network = options.network;
  }
  if (options.bridge !== undefined) {
    delete values.network;
    values.bridge = options.bridge;
  }
  set('ipAddress', options.ip);
  if (options.autostart !== undefined) values.autostart = options.autostart;
  try {
    return { values, meta: validateMeta(file, values) };
  } catch (error) {
    if (!(error instanceof BadInputError)) throw error;
    if (values.bridge !== undefined && values.ipAddress !== undefined) {
      throw new BadInputError(
        `--ip with a bridge (${String(values.bridge)}): ${error.message}; nothing was written`,
        'leave out --ip (on a bridge the LAN gives the address), or put the VM on a libvirt network: --network NAME --ip ADDRESS (a DHCP reservation)',
      );
    }
    const flags = Object.entries(FLAG_OF_KEY).map(([key, flag]) => `${flag} (${key})`).join(', ');
    throw new BadInputError(`${error.message}; nothing was written`, `the flags set these meta.nix keys: ${flags} (README.md, "Machines")`);
  }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/** A Nix string literal ("..." with \\, " and ${ escaped). */
export function nixString(text: string): string {
  return `"${text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\$\{/g, '\\${').replace(/\n/g, '\\n').replace(/\r/g, '\\r').replace(/\t/g, '\\t')}"`;
}

/** A JSON value (what nix eval --json gave, or a flag) as a Nix expression that evaluates back to it. */
export function nixLiteral(value: unknown): string {
  if (typeof value === 'string') return nixString(value);
  if (typeof value === 'number' && Number.isInteger(value)) return value < 0 ? `(${value})` : String(value);
  if (typeof value === 'boolean') return String(value);
  if (value === null) return 'null';
  if (Array.isArray(value)) return value.length === 0 ? '[ ]' : `[ ${value.map(nixLiteral).join(' ')} ]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>);
    return entries.length === 0 ? '{ }' : `{ ${entries.map(([k, v]) => `${/^[A-Za-z_][A-Za-z0-9_'-]*$/.test(k) ? k : nixString(k)} = ${nixLiteral(v)};`).join(' ')} }`;
  }
  throw new IvmError(`internal: no Nix literal for ${JSON.stringify(value)}`);
}

/** Lines `  key = value;` with their comments aligned after them. */
function alignedLines(rows: { code: string; comment: string }[]): string[] {
  const width = Math.max(...rows.map((r) => r.code.length)) + 2;
  return rows.map((r) => `  ${r.code.padEnd(width)}# ${r.comment}`);
}

const KEY_ORDER = ['system', 'memory', 'vcpus', 'varSize', 'network', 'bridge', 'virtType', 'autostart', 'ipAddress', 'gateway', 'dns'];

/** machines/NAME/meta.nix: every key of `values` written out, each with a comment, as README.md shows it. */
export function renderMeta(name: string, values: Record<string, unknown>): string {
  const rows: { code: string; comment: string }[] = [];
  const has = (key: string) => values[key] !== undefined;
  const row = (key: string, comment: string) => {
    if (has(key)) rows.push({ code: `${key} = ${nixLiteral(values[key])};`, comment });
  };
  row('system', `required: ${SYSTEMS.join(' or ')}`);
  row('memory', 'MiB (default 2048)');
  row('vcpus', 'virtual CPUs (default 2)');
  row('varSize', 'the /var disk (the VM\'s data), at least 64M (default "20G")');
  if (has('bridge')) {
    rows.push({ code: '# network = "default";', comment: 'a libvirt network ...' });
    row('bridge', '... or, as here, a host bridge instead');
  } else {
    row('network', 'a libvirt network (ivm net list) ...');
    rows.push({ code: '# bridge = "br0";', comment: '... or a host bridge instead' });
  }
  row('virtType', '"kvm" (default) or "qemu" (TCG, where KVM is unusable)');
  if (has('autostart')) row('autostart', 'start the VM when the host boots (libvirt autostart; default false)');
  else rows.push({ code: '# autostart = true;', comment: 'start the VM when the host boots (libvirt autostart; default false)' });
  if (has('ipAddress')) row('ipAddress', has('bridge') ? 'a static address on the bridge (README.md, "Networks")' : 'a DHCP reservation on the network (README.md, "Networks")');
  else if (!has('bridge')) rows.push({ code: '# ipAddress = "192.168.100.10";', comment: 'optional, with `network`: a DHCP reservation (README.md, "Networks")' });
  row('gateway', 'the gateway of the static address');
  row('dns', 'the DNS servers of the static address');
  for (const key of Object.keys(values).filter((k) => !KEY_ORDER.includes(k))) row(key, 'see README.md, "Machines"');
  return [
    `# Machine ${JSON.stringify(name)}: the settings ivm reads (README.md, "Machines"). Made by \`ivm new\`;`,
    '# edit it as you like: ivm checks every key each time it reads this file (nix eval).',
    '{',
    ...alignedLines(rows),
    '}',
    '',
  ].join('\n');
}

/** machines/NAME/default.nix: every ivm module, and the chosen profiles enabled, each with its catalogue line. */
export function renderDefault(name: string, profiles: string[], catalogue: Catalogue): string {
  const describe = (profile: string) => catalogue.profiles.find((p) => p.name === profile)?.description ?? '';
  const body =
    profiles.length === 0
      ? ['  # No profile is enabled. `ivm profiles` lists them; enable one with a line such as', '  # ivm.profiles.web.enable = true;']
      : profiles.flatMap((profile) => [`  # ${profile}: ${describe(profile)}`, `  ivm.profiles.${profile}.enable = true;`]);
  return [
    `# Machine ${JSON.stringify(name)}: every ivm module (ivmModules.default), with the profiles enabled below.`,
    '# Made by `ivm new`; edit it as you like: it is a NixOS module. A profile is one capability,',
    '# enabled with `ivm.profiles.<name>.enable = true;` (`ivm profiles` lists them;',
    '# modules/profiles/<name>.nix documents the options of each). What is per-VM (name, keys, extra',
    '# ports such as tcp_ports) lives next to this file as identity files, not here.',
    '{ ivmModules, ... }:',
    '{',
    '  imports = [ ivmModules.default ];',
    '',
    ...body,
    '}',
    '',
  ].join('\n');
}

// ---------------------------------------------------------------------------------------------
// ivm new

/** The identity files of a machine that go into git: the generated ones that are not secret, and known_hosts. */
export const PUBLIC_IDENTITY_FILES: readonly string[] = [
  ...IDENTITY_FILES.filter((f) => f.kind === 'generated' && !f.secret).map((f) => f.name),
  KNOWN_HOSTS_FILE,
];

/** The files `ivm new` stages with git, in this order. */
export const PUBLIC_FILES: readonly string[] = ['meta.nix', 'default.nix', ...PUBLIC_IDENTITY_FILES];

/** The identity files that must never be tracked (the host private key). */
export const SECRET_IDENTITY_FILES: readonly string[] = IDENTITY_FILES.filter((f) => f.kind === 'generated' && f.secret).map((f) => f.name);

/** A new machine, planned: its values, profiles and the text of its two files. */
export interface NewMachinePlan {
  name: string;
  dir: string;
  /** meta.nix's keys, as written. */
  values: Record<string, unknown>;
  /** What validateMeta makes of them. */
  meta: MachineMeta;
  profiles: string[];
  files: { name: string; path: string; content: string }[];
  /** What the user should know (taken from --from, no KVM here), for stderr. */
  notes: string[];
}

/** Refuses a machine folder that exists (exit 3), or a link or odd file in its place (exit 2). */
function refuseExisting(dir: string, name: string): void {
  const kind = kindOf(dir);
  if (kind === 'missing') return;
  if (kind === 'link' || kind === 'other') throw new UnsafeFileError(dir, kind === 'link' ? 'a symbolic link' : 'a special file (fifo, socket or device)', 'folder');
  throw new RefusedError(`${dir} already exists: machine ${name} is there; nothing was written`, `pick another name, or edit ${dir} itself`);
}

/** Plans `ivm new NAME`: checks the name, the folder, the profiles and the values; reads (and evaluates --from's meta.nix), writes nothing. */
export async function planNewMachine(ctx: Context, name: string, options: NewMachineOptions, catalogue = readCatalogue(ctx.project)): Promise<NewMachinePlan> {
  validateMachineName(name);
  if (!folderExists(ctx.project.machinesDir)) throw new UnsafeFileError(ctx.project.machinesDir, 'missing', 'folder');
  const dir = path.join(ctx.project.machinesDir, name);
  refuseExisting(dir, name);
  const notes: string[] = [];
  let base = defaultValues();
  let profiles: string[] = [];
  if (options.from !== undefined) {
    // Its meta.nix as written (evaluated and checked as loadMachine does), over the defaults.
    const otherDir = machineDir(ctx.project, options.from);
    const otherMeta = path.join(otherDir, 'meta.nix');
    const raw = (await evalJsonFile(ctx.runner, otherMeta)) as Record<string, unknown>;
    validateMeta(otherMeta, raw);
    base = { ...base, ...raw };
    if (raw.bridge !== undefined) delete base.network;
    const dropped = ADDRESS_KEYS.filter((key) => raw[key] !== undefined);
    for (const key of ADDRESS_KEYS) delete base[key];
    if (options.profiles === undefined) {
      const defaultFile = path.join(otherDir, 'default.nix');
      const enabled = regularFileExists(defaultFile) ? enabledProfiles(readRegularText(defaultFile)) : [];
      const known = new Set(catalogue.profiles.map((p) => p.name));
      profiles = enabled.filter((p) => known.has(p));
      const unknown = enabled.filter((p) => !known.has(p));
      if (unknown.length > 0) notes.push(`${defaultFile} enables ${unknown.join(', ')}, not in the catalogue (${catalogue.file}): left out`);
    }
    notes.push(
      `${name} starts from ${options.from}: its meta.nix values${dropped.length > 0 ? ` (not ${dropped.join(', ')}: an address is one machine's; give --ip)` : ''}` +
        (options.profiles === undefined ? ` and its profiles (${profiles.length > 0 ? profiles.join(', ') : 'none'})` : '') +
        `; anything else in machines/${options.from}/default.nix is not copied`,
    );
  }
  if (options.profiles !== undefined) profiles = selectProfiles(options.profiles, catalogue);
  const metaFile = path.join(dir, 'meta.nix');
  const { values, meta } = machineValues(metaFile, base, options);
  if (meta.virtType === 'kvm' && options.virtType === undefined && kindOf('/dev/kvm') === 'missing') {
    notes.push(`this host has no /dev/kvm, and ${name} is virtType "kvm": give --virt-type qemu (TCG) to run it here, or edit ${metaFile}`);
  }
  return {
    name,
    dir,
    values,
    meta,
    profiles,
    files: [
      { name: 'meta.nix', path: metaFile, content: renderMeta(name, values) },
      { name: 'default.nix', path: path.join(dir, 'default.nix'), content: renderDefault(name, profiles, catalogue) },
    ],
    notes,
  };
}

/** Evaluates the meta.nix just written (nix eval --json --file, as loadMachine does): it must give exactly the values it was written from. */
export async function checkWrittenMeta(runner: Runner, file: string, written: MachineValues): Promise<void> {
  const evaluated = await evalJsonFile(runner, file);
  const again = validateMeta(file, evaluated);
  if (!isDeepStrictEqual(evaluated, written.values) || !isDeepStrictEqual(again, written.meta)) {
    throw new IvmError(`internal: ${file} evaluates to ${JSON.stringify(evaluated)}, not the values it was written from, ${JSON.stringify(written.values)} (please report it)`);
  }
}

/** How the project stands with git: a work tree, not one, or no git installed. */
export type GitState = 'work-tree' | 'not-a-work-tree' | 'no-git';

export async function gitState(runner: Runner, root: string): Promise<GitState> {
  try {
    const result = await runner.run({ tool: 'git', args: ['-C', root, 'rev-parse', '--is-inside-work-tree'], mutates: false }, { allowFailure: true });
    return result.exitCode === 0 && result.stdout.trim() === 'true' ? 'work-tree' : 'not-a-work-tree';
  } catch (error) {
    if (error instanceof ToolMissingError) return 'no-git';
    throw error;
  }
}

/** Which of `paths` (relative to root) git ignores (git check-ignore, read-only). */
export async function gitIgnored(runner: Runner, root: string, paths: string[]): Promise<string[]> {
  const result = await runner.run({ tool: 'git', args: ['-C', root, 'check-ignore', '--', ...paths], mutates: false }, { allowFailure: true });
  // 0: some are ignored (listed), 1: none is; anything else is git's error.
  if (result.exitCode === 1) return [];
  if (result.exitCode !== 0) throw new IvmError(`git check-ignore failed in ${root} (exit ${result.exitCode}): ${result.stderr.trim()}`);
  return result.stdout.split('\n').map((l) => l.trim()).filter((l) => l !== '');
}

/** `git -C ROOT add -- PATHS`: exactly these paths, never a folder or a pattern. */
export function gitAddCommand(root: string, paths: string[]) {
  return { tool: 'git' as const, args: ['-C', root, 'add', '--', ...paths], mutates: true };
}

/** What `ivm new` did (or would do, under --dry-run). */
export interface NewMachineResult {
  plan: NewMachinePlan;
  /** The paths staged with git (relative to the project root); empty when the project is not a git work tree. */
  staged: string[];
  git: GitState;
}

/**
 * Stages the public files with git, or says why not. The private key must be git-ignored: it is
 * never staged, and when git would not ignore it, ivm warns (a `git add .` would take it).
 */
async function stage(ctx: Context, plan: NewMachinePlan, warn: (line: string) => void): Promise<{ staged: string[]; git: GitState }> {
  const root = ctx.project.root;
  const rel = (file: string) => path.relative(root, path.join(plan.dir, file));
  const state = await gitState(ctx.runner, root);
  if (state !== 'work-tree') return { staged: [], git: state };
  const wanted = PUBLIC_FILES.map(rel);
  const secrets = SECRET_IDENTITY_FILES.map(rel);
  const ignored = await gitIgnored(ctx.runner, root, [...wanted, ...secrets]);
  for (const secret of secrets.filter((s) => !ignored.includes(s))) {
    warn(`warning: git does not ignore ${secret} (the host private key): add \`machines/*/${path.basename(secret)}\` to .gitignore, so that no \`git add\` ever takes it`);
  }
  const skipped = wanted.filter((p) => ignored.includes(p));
  if (skipped.length > 0) warn(`warning: git ignores ${skipped.join(', ')}: not staged; the flake does not see ${skipped.length > 1 ? 'them' : 'it'} (see your .gitignore)`);
  const staged = wanted.filter((p) => !ignored.includes(p));
  try {
    await ctx.runner.run(gitAddCommand(root, staged));
  } catch (error) {
    if (!(error instanceof CommandFailedError)) throw error;
    throw new IvmError(`${error.message}\nthe files of ${plan.name} are written, but not staged`, { hint: `stage them yourself: ${ctx.runner.describe(gitAddCommand(root, staged))}` });
  }
  return { staged, git: state };
}

/**
 * ivm new NAME: writes machines/NAME/meta.nix and default.nix (never over anything: the folder must
 * not exist), checks meta.nix by evaluating it back, creates the identity and stages the public
 * files with git, holding the VM's lock. Under --dry-run it prints the files and the git command and
 * writes nothing.
 */
export async function newMachine(ctx: Context, name: string, options: NewMachineOptions, warn: (line: string) => void = (line) => void process.stderr.write(`${line}\n`)): Promise<NewMachineResult> {
  const plan = await planNewMachine(ctx, name, options);
  for (const note of plan.notes) warn(`note: ${note}`);
  if (ctx.runner.dryRun) {
    for (const file of plan.files) {
      ctx.say(`would write ${file.path} (mode 0644):`);
      ctx.say(file.content.trimEnd());
    }
    ensureIdentity(ctx, plan.dir, name);
    const { staged, git } = await stage(ctx, plan, warn);
    return { plan, staged, git };
  }
  return withVmLock(ctx, name, 'new', async () => {
    refuseExisting(plan.dir, name);
    try {
      fs.mkdirSync(plan.dir, { mode: 0o755 });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'EEXIST') refuseExisting(plan.dir, name);
      throw error;
    }
    const written: string[] = [];
    try {
      for (const file of plan.files) {
        createFileExclusive(file.path, file.content, 0o644);
        written.push(file.path);
      }
      await ctx.runner.progress.step(`evaluate ${plan.files[0]!.path} back (nix eval)`, () => checkWrittenMeta(ctx.runner, plan.files[0]!.path, plan));
    } catch (error) {
      // Nothing of a machine that does not check out is left behind: the folder was made by this run.
      for (const file of written) removeFile(file);
      try {
        fs.rmdirSync(plan.dir);
      } catch {
        /* something else appeared in it: left as it is */
      }
      throw error;
    }
    for (const file of plan.files) ctx.say(`wrote ${file.path} (mode 0644)`);
    ensureIdentity(ctx, plan.dir, name);
    const { staged, git } = await stage(ctx, plan, warn);
    return { plan, staged, git };
  });
}

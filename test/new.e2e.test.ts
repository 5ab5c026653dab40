// ivm new and ivm profiles. First the rendering of meta.nix and default.nix (plain functions, checked
// with the real nix: every file parses and evaluates back to its values), then the real CLI in
// scratch projects: `ivm new web2 --profile web,zram ...` and `ivm create web2 --start` boots the
// stand-in guest with the identity ivm new made; git tracks exactly the public files; --dry-run
// writes nothing; bad input is exit 2 (or 3) and writes nothing; the wizard asks only on a terminal.
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, ensureNetwork, waitForState } from './support/libvirt.ts';
import { IVM_BIN, makeTestProject, type TestProject } from './support/ivm.ts';
import { parseStandinLog, repoRoot } from './support/standin.ts';
import {
  checkWrittenMeta,
  enabledProfiles,
  IVM_CATALOGUE_FILE,
  machineValues,
  nixLiteral,
  nixString,
  parseCatalogue,
  PUBLIC_FILES,
  readCatalogue,
  renderDefault,
  renderMeta,
  selectProfiles,
  type Catalogue,
} from '../src/core/machine/new-machine.ts';
import { validateMeta } from '../src/core/machine/machine.ts';
import { projectAt } from '../src/core/machine/project.ts';
import { Runner } from '../src/host/runner.ts';
import { readSettings } from '../src/host/settings.ts';
import { BadInputError } from '../src/errors.ts';

const CATALOGUE_FILE = path.join(repoRoot, 'modules', 'profiles', 'catalogue.json');
const repoCatalogue = JSON.parse(fs.readFileSync(CATALOGUE_FILE, 'utf8')) as { profiles: { name: string; description: string }[] };
const catalogue: Catalogue = { file: CATALOGUE_FILE, own: true, profiles: repoCatalogue.profiles };

/** A scratch folder for files the unit tests write (removed at the end). */
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-new-unit-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

let counter = 0;
function scratchFile(name: string, content: string): string {
  const dir = path.join(scratch, String(++counter));
  fs.mkdirSync(dir);
  const file = path.join(dir, name);
  fs.writeFileSync(file, content);
  return file;
}

async function nixParses(file: string): Promise<void> {
  await execa('nix-instantiate', ['--parse', file], { stdout: 'ignore' });
}

async function nixEvalJson(file: string): Promise<unknown> {
  const { stdout } = await execa('nix', ['eval', '--extra-experimental-features', 'nix-command flakes', '--json', '--file', file]);
  return JSON.parse(stdout);
}

/** Whether validateMeta (as this tree has it) takes these values. */
function metaAccepts(values: Record<string, unknown>): boolean {
  try {
    validateMeta('x.nix', values);
    return true;
  } catch {
    return false;
  }
}

describe('ivm new: rendering meta.nix and default.nix (real nix-instantiate --parse and nix eval)', () => {
  const base = { system: 'x86_64-linux', memory: 2048, vcpus: 2, varSize: '20G', network: 'default', virtType: 'kvm' };
  const cases: [string, Record<string, string>][] = [
    ['defaults', {}],
    ['flags', { memory: '1024', vcpus: '1', varSize: '128M', virtType: 'qemu', system: 'aarch64-linux' }],
    ['a reservation on a network', { network: 'lab', ip: '192.168.100.10' }],
    ['a bridge', { bridge: 'br0' }],
  ];
  it.each(cases)('meta.nix of %s parses and evaluates back to exactly its values, which validateMeta reads alike', async (_label, flags) => {
    const { values, meta } = machineValues('m/meta.nix', base, flags);
    const text = renderMeta('m', values);
    const file = scratchFile('meta.nix', text);
    await nixParses(file);
    expect(await nixEvalJson(file)).toEqual(values);
    expect(validateMeta(file, await nixEvalJson(file))).toEqual(meta);
    // Every key it sets is on its own line, with a comment.
    for (const key of Object.keys(values)) expect(text).toMatch(new RegExp(`^  ${key} = .*;\\s+# \\S`, 'm'));
  });

  it('writes every key out, network or bridge (the other as a comment), and the flags over the base', () => {
    const { values } = machineValues('m/meta.nix', base, { memory: '1024', varSize: '128M', virtType: 'qemu' });
    expect(values).toEqual({ ...base, memory: 1024, varSize: '128M', virtType: 'qemu' });
    const text = renderMeta('web2', values);
    expect(text).toContain('  memory = 1024;');
    expect(text).toContain('  varSize = "128M";');
    expect(text).toMatch(/^ {2}# bridge = "br0";/m);
    const bridged = machineValues('m/meta.nix', base, { bridge: 'br0' }).values;
    expect(bridged).not.toHaveProperty('network');
    expect(renderMeta('m', bridged)).toMatch(/^ {2}# network = "default";/m);
  });

  it('a static address on a bridge: written when validateMeta takes it, else refused with a clear message', async () => {
    const flags = { bridge: 'br0', ip: '192.168.1.50/24' };
    if (metaAccepts({ system: 'x86_64-linux', bridge: 'br0', ipAddress: '192.168.1.50/24' })) {
      const { values, meta } = machineValues('m/meta.nix', base, flags);
      const file = scratchFile('meta.nix', renderMeta('m', values));
      expect(validateMeta(file, await nixEvalJson(file))).toEqual(meta);
    } else {
      expect(() => machineValues('m/meta.nix', base, flags)).toThrow(/--ip with a bridge \(br0\)/);
    }
    // Without a prefix, no version takes it.
    expect(() => machineValues('m/meta.nix', base, { bridge: 'br0', ip: '192.168.1.50' })).toThrow(/--ip with a bridge \(br0\)/);
  });

  it.each([
    [{ memory: '0' }, /`memory` must be a positive integer, not 0; nothing was written/],
    [{ memory: 'lots' }, /`memory` must be a positive integer, not "lots"/],
    [{ memory: '0x10' }, /`memory` must be a positive integer, not "0x10"/],
    [{ vcpus: '1.5' }, /`vcpus` must be a positive integer/],
    [{ varSize: '10M' }, /`varSize` must be at least 64M/],
    [{ varSize: 'big' }, /`varSize` must be a size like/],
    [{ ip: '1.2.3' }, /`ipAddress` must be an IPv4 address/],
    [{ system: 'riscv64-linux' }, /`system` must be one of/],
    [{ virtType: 'xen' }, /`virtType` must be "kvm" or "qemu"/],
    [{ network: 'default', bridge: 'br0' }, /--network and --bridge: give one, not both/],
    [{ network: 'a b' }, /`network` must be a libvirt network name/],
  ])('refuses %j (exit 2), as validateMeta does', (flags, message) => {
    let error: unknown;
    try {
      machineValues('m/meta.nix', base, flags);
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(BadInputError);
    expect((error as Error).message).toMatch(message);
  });

  it('default.nix imports every ivm module and enables the profiles, each with its catalogue line; it parses', async () => {
    const text = renderDefault('web2', ['web', 'zram', 'block-private-networks'], catalogue);
    await nixParses(scratchFile('default.nix', text));
    expect(text).toContain('{ ivmModules, ... }:');
    expect(text).toContain('  imports = [ ivmModules.default ];');
    for (const name of ['web', 'zram', 'block-private-networks']) {
      const description = catalogue.profiles.find((p) => p.name === name)!.description;
      expect(text).toContain(`  # ${name}: ${description}\n  ivm.profiles.${name}.enable = true;\n`);
    }
    expect(enabledProfiles(text)).toEqual(['web', 'zram', 'block-private-networks']);
    const none = renderDefault('m', [], catalogue);
    await nixParses(scratchFile('default.nix', none));
    expect(enabledProfiles(none)).toEqual([]);
    expect(none).not.toMatch(/^\s*ivm\.profiles/m);
  });

  it("reads a default.nix's profiles from its enable lines, not from comments (machines/web: web)", () => {
    expect(enabledProfiles(fs.readFileSync(path.join(repoRoot, 'machines', 'web', 'default.nix'), 'utf8'))).toEqual(['web']);
    expect(enabledProfiles(fs.readFileSync(path.join(repoRoot, 'machines', 'default', 'default.nix'), 'utf8'))).toEqual([]);
    expect(enabledProfiles('{\n  # ivm.profiles.web.enable = true;\n  /* ivm.profiles.dev.enable = true; */\n  ivm.profiles.zram.enable = true;\n  ivm.profiles.dev.enable = false;\n}\n')).toEqual(['zram']);
  });

  it('escapes Nix strings and literals so that they evaluate back to the same JSON', async () => {
    const value = { s: 'a"b\\c${d}\ne\tf', n: 7, neg: -3, b: true, l: ['x', 1], e: [], o: { 'a-b': 1, 'with space': 'y' } };
    const file = scratchFile('v.nix', `${nixLiteral(value)}\n`);
    expect(await nixEvalJson(file)).toEqual(value);
    expect(nixString('plain')).toBe('"plain"');
  });

  it('checks a written meta.nix by evaluating it back: one that gives other values is an error', async () => {
    const runner = new Runner(readSettings(), { dryRun: false, verbose: false });
    const written = machineValues('m/meta.nix', base, { memory: '1024' });
    const good = scratchFile('meta.nix', renderMeta('m', written.values));
    await expect(checkWrittenMeta(runner, good, written)).resolves.toBeUndefined();
    const other = scratchFile('meta.nix', renderMeta('m', { ...written.values, memory: 2048 }));
    await expect(checkWrittenMeta(runner, other, written)).rejects.toThrow(/evaluates to .*not the values it was written from/);
  });
});

describe('the profile catalogue', () => {
  it("is the project's own modules/profiles/catalogue.json when it has one, else ivm's copy", () => {
    const own = path.join(scratch, 'own');
    fs.mkdirSync(path.join(own, 'modules', 'profiles'), { recursive: true });
    fs.writeFileSync(path.join(own, 'modules', 'profiles', 'catalogue.json'), JSON.stringify({ profiles: [{ name: 'mine', description: 'my own' }] }));
    expect(readCatalogue(projectAt(own))).toEqual({ file: path.join(own, 'modules', 'profiles', 'catalogue.json'), own: true, profiles: [{ name: 'mine', description: 'my own' }] });
    const bare = path.join(scratch, 'bare');
    fs.mkdirSync(bare);
    expect(readCatalogue(projectAt(bare))).toEqual({ file: IVM_CATALOGUE_FILE, own: false, profiles: repoCatalogue.profiles });
    expect(IVM_CATALOGUE_FILE).toBe(CATALOGUE_FILE);
    expect(readCatalogue(undefined).profiles).toEqual(repoCatalogue.profiles);
  });

  it('refuses a link where the catalogue belongs', () => {
    const linked = path.join(scratch, 'linked');
    fs.mkdirSync(path.join(linked, 'modules', 'profiles'), { recursive: true });
    fs.symlinkSync(CATALOGUE_FILE, path.join(linked, 'modules', 'profiles', 'catalogue.json'));
    expect(() => readCatalogue(projectAt(linked))).toThrow(/is a symbolic link/);
  });

  it.each([
    ['{"profiles": [{"name": "Web", "description": "x"}]}', /not lowercase letters/],
    ['{"profiles": [{"name": "a b", "description": "x"}]}', /not lowercase letters/],
    ['{"profiles": [{"name": "w", "description": "x"}, {"name": "w", "description": "y"}]}', /listed twice/],
    ['{"profiles": [{"name": "w", "description": "two\\nlines"}]}', /one line of text/],
    ['{"profile": []}', /no "profiles" list/],
    ['not json', /not JSON/],
  ])('refuses the malformed catalogue %s', (text, message) => {
    expect(() => parseCatalogue('c.json', text)).toThrow(message);
  });

  it('selects --profile names (comma-separated, given once or more, each once) and refuses an unknown one with the list', () => {
    expect(selectProfiles(['web,zram', 'web', ' dev '], catalogue)).toEqual(['web', 'zram', 'dev']);
    expect(selectProfiles([''], catalogue)).toEqual([]);
    expect(() => selectProfiles(['web,nope'], catalogue)).toThrow(`unknown profile "nope": the profiles are ${repoCatalogue.profiles.map((p) => p.name).join(', ')}`);
  });
});

const NAME = 'web2';

describe('ivm new web2, then ivm create web2 --start (real nix eval, git, qemu-img, libvirt; stand-in nix build)', () => {
  let project: TestProject;
  let dir: string;
  let made: { exitCode: number; stdout: string; stderr: string };
  const git = async (...args: string[]) => execa('git', ['-C', project.root, ...args], { reject: false });

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(NAME);
    project = await makeTestProject('ivm-new-');
    // The project's own flake files ivm new reads: the catalogue, and the .gitignore that keeps host keys out of git.
    fs.mkdirSync(path.join(project.root, 'modules', 'profiles'), { recursive: true });
    fs.copyFileSync(CATALOGUE_FILE, path.join(project.root, 'modules', 'profiles', 'catalogue.json'));
    fs.copyFileSync(path.join(repoRoot, '.gitignore'), path.join(project.root, '.gitignore'));
    await project.useStandinBase('a');
    dir = path.join(project.root, 'machines', NAME);
    made = await project.ivm(['new', NAME, '--profile', 'web,zram', '--memory', '1024', '--var-size', '128M', '--virt-type', 'qemu']);
  });

  afterAll(async () => {
    await cleanupDomain(NAME);
    await project?.remove();
  });

  it('writes meta.nix and default.nix from the flags, both plain Nix that parses', async () => {
    expect(made.stderr).not.toMatch(/internal error/);
    expect(made.exitCode, made.stderr).toBe(0);
    const meta = fs.readFileSync(path.join(dir, 'meta.nix'), 'utf8');
    const defaultNix = fs.readFileSync(path.join(dir, 'default.nix'), 'utf8');
    await nixParses(path.join(dir, 'meta.nix'));
    await nixParses(path.join(dir, 'default.nix'));
    expect(await nixEvalJson(path.join(dir, 'meta.nix'))).toEqual({
      system: 'x86_64-linux',
      memory: 1024,
      vcpus: 2,
      varSize: '128M',
      network: 'default',
      virtType: 'qemu',
    });
    expect(meta).toMatch(/^# Machine "web2"/);
    expect(enabledProfiles(defaultNix)).toEqual(['web', 'zram']);
    expect(defaultNix).toContain('imports = [ ivmModules.default ];');
    expect(made.stdout).toContain(`wrote ${path.join(dir, 'meta.nix')}`);
    expect(made.stdout).toContain('staged with git: machines/web2/meta.nix');
    expect(made.stdout).toContain(`next: ivm create ${NAME} --start`);
    // No question was asked: stdin is not a terminal.
    expect(made.stderr).not.toContain('a few questions');
  });

  it('created the identity, and git tracks exactly the public files; the private key is git-ignored', async () => {
    for (const file of ['machine-id', 'hostname', 'ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub', 'known_hosts']) {
      expect(fs.existsSync(path.join(dir, file)), file).toBe(true);
    }
    expect(fs.statSync(path.join(dir, 'ssh_host_ed25519_key')).mode & 0o777).toBe(0o600);
    const listed = (await git('ls-files', 'machines/web2')).stdout.split('\n').filter(Boolean).sort();
    expect(listed).toEqual(['default.nix', 'hostname', 'known_hosts', 'machine-id', 'meta.nix', 'ssh_host_ed25519_key.pub'].map((f) => `machines/web2/${f}`));
    expect(listed).toEqual(PUBLIC_FILES.map((f) => `machines/web2/${f}`).sort());
    const ignored = await git('check-ignore', 'machines/web2/ssh_host_ed25519_key');
    expect(ignored.exitCode).toBe(0);
    expect(ignored.stdout.trim()).toBe('machines/web2/ssh_host_ed25519_key');
    expect(made.stderr).not.toContain('warning');
    // Only those files were added: nothing else of the project (its flake.nix, .gitignore) is in the index.
    expect((await git('diff', '--cached', '--name-only')).stdout.split('\n').filter(Boolean).sort()).toEqual(listed);
  });

  it('ivm create web2 --start boots the stand-in guest, which sees the identity ivm new made', async () => {
    const created = await project.ivm(['create', NAME, '--start']);
    expect(created.exitCode, created.stderr).toBe(0);
    await waitForState(NAME, 'shut off', 180_000);
    const log = parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${NAME}-serial.log`), 'utf8'));
    expect(log.errors).toEqual([]);
    expect(log.complete).toBe(true);
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    expect(log.files.hostname?.content).toBe(`${NAME}\n`);
    expect(log.files['ssh_host_ed25519_key.pub']?.content).toBe(fs.readFileSync(path.join(dir, 'ssh_host_ed25519_key.pub'), 'utf8'));
    expect(log.files.ssh_host_ed25519_key?.modeOctal).toBe('0600');
    expect(log.vdbWrite).toBe('ok');
    // The domain has what meta.nix says: 1024 MiB, TCG.
    const xml = fs.readFileSync(path.join(project.root, 'libvirt', `${NAME}.xml`), 'utf8');
    expect(xml).toMatch(/<domain type='qemu'/);
    expect(xml).toContain("<memory unit='MiB'>1024</memory>");
  });

  it('--from starts from another machine: its values and profiles, the flags over them', async () => {
    const result = await project.ivm(['new', 'web3', '--from', NAME, '--memory', '2048']);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toContain('web3 starts from web2');
    const web3 = path.join(project.root, 'machines', 'web3');
    expect(await nixEvalJson(path.join(web3, 'meta.nix'))).toEqual({ system: 'x86_64-linux', memory: 2048, vcpus: 2, varSize: '128M', network: 'default', virtType: 'qemu' });
    expect(enabledProfiles(fs.readFileSync(path.join(web3, 'default.nix'), 'utf8'))).toEqual(['web', 'zram']);
    const only = await project.ivm(['new', 'web4', '--from', NAME, '--profile', 'dev']);
    expect(only.exitCode, only.stderr).toBe(0);
    expect(enabledProfiles(fs.readFileSync(path.join(project.root, 'machines', 'web4', 'default.nix'), 'utf8'))).toEqual(['dev']);
  });

  it('--dry-run prints the files and the git command, and writes nothing', async () => {
    const before = (await git('status', '--porcelain', '--ignored')).stdout;
    const result = await project.ivm(['--dry-run', 'new', 'dry1', '--profile', 'web', '--virt-type', 'qemu']);
    expect(result.exitCode, result.stderr).toBe(0);
    const dry = path.join(project.root, 'machines', 'dry1');
    expect(result.stdout).toContain(`would write ${path.join(dry, 'meta.nix')} (mode 0644):\n# Machine "dry1"`);
    expect(result.stdout).toContain('  virtType = "qemu";');
    expect(result.stdout).toContain(`would write ${path.join(dry, 'default.nix')} (mode 0644):`);
    expect(result.stdout).toContain('  ivm.profiles.web.enable = true;');
    expect(result.stdout).toContain(`would write ${path.join(dry, 'ssh_host_ed25519_key')} (mode 0600)`);
    expect(result.stdout).not.toContain('PRIVATE KEY');
    expect(result.stdout).toContain(`git -C ${project.root} add -- ${PUBLIC_FILES.map((f) => `machines/dry1/${f}`).join(' ')}`);
    expect(fs.existsSync(dry)).toBe(false);
    expect(fs.existsSync(path.join(project.root, '.ivm', 'locks', 'vm-dry1.lock'))).toBe(false);
    expect((await git('status', '--porcelain', '--ignored')).stdout).toBe(before);
  });

  const refused: [string, string[], number, RegExp][] = [
    ['an unknown profile, with the list', ['bad1', '--profile', 'web,nope'], 2, /unknown profile "nope": the profiles are web, docker, podman, dev, zram, block-private-networks, ca-trust, console-login/],
    ['--memory 0', ['bad1', '--memory', '0'], 2, /`memory` must be a positive integer, not 0/],
    ['--memory lots', ['bad1', '--memory', 'lots'], 2, /`memory` must be a positive integer, not "lots"/],
    ['a bad size', ['bad1', '--var-size', '10M'], 2, /`varSize` must be at least 64M/],
    ['a size that is none', ['bad1', '--var-size', 'huge'], 2, /`varSize` must be a size like/],
    ['a bad address', ['bad1', '--ip', '192.168.100.300'], 2, /`ipAddress` must be an IPv4 address/],
    ['--network with --bridge', ['bad1', '--network', 'default', '--bridge', 'br0'], 2, /--network and --bridge: give one, not both/],
    ['an address without a prefix on a bridge', ['bad1', '--bridge', 'br0', '--ip', '192.168.1.50'], 2, /--ip with a bridge \(br0\)/],
    ['an unknown --from', ['bad1', '--from', 'nosuch'], 2, /unknown machine "nosuch"/],
    ['a bad name', ['Bad_1'], 2, /invalid machine name "Bad_1"/],
    ['a name that is a path', ['../etc'], 2, /invalid machine name/],
    ['an existing machine', [NAME, '--memory', '512'], 3, /machines\/web2 already exists/],
  ];
  it.each(refused)('refuses %s, and writes nothing', async (_label, args, code, message) => {
    const meta = fs.readFileSync(path.join(dir, 'meta.nix'), 'utf8');
    const before = (await git('status', '--porcelain', '--ignored')).stdout;
    const result = await project.ivm(['new', ...args]);
    expect(result.stderr).not.toMatch(/internal error|at .*\.[jt]s:\d+/);
    expect(result.stderr).toMatch(message);
    expect(result.exitCode).toBe(code);
    expect(fs.existsSync(path.join(project.root, 'machines', 'bad1'))).toBe(false);
    expect(fs.readFileSync(path.join(dir, 'meta.nix'), 'utf8')).toBe(meta);
    expect((await git('status', '--porcelain', '--ignored')).stdout).toBe(before);
  });

  it('evaluates the written meta.nix back through the runner: when that fails, what it wrote is removed again', async () => {
    const before = (await git('status', '--porcelain', '--ignored')).stdout;
    const result = await project.ivm(['--verbose', 'new', 'rolled', '--virt-type', 'qemu'], { NIX: 'false' });
    expect(result.stderr).toMatch(/^\+ false eval --extra-experimental-features 'nix-command flakes' --json --file \S+\/machines\/rolled\/meta\.nix$/m);
    expect(result.stderr).toContain('machines/rolled/meta.nix does not evaluate');
    expect(result.exitCode).toBe(2);
    expect(fs.existsSync(path.join(project.root, 'machines', 'rolled'))).toBe(false);
    expect((await git('status', '--porcelain', '--ignored')).stdout).toBe(before);
  });

  it('a static address on a bridge: made if validateMeta takes ADDRESS/PREFIX there, else refused (exit 2)', async () => {
    const result = await project.ivm(['new', 'bridged', '--bridge', 'br0', '--ip', '192.168.1.50/24', '--virt-type', 'qemu']);
    const bridged = path.join(project.root, 'machines', 'bridged');
    if (metaAccepts({ system: 'x86_64-linux', bridge: 'br0', ipAddress: '192.168.1.50/24' })) {
      expect(result.exitCode, result.stderr).toBe(0);
      expect(await nixEvalJson(path.join(bridged, 'meta.nix'))).toMatchObject({ bridge: 'br0', ipAddress: '192.168.1.50/24' });
    } else {
      expect(result.exitCode).toBe(2);
      expect(result.stderr).toMatch(/--ip with a bridge \(br0\)/);
      expect(fs.existsSync(bridged)).toBe(false);
    }
  });

  it('on a terminal and without flags it asks (profiles, memory, vcpus, /var size, network), asking again after a bad answer', async () => {
    const answers = ['web,nope', 'web', '0', '768', '1', '256M', ''].join('\n');
    const run = await execa('script', ['-qfec', `${process.execPath} ${IVM_BIN} new wiz`, '/dev/null'], {
      cwd: project.root,
      env: project.env,
      input: `${answers}\n`,
      reject: false,
      timeout: 120_000,
    });
    expect(run.exitCode, run.stdout).toBe(0);
    expect(run.stdout).toContain('a few questions');
    expect(run.stdout).toContain('unknown profile "nope"');
    expect(run.stdout).toContain('`memory` must be a positive integer, not 0');
    const wiz = path.join(project.root, 'machines', 'wiz');
    expect(await nixEvalJson(path.join(wiz, 'meta.nix'))).toMatchObject({ memory: 768, vcpus: 1, varSize: '256M', network: 'default' });
    expect(enabledProfiles(fs.readFileSync(path.join(wiz, 'default.nix'), 'utf8'))).toEqual(['web']);
  });

  it('without a terminal and without flags it asks nothing: the defaults', async () => {
    const result = await project.ivm(['new', 'plain']);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).not.toContain('a few questions');
    expect(await nixEvalJson(path.join(project.root, 'machines', 'plain', 'meta.nix'))).toEqual({
      system: os.arch() === 'arm64' ? 'aarch64-linux' : 'x86_64-linux',
      memory: 2048,
      vcpus: 2,
      varSize: '20G',
      network: 'default',
      virtType: 'kvm',
    });
  });

  it('ivm profiles lists every catalogue entry (and --json)', async () => {
    const listed = await project.ivm(['profiles']);
    expect(listed.exitCode, listed.stderr).toBe(0);
    const lines = listed.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^PROFILE\s+DESCRIPTION$/);
    expect(lines.slice(1).map((l) => l.split(/\s{2,}/))).toEqual(repoCatalogue.profiles.map((p) => [p.name, p.description]));
    const json = await project.ivm(['profiles', '--json']);
    expect(json.exitCode, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual(repoCatalogue.profiles);
  });
});

describe("ivm new and ivm profiles read the project's own catalogue, else ivm's; a project outside git", () => {
  const projects: TestProject[] = [];
  afterAll(async () => {
    for (const p of projects) await p.remove();
  });

  it("a project's own catalogue is the one listed and checked against", async () => {
    const project = await makeTestProject('ivm-new-own-');
    projects.push(project);
    fs.mkdirSync(path.join(project.root, 'modules', 'profiles'), { recursive: true });
    const own = { profiles: [...repoCatalogue.profiles.filter((p) => p.name !== 'zram'), { name: 'extra', description: 'a profile of this project only' }] };
    fs.writeFileSync(path.join(project.root, 'modules', 'profiles', 'catalogue.json'), JSON.stringify(own));
    const listed = await project.ivm(['profiles', '--json']);
    expect(JSON.parse(listed.stdout)).toEqual(own.profiles);
    const refused = await project.ivm(['new', 'x', '--profile', 'zram']);
    expect(refused.exitCode).toBe(2);
    expect(refused.stderr).toMatch(/unknown profile "zram": the profiles are .*, extra/);
    const made = await project.ivm(['new', 'x', '--profile', 'extra']);
    expect(made.exitCode, made.stderr).toBe(0);
    expect(fs.readFileSync(path.join(project.root, 'machines', 'x', 'default.nix'), 'utf8')).toContain(
      '  # extra: a profile of this project only\n  ivm.profiles.extra.enable = true;\n',
    );
  });

  it("a project without one gets ivm's catalogue; outside a git work tree the files are written, and ivm says to add them (exit 0)", async () => {
    const project = await makeTestProject('ivm-new-nogit-');
    projects.push(project);
    fs.rmSync(path.join(project.root, '.git'), { recursive: true, force: true });
    // git must not find a repository above the scratch folder either.
    const env = { GIT_CEILING_DIRECTORIES: path.dirname(project.root) };
    const listed = await project.ivm(['profiles', '--json'], env);
    expect(JSON.parse(listed.stdout)).toEqual(repoCatalogue.profiles);
    const made = await project.ivm(['new', 'loose', '--profile', 'zram', '--virt-type', 'qemu'], env);
    expect(made.exitCode, made.stderr).toBe(0);
    expect(made.stdout).toContain(`${project.root} is not a git work tree: nothing was staged. Add the machine's public files to git before ivm build`);
    expect(made.stdout).toContain(`git add -- ${PUBLIC_FILES.map((f) => `machines/loose/${f}`).join(' ')}`);
    for (const file of PUBLIC_FILES) expect(fs.existsSync(path.join(project.root, 'machines', 'loose', file)), file).toBe(true);
    expect(fs.existsSync(path.join(project.root, '.git'))).toBe(false);
  });

  it('ivm profiles works outside any project: ivm\'s catalogue', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-noproject-'));
    try {
      const run = await execa(process.execPath, [IVM_BIN, 'profiles', '--json'], { cwd: dir, reject: false, env: { IVM_ROOT: '' } });
      expect(run.exitCode, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toEqual(repoCatalogue.profiles);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

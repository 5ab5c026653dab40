// Offline checks of the NixOS side (flake.nix, flake.lock, modules/, machines/). Nothing here can
// fetch nixpkgs or build NixOS, so:
// - every .nix file must parse (nix-instantiate --parse also rejects undefined variables);
// - meta.nix files must evaluate to an attribute set with a valid `system`;
// - the identity file names and modes the modules use are evaluated in Nix (from the same
//   identity-files.json, through modules/identity-files.nix) and compared with the JSON read here;
// - the modules are called with a stand-in lib and config (test/nix/eval-modules.nix) and what they
//   set is checked, including their shell snippets, run here with bash;
// - the flake's plumbing is evaluated against a stand-in nixpkgs (test/nix/stub-nixpkgs) with
//   --override-input, in a copy of the flake files (a git flake would only see tracked files);
// - flake.lock pins exactly the agreed nixpkgs.
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const stubNixpkgs = path.join(repo, 'test', 'nix', 'stub-nixpkgs');
const evalModulesFile = path.join(repo, 'test', 'nix', 'eval-modules.nix');
const nixEnv = { NIX_CONFIG: 'experimental-features = nix-command flakes\nbuild-users-group =' };
const SYSTEMS = ['x86_64-linux', 'aarch64-linux'];

interface IdentityFile {
  name: string;
  mode: string;
  kind: string;
}
interface IdentityData {
  varLabel: string;
  guestIdentityDir: string;
  varDirs: { path: string; mode: string }[];
  files: IdentityFile[];
  hostFiles: { name: string }[];
}
const identity = JSON.parse(fs.readFileSync(path.join(repo, 'identity-files.json'), 'utf8')) as IdentityData;

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

async function nix(args: string[], cwd = repo): Promise<string> {
  const result = await execa('nix', args, { cwd, env: nixEnv, reject: false });
  if (result.exitCode !== 0) {
    throw new Error(`nix ${args.join(' ')} failed (${result.exitCode}):\n${result.stderr}`);
  }
  return result.stdout;
}

async function nixJson<T = Json>(args: string[], cwd = repo): Promise<T> {
  return JSON.parse(await nix(['eval', '--json', ...args], cwd)) as T;
}

function obj(value: Json | undefined, what: string): JsonObject {
  if (value === null || value === undefined || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error(`${what} is not an attribute set: ${JSON.stringify(value)}`);
  }
  return value;
}

function get(value: Json | undefined, ...keys: string[]): Json | undefined {
  let current: Json | undefined = value;
  for (const key of keys) {
    if (current === null || current === undefined || typeof current !== 'object' || Array.isArray(current)) return undefined;
    current = current[key];
  }
  return current;
}

function strings(value: Json | undefined): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value)) return value.flatMap(strings);
  if (value !== null && typeof value === 'object') return Object.values(value).flatMap(strings);
  return [];
}

function nixFiles(dir: string): string[] {
  const skip = new Set(['node_modules', '.git', '.cache', '.ivm', 'libvirt']);
  const found: string[] = [];
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    if (skip.has(entry.name)) continue;
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...nixFiles(full));
    else if (entry.isFile() && entry.name.endsWith('.nix')) found.push(full);
  }
  return found;
}

const modulesDir = path.join(repo, 'modules');
const helperFile = 'identity-files.nix';
const moduleNames = fs
  .readdirSync(modulesDir)
  .filter((f) => f.endsWith('.nix') && f !== helperFile)
  .map((f) => f.slice(0, -'.nix'.length))
  .sort();

function machineNames(root: string): string[] {
  const dir = path.join(root, 'machines');
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isDirectory() && fs.existsSync(path.join(dir, e.name, 'meta.nix')))
    .map((e) => e.name)
    .sort();
}

describe('nix files', () => {
  it('every .nix file in the repository parses', async () => {
    const files = nixFiles(repo);
    expect(files.length).toBeGreaterThan(15);
    const failures: string[] = [];
    await Promise.all(
      files.map(async (file) => {
        const result = await execa('nix-instantiate', ['--parse', file], { env: nixEnv, reject: false });
        if (result.exitCode !== 0) failures.push(`${path.relative(repo, file)}: ${result.stderr}`);
      }),
    );
    expect(failures).toEqual([]);
  });

  it('every machines/*/meta.nix evaluates to an attribute set with a valid system', async () => {
    const names = machineNames(repo);
    expect(names).toEqual(expect.arrayContaining(['default', 'web']));
    for (const name of names) {
      const meta = obj(await nixJson(['--file', path.join(repo, 'machines', name, 'meta.nix')]), `machines/${name}/meta.nix`);
      expect(SYSTEMS, `machines/${name}/meta.nix system`).toContain(meta.system);
      expect(fs.existsSync(path.join(repo, 'machines', name, 'default.nix')), `machines/${name}/default.nix`).toBe(true);
    }
  });

  it('machines/default/meta.nix is minimal; web opens port 80 through its tcp_ports identity file', async () => {
    expect(Object.keys(obj(await nixJson(['--file', 'machines/default/meta.nix']), 'meta'))).toEqual(['system']);
    const ports = fs.readFileSync(path.join(repo, 'machines', 'web', 'tcp_ports'), 'utf8').split('\n').map((l) => l.trim());
    expect(ports).toContain('80');
  });

  it('machines/ hold only meta.nix, default.nix and files named in identity-files.json', () => {
    const allowed = new Set(['meta.nix', 'default.nix', ...identity.files.map((f) => f.name), ...identity.hostFiles.map((f) => f.name)]);
    for (const name of machineNames(repo)) {
      for (const file of fs.readdirSync(path.join(repo, 'machines', name))) {
        expect(allowed.has(file), `machines/${name}/${file}`).toBe(true);
      }
    }
  });
});

describe('flake.lock', () => {
  it('pins nixpkgs to the agreed nixos-25.05 revision, with exactly these values', () => {
    const lock = JSON.parse(fs.readFileSync(path.join(repo, 'flake.lock'), 'utf8')) as JsonObject;
    expect(lock.version).toBe(7);
    expect(lock.root).toBe('root');
    const nodes = obj(lock.nodes, 'nodes');
    expect(Object.keys(nodes).sort()).toEqual(['nixpkgs', 'root']);
    expect(get(nodes, 'root', 'inputs')).toEqual({ nixpkgs: 'nixpkgs' });
    expect(get(nodes, 'nixpkgs', 'locked')).toEqual({
      lastModified: 1767313136,
      narHash: 'sha256-16KkgfdYqjaeRGBaYsNrhPRRENs0qzkQVUooNHtoy2w=',
      owner: 'NixOS',
      repo: 'nixpkgs',
      rev: 'ac62194c3917d5f474c1a844b6fd6da2db95077d',
      type: 'github',
    });
    expect(get(nodes, 'nixpkgs', 'original')).toEqual({ owner: 'NixOS', ref: 'nixos-25.05', repo: 'nixpkgs', type: 'github' });
    expect(fs.readFileSync(path.join(repo, 'flake.nix'), 'utf8')).toContain('inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";');
  });
});

describe('identity files', () => {
  const guestPath = (name: string): string => `${identity.guestIdentityDir}/${name}`;

  it('the names and modes the modules use (evaluated in Nix) are those of identity-files.json', async () => {
    const used = obj(await nixJson(['--file', path.join(modulesDir, helperFile), 'used']), 'used');
    const byName = new Map(identity.files.map((f) => [f.name, f]));
    for (const [role, value] of Object.entries(used)) {
      const entry = obj(value, role);
      const file = byName.get(String(entry.name));
      expect(file, `role ${role}: ${String(entry.name)}`).toBeDefined();
      expect(entry).toEqual({ name: file?.name, mode: file?.mode, kind: file?.kind, path: guestPath(file?.name ?? '') });
    }
    // Every file the CLI writes is read by some module.
    expect(new Set(Object.values(used).map((v) => get(v, 'name')))).toEqual(new Set(identity.files.map((f) => f.name)));
  });

  it('the helper reads varLabel, the identity folder and varDirs from the JSON', async () => {
    const helper = obj(await nixJson(['--file', path.join(modulesDir, helperFile), '--apply', 'h: { inherit (h) dir varLabel varDirs; }']), 'helper');
    expect(helper.dir).toBe(identity.guestIdentityDir);
    expect(helper.varLabel).toBe(identity.varLabel);
    expect(helper.varDirs).toEqual(identity.varDirs.map((d) => ({ ...d, guestPath: `/var${d.path}` })));
  });

  it('modules spell no identity path themselves and only use roles the helper defines', async () => {
    const roles = await nixJson<string[]>(['--file', path.join(modulesDir, helperFile), '--apply', 'h: builtins.attrNames h.roles']);
    for (const name of moduleNames) {
      const text = fs.readFileSync(path.join(modulesDir, `${name}.nix`), 'utf8');
      const code = text
        .split('\n')
        .filter((line) => !line.trim().startsWith('#'))
        .join('\n');
      expect(code, `${name}.nix`).not.toContain(identity.guestIdentityDir);
      expect(code, `${name}.nix reads the JSON itself`).not.toMatch(/identity-files\.json"?\s*\)|\.\.\/identity-files\.json|fromJSON/);
      const referenced = [
        ...[...code.matchAll(/ids\.roles\.([A-Za-z0-9_]+)/g)].map((m) => m[1] ?? ''),
        ...[...code.matchAll(/inherit \(ids\.roles\)([^;]*);/g)].flatMap((m) => (m[1] ?? '').trim().split(/\s+/)),
      ];
      for (const role of referenced) expect(roles, `${name}.nix uses ids.roles.${role}`).toContain(role);
    }
  });
});

describe('modules (evaluated with a stand-in lib and config)', () => {
  let report: JsonObject;
  let config: JsonObject;
  const cfg = (module: string, ...keys: string[]): Json | undefined => get(config, module, ...keys);

  beforeAll(async () => {
    report = obj(await nixJson(['--file', evalModulesFile]), 'report');
    config = obj(report.config, 'config');
  });

  it('every module evaluates and its option defaults have their declared types', () => {
    expect(report.modules).toEqual(moduleNames);
    expect(report.badDefaults).toEqual([]);
    for (const [module, imports] of Object.entries(obj(report.imports, 'imports'))) {
      for (const file of strings(imports)) expect(fs.existsSync(file), `${module} imports ${file}`).toBe(true);
    }
  });

  it('every identity path in the modules is a file of identity-files.json, and each file is used', () => {
    const prefix = `${identity.guestIdentityDir}/`;
    const mentioned = new Set<string>();
    for (const s of strings(config)) {
      for (const m of s.matchAll(new RegExp(`${prefix.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}[A-Za-z0-9._-]+`, 'g'))) mentioned.add(m[0]);
    }
    expect(mentioned).toEqual(new Set(identity.files.map((f) => guestPathOf(f.name))));
  });

  it('placeholders in /etc have the modes of identity-files.json', () => {
    const mode = (name: string): string | undefined => identity.files.find((f) => f.name === name)?.mode;
    expect(cfg('identity', 'environment', 'etc', 'machine-id')).toEqual({ text: '', mode: mode('machine-id') });
    expect(cfg('identity', 'environment', 'etc', 'hostname')).toEqual({ text: '', mode: mode('hostname') });
    expect(get(cfg('dns-identity', 'environment', 'etc', 'resolv.conf'), 'mode')).toBe(mode('resolv.conf'));
    expect(cfg('hosts-identity', 'environment', 'etc', 'hosts')).toEqual({ mode: mode('hosts') });
  });

  it('filesystem: read-only / and /boot, /var by label needed for boot and grown, binds, tmpfs /tmp', () => {
    const fsys = obj(cfg('filesystem', 'fileSystems'), 'fileSystems');
    expect(get(fsys, '/', 'options')).toContain('ro');
    expect(get(fsys, '/', 'noCheck')).toBe(true);
    expect(get(fsys, '/', 'autoResize')).toBe(false);
    expect(get(fsys, '/', 'device')).toBe(`/dev/disk/by-label/${String(get(report.options, 'ivm', 'filesystem', 'rootLabel'))}`);
    expect(get(fsys, '/boot', 'options')).toContain('ro');
    expect(get(fsys, '/var')).toEqual({ device: `/dev/disk/by-label/${identity.varLabel}`, fsType: 'ext4', autoResize: true, neededForBoot: true });
    expect(get(fsys, '/home')).toEqual({ device: '/var/home', fsType: 'none', options: ['bind'] });
    expect(get(fsys, '/root')).toEqual({ device: '/var/root', fsType: 'none', options: ['bind'] });
    expect(cfg('filesystem', 'boot', 'tmp', 'useTmpfs')).toBe(true);
    // Its tmpfiles rules would create /lib64 and /lib links on the read-only root at every boot.
    expect(cfg('filesystem', 'environment', 'stub-ld', 'enable')).toBe(false);
  });

  it('identity: machine-id and hostname bound from /var/identity in the initrd; no hostname in the image', () => {
    for (const name of ['machine-id', 'hostname']) {
      const mount = obj(cfg('identity', 'fileSystems', `/etc/${name}`), name);
      expect(mount.device).toBe(guestPathOf(name));
      expect(mount.neededForBoot).toBe(true);
      expect(mount.options).toEqual(expect.arrayContaining(['bind', 'ro']));
    }
    expect(cfg('identity', 'networking', 'hostName')).toBe('');
  });

  it('boot: systemd-boot, EFI variables untouched, ESP writers masked, no growpart', () => {
    expect(cfg('boot', 'boot', 'loader', 'systemd-boot', 'enable')).toBe(true);
    expect(cfg('boot', 'boot', 'loader', 'efi', 'canTouchEfiVariables')).toBe(false);
    expect(cfg('boot', 'systemd', 'services', 'systemd-boot-random-seed', 'enable')).toBe(false);
    expect(cfg('boot', 'boot', 'growPartition')).toBe(false);
  });

  it('overlay-etc: immutable /etc overlay, systemd initrd, userborn, machine-id placeholder', () => {
    expect(cfg('overlay-etc', 'system', 'etc', 'overlay')).toEqual({ enable: true, mutable: false });
    expect(cfg('overlay-etc', 'boot', 'initrd', 'systemd', 'enable')).toBe(true);
    expect(cfg('overlay-etc', 'services', 'userborn', 'enable')).toBe(true);
    expect(cfg('overlay-etc', 'environment', 'etc', 'machine-id')).toEqual({ text: '', mode: '0444' });
    // The etc snippet is skipped inside nixos-enter (the image build's boot loader installation).
    const etc = obj(cfg('overlay-etc', 'system', 'activationScripts', 'etc'), 'activationScripts.etc');
    expect(etc.deps).toEqual(['users', 'groups', 'specialfs']);
    expect(String(etc.text)).toMatch(/^if \[\[ -z "\$\{IN_NIXOS_ENTER:-\}" \]\]; then\n\s*stub-etc-activation\n\s*fi\n$/);
  });

  it('image: make-disk-image gives one ivm.qcow2, UEFI, boot loader installed, mount points present', () => {
    const image = obj(cfg('image', 'system', 'build', 'ivmImage'), 'ivmImage');
    expect(image.stub).toBe('make-disk-image');
    const args = obj(image.args, 'args');
    expect(args).toMatchObject({
      baseName: 'ivm',
      format: 'qcow2',
      partitionTableType: 'efi',
      installBootLoader: true,
      touchEFIVars: false,
      copyChannel: false,
      label: get(report.options, 'ivm', 'filesystem', 'rootLabel'),
    });
    const targets = (args.contents as Json[]).map((c) => get(c, 'target'));
    const mountPoints = Object.keys(obj(cfg('filesystem', 'fileSystems'), 'fileSystems')).filter((p) => p !== '/');
    expect(targets).toEqual(expect.arrayContaining([...mountPoints, '/tmp', '/proc', '/sys', '/dev', '/run', '/etc/os-release', '/etc/NIXOS']));
    // make-disk-image stops at a target that already exists; /etc is made by the files in it.
    expect(targets).not.toContain('/etc');
  });

  it('ssh: host key from the identity, never generated', () => {
    expect(cfg('ssh-identity', 'services', 'openssh', 'hostKeys')).toEqual([{ type: 'ed25519', path: guestPathOf('ssh_host_ed25519_key') }]);
    expect(cfg('ssh-identity', 'systemd', 'services', 'sshd-keygen', 'enable')).toBe(false);
    expect(cfg('ssh-identity', 'systemd', 'services', 'sshd', 'unitConfig', 'ConditionPathExists')).toBe(guestPathOf('ssh_host_ed25519_key'));
  });

  it('users: admin in wheel, user not, keys read at login from the identity files', () => {
    const users = obj(cfg('users', 'users', 'users'), 'users.users');
    expect(get(users, 'admin', 'extraGroups')).toEqual(['wheel']);
    expect(get(users, 'user', 'extraGroups')).toBeUndefined();
    expect(cfg('users', 'users', 'mutableUsers')).toBe(false);
    const sshd = String(cfg('users', 'services', 'openssh', 'extraConfig'));
    expect(sshd).toMatch(new RegExp(`Match User admin\\n\\s+AuthorizedKeysFile ${guestPathOf('admin_authorized_keys')}`));
    expect(sshd).toMatch(new RegExp(`Match User user\\n\\s+AuthorizedKeysFile ${guestPathOf('user_authorized_keys')}`));
  });

  it('journald and base', () => {
    expect(cfg('journald', 'services', 'journald', 'storage')).toBe('persistent');
    expect(cfg('base', 'nix', 'gc', 'automatic')).toBe(false);
    expect(cfg('guest-agent', 'services', 'qemuGuest', 'enable')).toBe(true);
  });

  describe('shell snippets, run with bash', () => {
    let dir: string;
    beforeAll(() => {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-flake-test-'));
    });
    afterAll(() => {
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const here = (script: string): string => script.replaceAll(`${identity.guestIdentityDir}/`, `${dir}/`);

    it('firewall: opens valid ports and ranges, skips invalid lines, copes with absent files', async () => {
      const commands = here(String(cfg('firewall-identity', 'networking', 'firewall', 'extraCommands')));
      fs.writeFileSync(path.join(dir, 'tcp_ports'), '80\n 443 \n# comment\n\n8000-8010\n9000:9001 # api\nabc\n0\n70000\n10-5\n80 81\n0022\r\n8080');
      fs.rmSync(path.join(dir, 'udp_ports'), { force: true });
      const script = `set -e\nip46tables() { echo "RULE $*"; }\n${commands}\necho END\n`;
      const result = await execa('bash', ['-c', script], { reject: false });
      expect(result.exitCode).toBe(0);
      const rules = result.stdout.split('\n').filter((l) => l.startsWith('RULE '));
      expect(rules).toEqual(
        ['80', '443', '8000:8010', '9000:9001', '22', '8080'].map((p) => `RULE -A nixos-fw -p tcp --dport ${p} -j nixos-fw-accept`),
      );
      expect(result.stdout.trim().endsWith('END')).toBe(true);
      const skipped = result.stderr.split('\n').map((l) => l.replace(/^.*ignoring invalid line: /, ''));
      expect(skipped).toEqual(['abc', '0', '70000', '10-5', '80 81']);
    });

    it('identity check: fails on a missing generated file, warns on a wrong mode', async () => {
      const script = here(String(cfg('identity', 'systemd', 'services', 'ivm-identity-check', 'script')));
      for (const f of identity.files) fs.rmSync(path.join(dir, f.name), { force: true });
      for (const f of identity.files.filter((f) => f.kind === 'generated')) {
        fs.writeFileSync(path.join(dir, f.name), 'x');
        fs.chmodSync(path.join(dir, f.name), parseInt(f.mode, 8));
      }
      const ok = await execa('bash', ['-c', script], { reject: false });
      expect(ok.exitCode).toBe(0);
      expect(ok.stdout).toBe('');
      fs.chmodSync(path.join(dir, 'ssh_host_ed25519_key'), 0o644);
      fs.rmSync(path.join(dir, 'hostname'));
      const bad = await execa('bash', ['-c', script], { reject: false });
      expect(bad.exitCode).toBe(1);
      expect(bad.stdout).toContain(`<3>missing ${dir}/hostname`);
      expect(bad.stdout).toContain(`<4>${dir}/ssh_host_ed25519_key has mode 644`);
    });

    it('hosts: the image hosts file plus the VM lines', async () => {
      const imageHosts = path.join(dir, 'image-hosts');
      fs.writeFileSync(imageHosts, '127.0.0.1 localhost\n');
      fs.writeFileSync(path.join(dir, 'hosts'), '10.0.0.5 db');
      const runDir = path.join(dir, 'run');
      const script = here(String(cfg('hosts-identity', 'systemd', 'services', 'ivm-hosts', 'script')))
        .replaceAll('/stub/etc-hosts', imageHosts)
        .replaceAll('/run/ivm', runDir);
      const result = await execa('bash', ['-e', '-c', script], { reject: false });
      expect(result.exitCode, result.stderr).toBe(0);
      const hosts = fs.readFileSync(path.join(runDir, 'hosts'), 'utf8');
      expect(hosts.startsWith('127.0.0.1 localhost\n')).toBe(true);
      expect(hosts).toContain('\n10.0.0.5 db\n');
      expect((fs.statSync(path.join(runDir, 'hosts')).mode & 0o777).toString(8)).toBe('644');
    });
  });
});

function guestPathOf(name: string): string {
  return `${identity.guestIdentityDir}/${name}`;
}

describe('flake plumbing (stand-in nixpkgs)', () => {
  let flakeDir: string;
  const flakeEval = <T = Json>(attr: string, apply?: string): Promise<T> =>
    nixJson<T>(
      [
        '--override-input',
        'nixpkgs',
        `path:${stubNixpkgs}`,
        '--no-write-lock-file',
        `path:${flakeDir}#${attr}`,
        ...(apply === undefined ? [] : ['--apply', apply]),
      ],
      flakeDir,
    );

  beforeAll(() => {
    flakeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-flake-'));
    for (const entry of ['flake.nix', 'flake.lock', 'identity-files.json', 'package.json', 'package-lock.json', 'modules', 'machines']) {
      fs.cpSync(path.join(repo, entry), path.join(flakeDir, entry), { recursive: true });
    }
    // Adding a machine is adding a folder; a folder without meta.nix is not a machine.
    fs.mkdirSync(path.join(flakeDir, 'machines', 'extra'));
    fs.writeFileSync(path.join(flakeDir, 'machines', 'extra', 'meta.nix'), '{ system = "aarch64-linux"; memory = 512; virtType = "qemu"; }\n');
    fs.writeFileSync(path.join(flakeDir, 'machines', 'extra', 'default.nix'), '{ ivmModules, ... }: { imports = [ ivmModules.base ivmModules.users ]; }\n');
    fs.mkdirSync(path.join(flakeDir, 'machines', 'notes'));
    fs.writeFileSync(path.join(flakeDir, 'machines', 'notes', 'README'), 'not a machine\n');
    fs.mkdirSync(path.join(flakeDir, 'machines', 'bad'));
    fs.writeFileSync(path.join(flakeDir, 'machines', 'bad', 'meta.nix'), '{ system = "riscv64-linux"; }\n');
    fs.writeFileSync(path.join(flakeDir, 'machines', 'bad', 'default.nix'), '{ }\n');
  });

  afterAll(() => {
    fs.rmSync(flakeDir, { recursive: true, force: true });
  });

  it('nixosModules: one per module file, and default importing them all', async () => {
    // Attribute sets importing the files by path: `nix flake check` wants a function or an
    // attribute set, and the module system dedups files imported by path.
    const modules = await flakeEval<Record<string, Json>>('nixosModules', 'builtins.mapAttrs (n: m: map baseNameOf m.imports)');
    expect(Object.keys(modules).sort()).toEqual([...moduleNames, 'default'].sort());
    for (const name of moduleNames) expect(modules[name]).toEqual([`${name}.nix`]);
    expect([...strings(modules.default)].sort()).toEqual(moduleNames.map((n) => `${n}.nix`).sort());
  });

  it('nixosConfigurations: one per machines/ folder with a meta.nix', async () => {
    const names = await flakeEval<string[]>('nixosConfigurations', 'builtins.attrNames');
    expect(names).toEqual(machineNames(flakeDir));
    expect(names).toEqual(['bad', 'default', 'extra', 'web']);
  });

  it('each machine: its meta.nix system, its default.nix, nothing else about it', async () => {
    const view = 'c: { inherit (c) argNames specialArgNames hostPlatforms otherModules modulePaths; selections = map (s: map (m: if m ? imports then map baseNameOf m.imports else baseNameOf m) s) c.selections; }';
    const all = Object.fromEntries(
      await Promise.all(['default', 'web', 'extra'].map(async (n) => [n, obj(await flakeEval(`nixosConfigurations.${n}`, view), n)] as const)),
    );
    for (const [name, machine] of Object.entries(all)) {
      const meta = obj(await nixJson(['--file', path.join(flakeDir, 'machines', name, 'meta.nix')]), 'meta');
      expect(machine.hostPlatforms).toEqual([meta.system]);
      expect(machine.argNames).toEqual(['modules', 'specialArgs']);
      expect(machine.specialArgNames).toEqual(['ivmModules']);
      expect(machine.otherModules).toBe(0);
      expect(strings(machine.modulePaths)).toHaveLength(1);
      expect(strings(machine.modulePaths)[0]).toMatch(new RegExp(`/machines/${name}/default\\.nix$`));
    }
    // default and web select the same modules, and the flake passes nothing else that differs:
    // their configurations, hence their images, are the same.
    const selection = get(all.default, 'selections');
    expect(Array.isArray(selection) && selection.length === 1 && Array.isArray(selection[0]) && selection[0].length === 1).toBe(true);
    expect([...strings(selection)].sort()).toEqual(moduleNames.map((n) => `${n}.nix`));
    const sameButPath = (m: JsonObject | undefined): JsonObject => ({ ...(m ?? {}), modulePaths: [] });
    expect(sameButPath(all.web)).toEqual(sameButPath(all.default));
    expect(get(all.extra, 'selections')).toEqual([[['base.nix'], ['users.nix']]]);
  });

  it('a meta.nix with an unknown system fails with a message naming the file', async () => {
    await expect(flakeEval('nixosConfigurations.bad.hostPlatforms')).rejects.toThrow(
      /machines\/bad\/meta\.nix: `system` must be one of x86_64-linux, aarch64-linux/,
    );
  });

  it('packages: ivm built from package-lock.json with importNpmLock, no hash written anywhere', async () => {
    const packages = await flakeEval<Record<string, string[]>>('packages', 'builtins.mapAttrs (_: builtins.attrNames)');
    expect(packages).toEqual({ 'x86_64-linux': ['default', 'ivm'], 'aarch64-linux': ['default', 'ivm'] });
    for (const system of SYSTEMS) {
      const ivm = obj(
        await flakeEval(
          `packages.${system}.ivm`,
          'p: { inherit (p) name argNames dontNpmBuild usesImportNpmLockHook meta; deps = { inherit (p.npmDeps) argNames packageName lockedPackages withoutResolved; sample = p.npmDeps.resolved."node_modules/@esbuild/linux-x64"; nested = p.npmDeps.resolved."node_modules/cliui/node_modules/string-width"; }; }',
        ),
        'ivm',
      );
      const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { name: string; version: string };
      expect(ivm.name).toBe(`${pkg.name}-${pkg.version}`);
      expect(ivm.dontNpmBuild).toBe(true);
      expect(ivm.usesImportNpmLockHook).toBe(true);
      expect(get(ivm, 'meta', 'mainProgram')).toBe('ivm');
      expect(strings(ivm.argNames).filter((a) => /hash|sha/i.test(a))).toEqual([]);
      const deps = obj(ivm.deps, 'npmDeps');
      expect(deps.argNames).toEqual(['npmRoot', 'package', 'packageLock']);
      expect(deps.packageName).toBe(pkg.name);
      expect(deps.withoutResolved).toEqual([]);
      expect(deps.sample).toMatch(/^https:\/\/registry\.npmjs\.org\/@esbuild\/linux-x64\/-\/linux-x64-[0-9.]+\.tgz$/);
      expect(deps.nested).toMatch(/^https:\/\/registry\.npmjs\.org\/string-width\/-\/string-width-[0-9.]+\.tgz$/);
    }
    expect(fs.readFileSync(path.join(repo, 'flake.nix'), 'utf8')).not.toMatch(/sha256-|npmDepsHash|outputHash/);
  });

  it('apps and devShells', async () => {
    for (const system of SYSTEMS) {
      const app = obj(await flakeEval(`apps.${system}.default`), 'app');
      expect(app.type).toBe('app');
      expect(String(app.program)).toMatch(/\/bin\/ivm$/);
      const shell = await flakeEval<string[]>(`devShells.${system}.default.packageNames`);
      expect(shell).toEqual(expect.arrayContaining(['nodejs', 'just', 'qemu', 'libguestfs', 'libvirt', 'OVMF']));
    }
    expect(await flakeEval<string[]>('devShells', 'builtins.attrNames')).toEqual([...SYSTEMS].sort());
  });

  it('lib.identityFiles is the helper the modules use', async () => {
    const viaFlake = await flakeEval('lib.identityFiles.used');
    const viaFile = await nixJson(['--file', path.join(modulesDir, helperFile), 'used']);
    expect(viaFlake).toEqual(viaFile);
  });
});

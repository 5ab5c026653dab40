// Offline checks of the NixOS side (flake.nix, flake.lock, modules/, machines/). Nothing here can
// fetch nixpkgs or build NixOS, so:
// - every .nix file must parse (nix-instantiate --parse also rejects undefined variables);
// - meta.nix files must evaluate to an attribute set with a valid `system`;
// - the identity file names and modes the modules use are evaluated in Nix (from the same
//   identity-files.json, through modules/identity-files.nix) and compared with the JSON read here;
// - the modules and the profiles (modules/profiles/) are called with a stand-in lib and config
//   (test/nix/eval-modules.nix) and what they set is checked, including their shell snippets, run
//   here with bash against stand-ins of the commands they call (iptables, ip, systemctl);
// - the profile catalogue (modules/profiles/catalogue.json) agrees with the modules' descriptions;
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
  varIdentityDir: string;
  guestIdentityDir: string;
  varDirs: { path: string; mode: string }[];
  files: IdentityFile[];
  secretsDir: { path: string; mode: string; fileMode: string };
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
const profilesDir = path.join(modulesDir, 'profiles');
const helperFile = 'identity-files.nix';
const moduleNames = fs
  .readdirSync(modulesDir)
  .filter((f) => f.endsWith('.nix') && f !== helperFile)
  .map((f) => f.slice(0, -'.nix'.length))
  .sort();
const profileNames = fs
  .readdirSync(profilesDir)
  .filter((f) => f.endsWith('.nix'))
  .map((f) => f.slice(0, -'.nix'.length))
  .sort();
interface Catalogue {
  profiles: { name: string; description: string }[];
}
const catalogue = JSON.parse(fs.readFileSync(path.join(profilesDir, 'catalogue.json'), 'utf8')) as Catalogue;
/** Every module and profile file, as [label, path]: "users", "profiles/web", ... */
const moduleFilesAll: [string, string][] = [
  ...moduleNames.map((n): [string, string] => [n, path.join(modulesDir, `${n}.nix`)]),
  ...profileNames.map((n): [string, string] => [`profiles/${n}`, path.join(profilesDir, `${n}.nix`)]),
];
const secretsGuestDir = `${identity.guestIdentityDir}${identity.secretsDir.path.slice(identity.varIdentityDir.length)}`;

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

  it('machines/default/meta.nix is minimal; web selects the web profile and lists port 80 in tcp_ports', async () => {
    expect(Object.keys(obj(await nixJson(['--file', 'machines/default/meta.nix']), 'meta'))).toEqual(['system']);
    const ports = fs.readFileSync(path.join(repo, 'machines', 'web', 'tcp_ports'), 'utf8').split('\n').map((l) => l.trim());
    expect(ports).toContain('80');
    expect(fs.readFileSync(path.join(repo, 'machines', 'web', 'default.nix'), 'utf8')).toContain('ivm.profiles.web.enable = true;');
  });

  it('machines/ hold only meta.nix, default.nix, files named in identity-files.json and a secrets folder', () => {
    const allowed = new Set(['meta.nix', 'default.nix', ...identity.files.map((f) => f.name), ...identity.hostFiles.map((f) => f.name)]);
    for (const name of machineNames(repo)) {
      for (const entry of fs.readdirSync(path.join(repo, 'machines', name), { withFileTypes: true })) {
        const ok = allowed.has(entry.name) || (entry.name === 'secrets' && entry.isDirectory());
        expect(ok, `machines/${name}/${entry.name}`).toBe(true);
      }
    }
  });

  it('the secrets folders are git-ignored', () => {
    const ignore = fs.readFileSync(path.join(repo, '.gitignore'), 'utf8').split('\n');
    expect(ignore).toContain('machines/*/secrets/');
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

  it('the helper reads varLabel, the identity folder, varDirs and the secrets folder from the JSON', async () => {
    const helper = obj(
      await nixJson(['--file', path.join(modulesDir, helperFile), '--apply', 'h: { inherit (h) dir varLabel varDirs secretsDir; }']),
      'helper',
    );
    expect(helper.dir).toBe(identity.guestIdentityDir);
    expect(helper.varLabel).toBe(identity.varLabel);
    expect(helper.varDirs).toEqual(identity.varDirs.map((d) => ({ ...d, guestPath: `/var${d.path}` })));
    expect(helper.secretsDir).toEqual({
      path: identity.secretsDir.path,
      mode: identity.secretsDir.mode,
      fileMode: identity.secretsDir.fileMode,
      guestPath: '/var/identity/secrets',
    });
    expect(secretsGuestDir).toBe('/var/identity/secrets');
  });

  it('the JSON keeps the structure the CLI reads; the files profiles read are optional and described', () => {
    expect(Object.keys(identity).sort()).toEqual(
      ['description', 'varLabel', 'varIdentityDir', 'guestIdentityDir', 'varDirs', 'files', 'secretsDir', 'hostFiles'].sort(),
    );
    for (const f of identity.files) {
      expect(Object.keys(f).filter((k) => !['name', 'mode', 'kind', 'secret', 'description'].includes(k)), f.name).toEqual([]);
      expect(f.mode, f.name).toMatch(/^0[0-7]{3}$/);
      expect(['generated', 'optional'], f.name).toContain(f.kind);
      expect(String((f as IdentityFile & { description?: string }).description ?? '').length, f.name).toBeGreaterThan(10);
    }
    const byName = new Map(identity.files.map((f) => [f.name, f]));
    for (const [name, mode] of [
      ['network.conf', '0644'],
      ['ca-certs.pem', '0644'],
      ['admin_password_hash', '0600'],
    ] as const) {
      expect(byName.get(name), name).toMatchObject({ mode, kind: 'optional' });
    }
    expect(identity.secretsDir).toMatchObject({ path: '/identity/secrets', mode: '0700', fileMode: '0600' });
  });

  it('modules and profiles spell no identity path themselves and only use roles the helper defines', async () => {
    const roles = await nixJson<string[]>(['--file', path.join(modulesDir, helperFile), '--apply', 'h: builtins.attrNames h.roles']);
    for (const [name, file] of moduleFilesAll) {
      const text = fs.readFileSync(file, 'utf8');
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
  let profileConfig: JsonObject;
  const cfg = (module: string, ...keys: string[]): Json | undefined => get(config, module, ...keys);
  const pcfg = (profile: string, ...keys: string[]): Json | undefined => get(profileConfig, profile, ...keys);
  /** The modules' and profiles' configurations with `overrides` (a Nix expression) merged into the stand-in config. */
  const evalWith = async (overrides: string): Promise<{ config: JsonObject; profiles: JsonObject }> => {
    const r = obj(await nixJson(['--file', evalModulesFile, '--apply', `e: e.evalWith (${overrides})`]), 'evalWith');
    return { config: obj(r.config, 'config'), profiles: obj(r.profiles, 'profiles') };
  };

  beforeAll(async () => {
    report = obj(await nixJson(['--file', evalModulesFile, 'report']), 'report');
    config = obj(report.config, 'config');
    profileConfig = obj(report.profileConfig, 'profileConfig');
  });

  it('every module and profile evaluates, its options are typed and described, their defaults fit their types', () => {
    expect(report.modules).toEqual(moduleNames);
    expect(report.profiles).toEqual(profileNames);
    expect(report.badDefaults).toEqual([]);
    expect(report.undocumented).toEqual([]);
    for (const [module, imports] of Object.entries(obj(report.imports, 'imports'))) {
      for (const file of strings(imports)) expect(fs.existsSync(file), `${module} imports ${file}`).toBe(true);
    }
  });

  it('every identity path in the modules and profiles is a file of identity-files.json, and each file is used', () => {
    const prefix = `${identity.guestIdentityDir}/`;
    const mentioned = new Set<string>();
    for (const s of [...strings(config), ...strings(profileConfig)]) {
      for (const m of s.matchAll(new RegExp(`${prefix.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}[A-Za-z0-9._-]+`, 'g'))) {
        if (m[0] !== secretsGuestDir) mentioned.add(m[0]);
      }
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

  it('filesystem: /var is grown by one mechanism, autoResize (systemd-growfs@var from x-systemd.growfs)', async () => {
    expect(cfg('filesystem', 'systemd', 'services', 'ivm-var-growfs')).toBeUndefined();
    // No module or profile runs systemd-growfs itself.
    expect([...strings(config), ...strings(profileConfig)].filter((s) => s.includes('systemd-growfs'))).toEqual([]);
    const off = await evalWith('{ ivm.filesystem.growVar = false; }');
    expect(get(off.config, 'filesystem', 'fileSystems', '/var', 'autoResize')).toBe(false);
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

  it('identity: a machine that sets a hostname fails with a message saying where the hostname comes from', async () => {
    // The module's own definition is below a plain one (100) and above mkDefault (1000).
    const source = fs.readFileSync(path.join(modulesDir, 'identity.nix'), 'utf8');
    expect(source).toContain('networking.hostName = lib.mkOverride 900 "";');
    const ok = cfg('identity', 'assertions') as Json[];
    expect(ok).toHaveLength(1);
    expect(get(ok[0], 'assertion')).toBe(true);
    const set = await evalWith('{ networking.hostName = "web"; }');
    const failing = get(set.config, 'identity', 'assertions') as Json[];
    expect(get(failing[0], 'assertion')).toBe(false);
    const message = String(get(failing[0], 'message'));
    expect(message).toContain('networking.hostName is set to "web"');
    expect(message).toContain(`from ${guestPathOf('hostname')}`);
    expect(message).toContain('ivm identity NAME');
    expect(message).toContain('remove\nnetworking.hostName from the machine');
  });

  it('boot: systemd-boot, EFI variables untouched, ESP writers masked, no growpart', () => {
    expect(cfg('boot', 'boot', 'loader', 'systemd-boot', 'enable')).toBe(true);
    expect(cfg('boot', 'boot', 'loader', 'efi', 'canTouchEfiVariables')).toBe(false);
    expect(cfg('boot', 'systemd', 'services', 'systemd-boot-random-seed', 'enable')).toBe(false);
    expect(cfg('boot', 'boot', 'growPartition')).toBe(false);
  });

  it('masked units: the ESP writers and sshd-keygen only; systemd-update-done runs (it stamps /var/.updated)', () => {
    const masked: string[] = [];
    for (const [module, c] of [...Object.entries(config), ...Object.entries(profileConfig)]) {
      for (const [unit, u] of Object.entries(obj(get(c, 'systemd', 'services') ?? {}, `${module} services`))) {
        if (get(u, 'enable') === false) masked.push(unit);
      }
    }
    expect(masked.sort()).toEqual(['sshd-keygen', 'systemd-bless-boot', 'systemd-boot-random-seed']);
    expect(cfg('overlay-etc', 'systemd', 'services', 'systemd-update-done')).toBeUndefined();
    expect(fs.readFileSync(path.join(modulesDir, 'overlay-etc.nix'), 'utf8')).toContain('systemd-update-done.service stays enabled');
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

  it('journald: volatile in the image; ivm-journal-storage switches to persistent before the flush', async () => {
    expect(cfg('journald', 'services', 'journald', 'storage')).toBe('volatile');
    expect(String(cfg('journald', 'services', 'journald', 'extraConfig'))).toContain('SystemMaxUse=1G');
    const unit = obj(cfg('journald', 'systemd', 'services', 'ivm-journal-storage'), 'ivm-journal-storage');
    expect(unit.before).toEqual(expect.arrayContaining(['systemd-journal-flush.service', 'sysinit.target']));
    expect(unit.after).toEqual(expect.arrayContaining(['systemd-journald.service']));
    expect(unit.wantedBy).toEqual(['sysinit.target']);
    expect(get(unit, 'unitConfig', 'ConditionPathExists')).toBe(guestPathOf('machine-id'));
    expect(get(unit, 'unitConfig', 'DefaultDependencies')).toBe(false);
    const off = await evalWith('{ ivm.journald.persistent = false; }');
    expect(get(off.config, 'journald', 'systemd', 'services', 'ivm-journal-storage')).toBeNull();
    expect(get(off.config, 'journald', 'services', 'journald', 'storage')).toBe('volatile');
  });

  it('base, guest agent', () => {
    expect(cfg('base', 'nix', 'gc', 'automatic')).toBe(false);
    expect(cfg('guest-agent', 'services', 'qemuGuest', 'enable')).toBe(true);
  });

  it('network-identity: ivm-static-network runs before networkd when network.conf exists', async () => {
    const unit = obj(cfg('network-identity', 'systemd', 'services', 'ivm-static-network'), 'ivm-static-network');
    expect(unit.wantedBy).toEqual(['systemd-networkd.service']);
    expect(unit.before).toEqual(expect.arrayContaining(['systemd-networkd.service', 'network-pre.target']));
    expect(get(unit, 'unitConfig', 'ConditionPathExists')).toBe(guestPathOf('network.conf'));
    const off = await evalWith('{ ivm.network.static.enable = false; }');
    expect(get(off.config, 'network-identity')).toBeNull();
  });

  it('secrets: ivm.secrets.<service> becomes LoadCredential from /var/identity/secrets; names are checked', async () => {
    expect(cfg('secrets', 'systemd', 'services')).toEqual({});
    const set = await evalWith('{ ivm.secrets = { myapp = [ "db-password" "api.token" ]; "worker@" = [ "key" ]; }; }');
    expect(get(set.config, 'secrets', 'systemd', 'services')).toEqual({
      myapp: {
        serviceConfig: { LoadCredential: [`db-password:${secretsGuestDir}/db-password`, `api.token:${secretsGuestDir}/api.token`] },
        unitConfig: { RequiresMountsFor: [secretsGuestDir] },
      },
      'worker@': {
        serviceConfig: { LoadCredential: [`key:${secretsGuestDir}/key`] },
        unitConfig: { RequiresMountsFor: [secretsGuestDir] },
      },
    });
    const check = await nixJson<boolean[]>([
      '--impure',
      '--expr',
      `let lib = import ${path.join(repo, 'test', 'nix', 'mock-lib.nix')}; m = import ${path.join(modulesDir, 'secrets.nix')} { inherit lib; config.ivm.secrets = { }; }; t = m.options.ivm.secrets.type; in map (names: t.check { s = names; }) [ [ "db-password" ] [ "a_b.c-1" ] [ "../x" ] [ "a/b" ] [ "a:b" ] [ ".hidden" ] [ "" ] ]`,
    ]);
    expect(check).toEqual([true, true, false, false, false, false, false]);
  });

  describe('profiles', () => {
    it('the catalogue lists every profile file, and each module says what the catalogue says, three times', () => {
      expect(catalogue.profiles.map((p) => p.name).sort()).toEqual(profileNames);
      expect(catalogue.profiles.map((p) => p.name)).toEqual(['web', 'docker', 'podman', 'dev', 'zram', 'block-private-networks', 'ca-trust', 'console-login']);
      const descriptions = obj(report.profileDescriptions, 'profileDescriptions');
      for (const { name, description } of catalogue.profiles) {
        expect(description, name).not.toContain('\n');
        // ivm.profiles.<name>.enable's description is the catalogue's line, exactly.
        expect(descriptions[name], name).toBe(description);
        // The module's top comment starts with it.
        const first = fs.readFileSync(path.join(profilesDir, `${name}.nix`), 'utf8').split('\n')[0];
        expect(first, name).toBe(`# ${name}.nix: ${description}`);
      }
    });

    it("the README's and docs/flake.md's profile tables list the catalogue", () => {
      const readme = fs.readFileSync(path.join(repo, 'README.md'), 'utf8');
      const docs = fs.readFileSync(path.join(repo, 'docs', 'flake.md'), 'utf8');
      for (const { name, description } of catalogue.profiles) {
        expect(readme, name).toContain(`| \`${name}\` | ${description} |`);
        expect(docs, name).toMatch(new RegExp(`^\\| \`${name}\` \\| `, 'm'));
      }
    });

    it('every profile is off by default and then sets nothing; its enable option is a boolean', () => {
      for (const name of profileNames) {
        expect(get(report.profileConfigOff, name), name).toBeNull();
        expect(get(report.options, 'ivm', 'profiles', name, 'enable'), name).toBe(false);
        expect(get(profileConfig, name), name).not.toBeNull();
      }
    });

    it('web: nginx with its root on /var, the folder and a default page by tmpfiles, port 80', async () => {
      expect(pcfg('web', 'services', 'nginx')).toEqual({ enable: true, virtualHosts: { ivm: { default: true, root: '/var/www' } } });
      expect(pcfg('web', 'systemd', 'tmpfiles', 'rules')).toEqual([
        'd /var/www 0755 root root -',
        'C /var/www/index.html 0644 root root - /stub/ivm-web-index.html',
      ]);
      expect(pcfg('web', 'networking', 'firewall', 'allowedTCPPorts')).toEqual([80]);
      const closed = await evalWith('{ ivm.profiles.web = { enable = true; openFirewall = false; root = "/var/lib/site"; }; }');
      expect(get(closed.profiles, 'web', 'networking', 'firewall', 'allowedTCPPorts')).toBeNull();
      expect(get(closed.profiles, 'web', 'services', 'nginx', 'virtualHosts', 'ivm', 'root')).toBe('/var/lib/site');
      const page = await nixJson<string[]>([
        '--impure',
      '--expr',
        `(import ${path.join(profilesDir, 'web.nix')} { lib = import ${path.join(repo, 'test', 'nix', 'mock-lib.nix')}; config.ivm.profiles.web = { enable = true; root = "/var/www"; openFirewall = true; }; pkgs.writeText = n: t: t; }).config.content.systemd.tmpfiles.rules`,
      ]);
      expect(String(page)).toContain('<h1>It works</h1>');
    });

    it('docker: data-root /var/lib/docker, overlay2, admin in the docker group', () => {
      expect(pcfg('docker', 'virtualisation', 'docker')).toEqual({ enable: true, storageDriver: 'overlay2', daemon: { settings: { 'data-root': '/var/lib/docker' } } });
      expect(pcfg('docker', 'users', 'users')).toEqual({ admin: { extraGroups: ['docker'] } });
    });

    it('podman: storage on /var/lib/containers, sub-ids for user in the image (userborn writes none)', () => {
      expect(pcfg('podman', 'virtualisation', 'podman', 'enable')).toBe(true);
      expect(pcfg('podman', 'virtualisation', 'containers', 'storage', 'settings', 'storage')).toEqual({
        driver: 'overlay',
        graphroot: '/var/lib/containers/storage',
        runroot: '/run/containers/storage',
      });
      for (const file of ['subuid', 'subgid']) {
        expect(pcfg('podman', 'environment', 'etc', file)).toEqual({ text: 'user:100000:65536\n', mode: '0644' });
      }
    });

    it('podman: one range of 65536 ids per rootless account, not overlapping', async () => {
      const two = await evalWith('{ ivm.profiles.podman = { enable = true; rootlessUsers = [ "user" "admin" ]; }; }');
      expect(get(two.profiles, 'podman', 'environment', 'etc', 'subuid', 'text')).toBe('user:100000:65536\nadmin:165536:65536\n');
    });

    it('dev: git, vim as the editor, direnv without nix-direnv (Nix is off), build tools', () => {
      expect(pcfg('dev', 'programs')).toEqual({ git: { enable: true }, vim: { defaultEditor: true }, direnv: { enable: true, 'nix-direnv': { enable: false } } });
      expect(pcfg('dev', 'environment', 'systemPackages')).toEqual(expect.arrayContaining(['/stub/gnumake', '/stub/gcc', '/stub/pkg-config']));
    });

    it('zram: zramSwap with zstd, half of the RAM', async () => {
      expect(pcfg('zram', 'zramSwap')).toEqual({ enable: true, memoryPercent: 50, algorithm: 'zstd' });
      const bad = await nixJson<boolean[]>([
        '--impure',
      '--expr',
        `let t = (import ${path.join(profilesDir, 'zram.nix')} { lib = import ${path.join(repo, 'test', 'nix', 'mock-lib.nix')}; config.ivm.profiles.zram = { }; }).options.ivm.profiles.zram.memoryPercent.type; in map t.check [ 1 100 0 101 "50" ]`,
      ]);
      expect(bad).toEqual([true, true, false, false, false]);
    });

    it('block-private-networks: asserts the iptables firewall; the allow list follows the firewall', () => {
      expect(get((pcfg('block-private-networks', 'assertions') as Json[])[0], 'assertion')).toBe(true);
      const unit = obj(pcfg('block-private-networks', 'systemd', 'services', 'ivm-private-allow'), 'ivm-private-allow');
      expect(unit.after).toEqual(expect.arrayContaining(['firewall.service', 'network-online.target']));
      expect(unit.partOf).toEqual(['firewall.service']);
      expect(unit.wants).toEqual(['network-online.target']);
      expect(unit.path).toEqual(expect.arrayContaining(['/stub/iptables', '/stub/iproute2']));
    });

    it('ca-trust: the standard bundle paths link to /run/ivm/ca-bundle.crt, built before sysinit from the image bundle', () => {
      const etc = obj(pcfg('ca-trust', 'environment', 'etc'), 'etc');
      expect(Object.keys(etc).sort()).toEqual(['pki/tls/certs/ca-bundle.crt', 'ssl/certs/ca-bundle.crt', 'ssl/certs/ca-certificates.crt']);
      for (const entry of Object.values(etc)) expect(entry).toEqual({ source: '/run/ivm/ca-bundle.crt', mode: 'direct-symlink' });
      expect(pcfg('ca-trust', 'environment', 'variables')).toEqual({
        SSL_CERT_FILE: '/etc/ssl/certs/ca-certificates.crt',
        NIX_SSL_CERT_FILE: '/etc/ssl/certs/ca-certificates.crt',
      });
      const unit = obj(pcfg('ca-trust', 'systemd', 'services', 'ivm-ca-bundle'), 'ivm-ca-bundle');
      expect(unit.wantedBy).toEqual(['sysinit.target']);
      expect(unit.before).toEqual(expect.arrayContaining(['sysinit.target']));
      expect(get(unit, 'unitConfig', 'DefaultDependencies')).toBe(false);
      // The bundle ca.nix would have linked: pkgs.cacert overridden with security.pki's options.
      expect(String(unit.script)).toContain('cat /stub/cacert-overridden/etc/ssl/certs/ca-bundle.crt');
    });

    it('console-login: admin reads its hash from /run, written before userborn from the identity file', () => {
      expect(pcfg('console-login', 'users', 'users')).toEqual({ admin: { hashedPasswordFile: '/run/ivm/admin-password-hash' } });
      const unit = obj(pcfg('console-login', 'systemd', 'services', 'ivm-admin-password'), 'ivm-admin-password');
      expect(unit.before).toEqual(expect.arrayContaining(['userborn.service']));
      expect(unit.wantedBy).toEqual(['userborn.service']);
      // No RequiresMountsFor: userborn runs before local-fs-pre.target, var.mount after it.
      expect(unit.unitConfig).toEqual({ DefaultDependencies: false });
      expect(get((pcfg('console-login', 'assertions') as Json[])[0], 'assertion')).toBe(true);
    });
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
    /** The script with /run, /etc and the identity folder moved into the test folder. */
    const sandboxed = (script: string): string =>
      here(script)
        .replaceAll('/run/', `${dir}/run/`)
        .replaceAll('/etc/', `${dir}/etc/`);
    const bash = (script: string, args: string[] = []) => execa('bash', ['-e', '-c', script, ...args], { reject: false });
    const fresh = (sub: string): string => {
      const d = path.join(dir, sub);
      fs.rmSync(d, { recursive: true, force: true });
      fs.mkdirSync(d, { recursive: true });
      return d;
    };

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

    it('identity check: fails on a missing generated file, warns on a wrong mode, checks the secrets folder', async () => {
      const script = here(String(cfg('identity', 'systemd', 'services', 'ivm-identity-check', 'script')));
      for (const f of identity.files) fs.rmSync(path.join(dir, f.name), { force: true });
      fs.rmSync(path.join(dir, 'secrets'), { recursive: true, force: true });
      for (const f of identity.files.filter((f) => f.kind === 'generated')) {
        fs.writeFileSync(path.join(dir, f.name), 'x');
        fs.chmodSync(path.join(dir, f.name), parseInt(f.mode, 8));
      }
      const ok = await execa('bash', ['-c', script], { reject: false });
      expect(ok.exitCode).toBe(0);
      expect(ok.stdout).toBe('');
      fs.mkdirSync(path.join(dir, 'secrets'), { mode: 0o700 });
      fs.writeFileSync(path.join(dir, 'secrets', 'good'), 's', { mode: 0o600 });
      const okSecrets = await execa('bash', ['-c', script], { reject: false });
      expect(okSecrets.stdout).toBe('');
      fs.writeFileSync(path.join(dir, 'secrets', 'loose'), 's', { mode: 0o644 });
      fs.chmodSync(path.join(dir, 'secrets', 'loose'), 0o644);
      fs.chmodSync(path.join(dir, 'secrets'), 0o755);
      fs.chmodSync(path.join(dir, 'ssh_host_ed25519_key'), 0o644);
      fs.rmSync(path.join(dir, 'hostname'));
      const bad = await execa('bash', ['-c', script], { reject: false });
      expect(bad.exitCode).toBe(1);
      expect(bad.stdout).toContain(`<3>missing ${dir}/hostname`);
      expect(bad.stdout).toContain(`<4>${dir}/ssh_host_ed25519_key has mode 644`);
      expect(bad.stdout).toContain(`<4>${dir}/secrets has mode 755, identity-files.json says 0700`);
      expect(bad.stdout).toContain(`<4>${dir}/secrets/loose has mode 644, identity-files.json says 0600`);
      expect(bad.stdout).not.toContain('secrets/good');
      fs.rmSync(path.join(dir, 'secrets'), { recursive: true, force: true });
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

    it('journal storage: persistent only when /etc/machine-id is the identity machine-id', async () => {
      const script = sandboxed(String(cfg('journald', 'systemd', 'services', 'ivm-journal-storage', 'script')));
      const run = async (identityId: string | undefined, etcId: string) => {
        fresh('run');
        fs.mkdirSync(path.join(dir, 'etc'), { recursive: true });
        fs.writeFileSync(path.join(dir, 'etc', 'machine-id'), etcId);
        fs.rmSync(path.join(dir, 'machine-id'), { force: true });
        if (identityId !== undefined) fs.writeFileSync(path.join(dir, 'machine-id'), identityId);
        const r = await bash(`systemctl() { echo "SYSTEMCTL $*"; }\n${script}`);
        const dropIn = path.join(dir, 'run', 'systemd', 'journald.conf.d', 'ivm-persistent.conf');
        return { ...r, dropIn: fs.existsSync(dropIn) ? fs.readFileSync(dropIn, 'utf8') : undefined };
      };
      const id = '0123456789abcdef0123456789abcdef';
      const bound = await run(`${id}\n`, `${id}\n`);
      expect(bound.exitCode, bound.stderr).toBe(0);
      expect(bound.dropIn).toBe('[Journal]\nStorage=persistent\n');
      expect(bound.stdout).toContain(`persistent journal in /var/log/journal/${id}`);
      expect(bound.stdout).toContain('SYSTEMCTL restart systemd-journald.service');
      const transient = await run(`${id}\n`, 'ffffffffffffffffffffffffffffffff\n');
      expect(transient.exitCode).toBe(0);
      expect(transient.dropIn).toBeUndefined();
      expect(transient.stdout).not.toContain('SYSTEMCTL');
      expect(transient.stdout).toContain('the journal stays volatile');
      const missing = await run(undefined, `${id}\n`);
      expect(missing.exitCode).toBe(0);
      expect(missing.dropIn).toBeUndefined();
    });

    it('static network: network.conf becomes 10-ivm-static.network; a bad file is refused whole', async () => {
      const script = sandboxed(String(cfg('network-identity', 'systemd', 'services', 'ivm-static-network', 'script')));
      const unitFile = path.join(dir, 'run', 'systemd', 'network', '10-ivm-static.network');
      const run = async (conf: string) => {
        fresh('run');
        fs.writeFileSync(path.join(dir, 'network.conf'), conf);
        const r = await bash(script);
        return { ...r, unit: fs.existsSync(unitFile) ? fs.readFileSync(unitFile, 'utf8') : undefined };
      };
      const ok = await run('# static address\nADDRESS=192.168.1.50/24 2001:db8::50/64\n\nGATEWAY=192.168.1.1   # the router\nDNS=192.168.1.1 9.9.9.9\nDNS=2001:db8::53');
      expect(ok.exitCode, ok.stdout + ok.stderr).toBe(0);
      expect(ok.unit).toBe(
        `# Written at boot by ivm-static-network.service from ${dir}/network.conf.\n[Match]\nType=ether\nKind=!*\n\n[Network]\nDHCP=no\n` +
          'Address=192.168.1.50/24\nAddress=2001:db8::50/64\nGateway=192.168.1.1\nDNS=192.168.1.1\nDNS=9.9.9.9\nDNS=2001:db8::53\n',
      );
      expect((fs.statSync(unitFile).mode & 0o777).toString(8)).toBe('644');
      for (const [conf, error] of [
        ['ADDRESS=192.168.1.50\n', ':1: not an address with a prefix length: 192.168.1.50'],
        ['ADDRESS=192.168.1.300/24\n', ':1: not an address with a prefix length: 192.168.1.300/24'],
        ['ADDRESS=10.0.0.2/33\n', ':1: not an address with a prefix length: 10.0.0.2/33'],
        ['ADDRESS=10.0.0.2/24\nGATEWAY=router\n', ':2: not an address: router'],
        ['ADDRESS=10.0.0.2/24\nMTU=1400\n', ':2: unknown key MTU (ADDRESS, GATEWAY, DNS)'],
        ['ADDRESS="10.0.0.2/24"\n', ':1: not an address with a prefix length: "10.0.0.2/24"'],
        ['address=10.0.0.2/24\n', ':1: not KEY=VALUE: address=10.0.0.2/24'],
        ['GATEWAY=10.0.0.1\n', ':1: no ADDRESS'],
        ['ADDRESS=\n', ':1: ADDRESS has no value'],
      ] as const) {
        const bad = await run(conf);
        expect(bad.exitCode, conf).toBe(1);
        expect(bad.unit, conf).toBeUndefined();
        expect(bad.stdout, conf).toContain(`<3>ivm: ${dir}/network.conf${error}`);
        expect(bad.stdout, conf).toContain('not applied: the network is configured by DHCP');
      }
      fs.rmSync(path.join(dir, 'network.conf'));
    });

    it('block-private-networks: the firewall rules, in order, both families', async () => {
      const commands = String(pcfg('block-private-networks', 'networking', 'firewall', 'extraCommands'));
      const stub = 'ip46tables() { echo "46 $*"; }\niptables() { echo "4 $*"; }\nip6tables() { echo "6 $*"; }\n';
      const r = await bash(`${stub}${commands}`);
      expect(r.exitCode, r.stderr).toBe(0);
      const rules = r.stdout.split('\n').filter((l) => l !== '');
      const out = 'ivm-private-out';
      const deny = 'ivm-private-deny';
      expect(rules).toEqual([
        `46 -D OUTPUT -j ${out}`,
        `46 -D FORWARD -j ${out}`,
        `46 -F ${out}`,
        `46 -X ${out}`,
        `46 -F ${deny}`,
        `46 -X ${deny}`,
        `46 -N ${deny}`,
        `46 -A ${deny} -j REJECT`,
        `46 -N ${out}`,
        `46 -A ${out} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN`,
        `46 -A ${out} -o lo -j RETURN`,
        `4 -w -A ${out} -p udp --dport 67 -j RETURN`,
        `6 -w -A ${out} -p udp --dport 547 -j RETURN`,
        ...['133', '134', '135', '136', '137'].map((t) => `6 -w -A ${out} -p ipv6-icmp --icmpv6-type ${t} -j RETURN`),
        ...['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16', '127.0.0.0/8', '0.0.0.0/8'].map(
          (range) => `4 -w -A ${out} -d ${range} -j ${deny}`,
        ),
        ...['fc00::/7', 'fe80::/10', '::1/128'].map((range) => `6 -w -A ${out} -d ${range} -j ${deny}`),
        `46 -I OUTPUT 1 -j ${out}`,
        `46 -I FORWARD 1 -j ${out}`,
      ]);
      const stop = await bash(`${stub}${String(pcfg('block-private-networks', 'networking', 'firewall', 'extraStopCommands'))}`);
      expect(stop.stdout.split('\n').filter((l) => l !== '')).toEqual([`46 -D OUTPUT -j ${out}`, `46 -D FORWARD -j ${out}`]);
      // Without IPv6, no ip6tables line at all.
      const v4only = await evalWith('{ networking.enableIPv6 = false; ivm.profiles.block-private-networks.enable = true; }');
      const v4rules = String(get(v4only.profiles, 'block-private-networks', 'networking', 'firewall', 'extraCommands'));
      expect(v4rules).not.toContain('ip6tables');
      expect(String(get(v4only.profiles, 'block-private-networks', 'systemd', 'services', 'ivm-private-allow', 'script'))).not.toContain('ip6tables');
    });

    it('block-private-networks: the gateways and DNS servers read at boot become exemptions; the old ones go', async () => {
      const script = sandboxed(String(pcfg('block-private-networks', 'systemd', 'services', 'ivm-private-allow', 'script')));
      fresh('etc');
      fresh('run');
      fs.mkdirSync(path.join(dir, 'run', 'systemd', 'resolve'), { recursive: true });
      fs.writeFileSync(path.join(dir, 'etc', 'resolv.conf'), '# stub\nnameserver 127.0.0.53\noptions edns0\n');
      fs.writeFileSync(path.join(dir, 'run', 'systemd', 'resolve', 'resolv.conf'), 'nameserver 192.168.1.2\nnameserver fe80::1%enp1s0\nsearch lan\n');
      const stubs = [
        'ip() { case "$*" in',
        '  "-4 route show default") echo "default via 192.168.122.1 dev enp1s0 proto dhcp src 192.168.122.50 metric 1024";',
        '    echo "default nhid 7 via 10.1.2.3 dev wg0";;',
        '  "-6 route show default") echo "default via fe80::1 dev enp1s0 proto ra metric 1024 expires 1799sec pref medium";;',
        'esac; }',
        'resolvectl() { printf "Global:\\nLink 2 (enp1s0): 192.168.122.1 1.1.1.1#cloudflare-dns.com\\n"; }',
        // The chain as the firewall left it, with stale exemptions of an earlier run.
        'iptables() { if [ "$2" = -S ]; then printf -- "-N ivm-private-deny\\n-A ivm-private-deny -d 10.9.9.9/32 -j RETURN\\n-A ivm-private-deny -j REJECT\\n"; else echo "4 $*"; fi; }',
        'ip6tables() { if [ "$2" = -S ]; then printf -- "-N ivm-private-deny\\n-A ivm-private-deny -j REJECT\\n"; else echo "6 $*"; fi; }',
        '',
      ].join('\n');
      const r = await bash(`${stubs}${script}`);
      expect(r.exitCode, r.stderr).toBe(0);
      const rules = r.stdout.split('\n').filter((l) => /^[46] /.test(l));
      const d = 'ivm-private-deny';
      expect(rules).toEqual([
        // New exemptions and a new REJECT on top (IPv4: gateways first, then DNS servers, no duplicates)...
        `4 -w -I ${d} 1 -d 192.168.122.1 -j RETURN`,
        `4 -w -I ${d} 2 -d 10.1.2.3 -j RETURN`,
        `4 -w -I ${d} 3 -d 127.0.0.53 -j RETURN`,
        `4 -w -I ${d} 4 -d 192.168.1.2 -j RETURN`,
        `4 -w -I ${d} 5 -d 1.1.1.1 -j RETURN`,
        `4 -w -I ${d} 6 -j REJECT`,
        // ...then the two old rules, now below them, deleted.
        `4 -w -D ${d} 7`,
        `4 -w -D ${d} 7`,
        `6 -w -I ${d} 1 -d fe80::1 -j RETURN`,
        `6 -w -I ${d} 2 -j REJECT`,
        `6 -w -D ${d} 3`,
      ]);
      expect(r.stdout).toContain('ivm: exempt from block-private-networks: 192.168.122.1 10.1.2.3 127.0.0.53 192.168.1.2 1.1.1.1 fe80::1');
    });

    it('ca-trust: the bundle is the image bundle plus ca-certs.pem when it holds a certificate', async () => {
      const imageBundle = path.join(dir, 'image-bundle.crt');
      fs.writeFileSync(imageBundle, '-----BEGIN CERTIFICATE-----\nIMAGE\n-----END CERTIFICATE-----\n');
      const script = sandboxed(
        String(pcfg('ca-trust', 'systemd', 'services', 'ivm-ca-bundle', 'script')).replaceAll('/stub/cacert-overridden/etc/ssl/certs/ca-bundle.crt', imageBundle),
      );
      const bundle = path.join(dir, 'run', 'ivm', 'ca-bundle.crt');
      const run = async (extra: string | undefined) => {
        fresh('run');
        fs.rmSync(path.join(dir, 'ca-certs.pem'), { force: true });
        if (extra !== undefined) fs.writeFileSync(path.join(dir, 'ca-certs.pem'), extra);
        const r = await bash(script);
        return { ...r, bundle: fs.readFileSync(bundle, 'utf8') };
      };
      const none = await run(undefined);
      expect(none.exitCode, none.stderr).toBe(0);
      expect(none.bundle).toBe(fs.readFileSync(imageBundle, 'utf8'));
      expect((fs.statSync(bundle).mode & 0o777).toString(8)).toBe('444');
      const company = '-----BEGIN CERTIFICATE-----\nCOMPANY\n-----END CERTIFICATE-----\n';
      const added = await run(company);
      expect(added.bundle).toBe(`${fs.readFileSync(imageBundle, 'utf8')}\n# ${dir}/ca-certs.pem\n${company}\n`);
      expect(added.stdout).toContain('trusting the certificates of');
      const junk = await run('not a certificate\n');
      expect(junk.exitCode).toBe(0);
      expect(junk.bundle).toBe(fs.readFileSync(imageBundle, 'utf8'));
      expect(junk.stdout).toContain('<4>ivm:');
      expect(fs.readdirSync(path.join(dir, 'run', 'ivm'))).toEqual(['ca-bundle.crt']);
    });

    it('console-login: the identity hash when it is one valid line, else locked ("!*")', async () => {
      const script = sandboxed(String(pcfg('console-login', 'systemd', 'services', 'ivm-admin-password', 'script')));
      const out = path.join(dir, 'run', 'ivm', 'admin-password-hash');
      const run = async (content: string | undefined) => {
        fresh('run');
        fs.rmSync(path.join(dir, 'admin_password_hash'), { force: true });
        if (content !== undefined) fs.writeFileSync(path.join(dir, 'admin_password_hash'), content);
        const r = await bash(script);
        return { ...r, hash: fs.readFileSync(out, 'utf8'), mode: (fs.statSync(out).mode & 0o777).toString(8) };
      };
      const yescrypt = '$y$j9T$BOO.gstYxWh8Lw.njfytQ/$K4sN06nBh0qFGegFS0hn5YkEOzzrr7woGHlSiUuCqS4';
      const good = await run(`${yescrypt}\n`);
      expect(good.exitCode, good.stderr).toBe(0);
      expect(good.hash).toBe(`${yescrypt}\n`);
      expect(good.mode).toBe('600');
      expect((await run(`${yescrypt}\r\n`)).hash).toBe(`${yescrypt}\n`);
      expect((await run(yescrypt)).hash).toBe(`${yescrypt}\n`);
      for (const bad of [undefined, '', 'hunter2\n', `${yescrypt}\nsecond line\n`, 'admin:$y$x:1\n', '$y$ with blank\n']) {
        const r = await run(bad);
        expect(r.exitCode, String(bad)).toBe(0);
        expect(r.hash, String(bad)).toBe('!*\n');
      }
      expect((await run('hunter2\n')).stdout).toContain('<3>ivm:');
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

  it('nixosModules: one per module file, profiles importing every profile, default importing them all', async () => {
    // Attribute sets importing the files by path: `nix flake check` wants a function or an
    // attribute set, and the module system dedups files imported by path.
    const modules = await flakeEval<Record<string, Json>>('nixosModules', 'builtins.mapAttrs (n: m: map toString m.imports)');
    expect(Object.keys(modules).sort()).toEqual([...moduleNames, 'default', 'profiles'].sort());
    const rel = (files: Json | undefined): string[] => strings(files).map((f) => f.replace(/^\/nix\/store\/[^/]+\//, ''));
    for (const name of moduleNames) expect(rel(modules[name])).toEqual([`modules/${name}.nix`]);
    const profileFiles = catalogue.profiles.map((p) => `modules/profiles/${p.name}.nix`);
    expect(rel(modules.profiles)).toEqual(profileFiles);
    expect(rel(modules.default).sort()).toEqual([...moduleNames.map((n) => `modules/${n}.nix`), ...profileFiles].sort());
  });

  it('ivmProfiles: one module per catalogue entry; ivmProfileCatalogue: { name = description; } from the JSON', async () => {
    const profiles = await flakeEval<Record<string, Json>>('ivmProfiles', 'builtins.mapAttrs (n: m: map baseNameOf m.imports)');
    expect(profiles).toEqual(Object.fromEntries(catalogue.profiles.map((p) => [p.name, [`${p.name}.nix`]])));
    expect(await flakeEval('ivmProfileCatalogue')).toEqual(Object.fromEntries(catalogue.profiles.map((p) => [p.name, p.description])));
  });

  it('a catalogue entry without its module fails with a message naming both files', async () => {
    const broken = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-flake-broken-'));
    try {
      fs.cpSync(flakeDir, broken, { recursive: true });
      const file = path.join(broken, 'modules', 'profiles', 'catalogue.json');
      const data = JSON.parse(fs.readFileSync(file, 'utf8')) as Catalogue;
      data.profiles.push({ name: 'ghost', description: 'not there' });
      fs.writeFileSync(file, JSON.stringify(data));
      await expect(
        nixJson(['--override-input', 'nixpkgs', `path:${stubNixpkgs}`, '--no-write-lock-file', `path:${broken}#nixosModules.profiles.imports`, '--apply', 'map toString'], broken),
      ).rejects.toThrow(/catalogue\.json lists the profile ghost, but modules\/profiles\/ghost\.nix is missing/);
    } finally {
      fs.rmSync(broken, { recursive: true, force: true });
    }
  });

  it('nixosConfigurations: one per machines/ folder with a meta.nix', async () => {
    const names = await flakeEval<string[]>('nixosConfigurations', 'builtins.attrNames');
    expect(names).toEqual(machineNames(flakeDir));
    expect(names).toEqual(['bad', 'default', 'extra', 'web']);
  });

  it('each machine: its meta.nix system, its default.nix, nothing else about it', async () => {
    const view = 'c: { inherit (c) argNames specialArgNames hostPlatforms otherModules modulePaths settings; selections = map (s: map (m: if m ? imports then map baseNameOf m.imports else baseNameOf m) s) c.selections; }';
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
    // default and web import the same modules (all of them, profiles included); web also
    // selects the web profile, and that is the only difference the flake passes on: the images
    // of machines with the same selection are the same, web's is not default's.
    const selection = get(all.default, 'selections');
    expect(Array.isArray(selection) && selection.length === 1 && Array.isArray(selection[0]) && selection[0].length === 1).toBe(true);
    expect([...strings(selection)].sort()).toEqual([...moduleNames, ...profileNames].map((n) => `${n}.nix`).sort());
    expect(get(all.default, 'settings')).toEqual([{}]);
    expect(get(all.web, 'settings')).toEqual([{ ivm: { profiles: { web: { enable: true } } } }]);
    const sameButPathAndSettings = (m: JsonObject | undefined): JsonObject => ({ ...(m ?? {}), modulePaths: [], settings: [] });
    expect(sameButPathAndSettings(all.web)).toEqual(sameButPathAndSettings(all.default));
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
          'p: { inherit (p) name argNames dontNpmBuild usesImportNpmLockHook meta; deps = { inherit (p.npmDeps) argNames packageName lockedPackages withoutResolved; sample = p.npmDeps.resolved."node_modules/@esbuild/linux-x64"; nested = p.npmDeps.resolved."node_modules/npm-run-path/node_modules/path-key"; justShim = builtins.filter (k: builtins.match ".*(ivm-just|bin/just|rust-just).*" k != null) (builtins.attrNames p.npmDeps.resolved); }; }',
        ),
        'ivm',
      );
      const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8')) as { name: string; version: string };
      expect(ivm.name).toBe(`${pkg.name}-${pkg.version}`);
      // The build phase compiles dist/ (npm run build); the Justfile's just shim is left out.
      expect(ivm.dontNpmBuild).toBe(false);
      expect(ivm.argNames).toContain('npmPackFlags');
      expect(ivm.usesImportNpmLockHook).toBe(true);
      expect(get(ivm, 'meta', 'mainProgram')).toBe('ivm');
      expect(strings(ivm.argNames).filter((a) => /hash|sha/i.test(a))).toEqual([]);
      const deps = obj(ivm.deps, 'npmDeps');
      expect(deps.argNames).toEqual(['npmRoot', 'package', 'packageLock']);
      expect(deps.packageName).toBe(pkg.name);
      expect(deps.withoutResolved).toEqual([]);
      expect(deps.justShim).toEqual([]);
      expect(deps.sample).toMatch(/^https:\/\/registry\.npmjs\.org\/@esbuild\/linux-x64\/-\/linux-x64-[0-9.]+\.tgz$/);
      expect(deps.nested).toMatch(/^https:\/\/registry\.npmjs\.org\/path-key\/-\/path-key-[0-9.]+\.tgz$/);
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

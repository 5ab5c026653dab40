// Bad input and failures midway, through the real CLI: each a clear message, a non-zero exit code,
// and nothing left behind. No guestfish launch and no boot here (they fail before or without one),
// except the qemu-img failure, which happens before guestfish runs.
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureLibvirt, ensureNetwork, virsh } from './support/libvirt.ts';
import { IVM_BIN, makeTestProject, testMeta, type TestProject } from './support/ivm.ts';

describe('bad input gets a clear error and exit code', () => {
  let project: TestProject;

  beforeAll(async () => {
    await ensureLibvirt();
    project = await makeTestProject('ivm-bad-');
    await project.useStandinBase('a');
    project.addMachine('good', testMeta());
  });

  afterAll(async () => {
    await cleanupDomain('qfail');
    await project?.remove();
  });

  const expectClean = (result: { exitCode: number; stderr: string }, code: number, text: string | RegExp) => {
    expect(result.stderr).not.toMatch(/internal error|at .*\.ts:\d+/);
    expect(result.stderr).toMatch(text);
    expect(result.exitCode).toBe(code);
  };

  it.each(['Web', '1web', 'web_1', 'web-', 'a'.repeat(64), '../etc', '-rf', ''])('refuses the machine name %j', async (name) => {
    const result = await project.ivm(['create', '--', name]);
    expectClean(result, 2, /invalid machine name/);
    expect(fs.existsSync(project.vmDir)).toBe(false);
  });

  it('names the machines there are when the machine is unknown', async () => {
    expectClean(await project.ivm(['create', 'nosuch']), 2, /unknown machine "nosuch".*\n.*machines here: good/);
  });

  it.each([
    ['a syntax error', '{ system = "x86_64-linux"; ', /meta\.nix does not evaluate:[\s\S]*syntax error/],
    ['an unknown key', '{ system = "x86_64-linux"; memroy = 1024; }', /meta\.nix: unknown key memroy/],
    ['a wrong type', '{ system = "x86_64-linux"; memory = "lots"; }', /meta\.nix: `memory` must be a positive integer, not "lots"/],
    ['no system', '{ memory = 1024; }', /meta\.nix: `system` is required/],
    ['a bad virtType', '{ system = "x86_64-linux"; virtType = "xen"; }', /`virtType` must be "kvm" or "qemu"/],
    ['network and bridge', '{ system = "x86_64-linux"; network = "default"; bridge = "br0"; }', /set `network` or `bridge`, not both/],
    ['a bad varSize', '{ system = "x86_64-linux"; varSize = "20 GB"; }', /`varSize` must be a size like "20G"/],
    ['a bridge gateway outside the address\'s prefix', '{ system = "x86_64-linux"; bridge = "br0"; ipAddress = "192.168.1.50/24"; gateway = "10.0.0.1"; }', /`gateway` 10\.0\.0\.1 is outside 192\.168\.1\.0\/24, the prefix of `ipAddress` 192\.168\.1\.50\/24/],
    ['a bridge address without its prefix', '{ system = "x86_64-linux"; bridge = "br0"; ipAddress = "192.168.1.50"; }', /with `bridge`, `ipAddress` is the VM's static address with its prefix/],
    ['a gateway on a libvirt network', '{ system = "x86_64-linux"; network = "default"; gateway = "192.168.122.1"; }', /`gateway` is for a static address on a `bridge`/],
  ])('rejects a meta.nix with %s, naming the file', async (_what, meta, message) => {
    project.addMachine('broken', meta);
    const result = await project.ivm(['create', 'broken']);
    expectClean(result, 2, message);
    expect(result.stderr).toContain(path.join(project.root, 'machines', 'broken', 'meta.nix'));
    expect(fs.existsSync(path.join(project.root, 'machines', 'broken', 'machine-id'))).toBe(false);
  });

  it('says when libvirt is unreachable, before touching anything', async () => {
    const result = await project.ivm(['create', 'good'], { LIBVIRT_URI: 'qemu+unix:///system?socket=/nonexistent/libvirt-sock' });
    expectClean(result, 4, /libvirt is unreachable at qemu\+unix:\/\/\/system\?socket=\/nonexistent\/libvirt-sock/);
    expect(result.stderr).toMatch(/hint: start libvirtd/);
    expect(fs.existsSync(project.vmDir)).toBe(false);
  });

  it('names the package of a missing tool', async () => {
    const result = await project.ivm(['list'], { PATH: path.join(project.root, 'empty-path') });
    expectClean(result, 4, /virsh: command not found\nhint: install it: Debian\/Ubuntu: apt install libvirt-clients; Fedora: dnf install libvirt-client; Arch: pacman -S libvirt/);
  });

  it('--dry-run prints the whole plan and changes nothing', async () => {
    project.addMachine('dry', testMeta());
    const result = await project.ivm(['--dry-run', 'create', 'dry', '--start']);
    expect(result.exitCode, result.stderr).toBe(0);
    for (const expected of ['build', 'qemu-img create', 'mkfs.ext4 -q -F -t ext4 -L ivm-var -E root_owner=0:0 -d', 'debugfs -w -f -', 'set_inode_field /identity/ssh_host_ed25519_key uid 0', 'qemu-img convert -q -n -f raw -O qcow2', 'define', 'start dry']) {
      expect(result.stdout).toContain(expected);
    }
    expect(result.stdout).not.toContain('PRIVATE KEY');
    expect(fs.readdirSync(path.join(project.root, 'machines', 'dry')).sort()).toEqual(['default.nix', 'meta.nix']);
    expect(fs.existsSync(project.vmDir)).toBe(false);
    expect(fs.existsSync(project.baseDir)).toBe(false);
    expect(await domainState('dry')).toBeNull();
  });

  it('rolls back a create whose qemu-img fails midway: the boot overlay and the DHCP reservation go, nothing is defined', async () => {
    await cleanupDomain('qfail');
    await ensureNetwork('default');
    project.addMachine('qfail', testMeta().replace('; }', '; ipAddress = "192.168.122.250"; }'));
    // A qemu-img that works for the boot overlay and fails for the /var disk (no backing file).
    const wrapper = path.join(project.root, 'qemu-img-fails-for-var');
    fs.writeFileSync(wrapper, '#!/bin/sh\ncase " $* " in *" -b "*) exec qemu-img "$@";; esac\necho "qemu-img: simulated failure" >&2\nexit 1\n', { mode: 0o755 });
    const result = await project.ivm(['create', 'qfail'], { QEMU_IMG: wrapper });
    expectClean(result, 1, /\/var disk of 128M failed: command failed \(exit 1\)[\s\S]*simulated failure[\s\S]*rolled back: .*qfail-boot\.qcow2/);
    expect(fs.existsSync(path.join(project.vmDir, 'qfail-boot.qcow2'))).toBe(false);
    expect(fs.existsSync(path.join(project.vmDir, 'qfail-var.qcow2'))).toBe(false);
    expect(fs.existsSync(path.join(project.root, 'libvirt', 'qfail.xml'))).toBe(false);
    expect(await domainState('qfail')).toBeNull();
    // The reservation was made first (its step is in the log of what was undone), and is gone.
    expect(result.stderr).toMatch(/rolled back: [\s\S]*net-update default delete ip-dhcp-host/);
    expect(await virsh(['net-dumpxml', 'default'])).not.toContain('192.168.122.250');
    // the base it installed stays for the next try; the identity it generated stays in machines/
    expect(fs.readdirSync(project.baseDir).filter((f) => f.endsWith('.qcow2'))).toHaveLength(1);
    expect(fs.existsSync(path.join(project.root, 'machines', 'qfail', 'machine-id'))).toBe(true);
  });

  it('destroys only machines of this project that have a VM', async () => {
    expectClean(await project.ivm(['destroy', 'nosuch', '--delete-var']), 2, /unknown machine "nosuch"/);
    expectClean(await project.ivm(['destroy', 'good']), 3, /has no machine-id: no VM was made of it here/);
  });

  it('xml of every machine skips those without identity, saying so', async () => {
    const result = await project.ivm(['xml']);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stderr).toContain('skipped good: no identity yet (ivm identity good)');
  });

  it('refuses to build a project outside git: nix would copy the host keys into the store', async () => {
    const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-nogit-'));
    fs.writeFileSync(path.join(bare, 'flake.nix'), '{ outputs = _: { }; }\n');
    fs.mkdirSync(path.join(bare, 'machines', 'm'), { recursive: true });
    fs.writeFileSync(path.join(bare, 'machines', 'm', 'meta.nix'), testMeta());
    const result = await project.ivm(['build', 'm'], { IVM_ROOT: bare });
    expectClean(result, 3, /is not in a git work tree: nix would copy the whole folder, host private keys included/);
    fs.rmSync(bare, { recursive: true, force: true });
  });

  it('never overwrites an existing identity file', async () => {
    const dir = project.addMachine('keep', testMeta(), { 'machine-id': '0123456789abcdef0123456789abcdef\n' });
    const first = await project.ivm(['identity', 'keep']);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).not.toContain('machine-id');
    expect(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8')).toBe('0123456789abcdef0123456789abcdef\n');
    const key = fs.readFileSync(path.join(dir, 'ssh_host_ed25519_key'), 'utf8');
    const second = await project.ivm(['identity', 'keep']);
    expect(second.stdout).toContain('identity complete, nothing to write');
    expect(fs.readFileSync(path.join(dir, 'ssh_host_ed25519_key'), 'utf8')).toBe(key);
  });

  it("says so when a file ivm reads is another user's (a host key made by root, read as nobody): exit 4", async () => {
    // identity 'keep' was made by root above: its host key is root's, mode 0600.
    const r = await execa('runuser', ['-u', 'nobody', '--', process.execPath, IVM_BIN, 'identity', 'keep'], {
      cwd: project.root,
      env: { ...project.env, HOME: '/tmp' },
      reject: false,
    });
    expectClean({ exitCode: r.exitCode ?? -1, stderr: r.stderr }, 4, /^ivm: permission denied: cannot \w+ .*(machines\/keep\/ssh_host_ed25519_key|\.ivm\/\S*)\nhint: it belongs to another user/);
  });

  it('a file named machines where the folder belongs is no project, said plainly', async () => {
    const other = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-nomachines-'));
    fs.writeFileSync(path.join(other, 'flake.nix'), '{ outputs = _: { }; }\n');
    fs.writeFileSync(path.join(other, 'machines'), 'not a folder\n');
    try {
      const r = await execa(process.execPath, [IVM_BIN, 'list'], { cwd: other, env: { ...project.env, IVM_ROOT: '' }, reject: false });
      expectClean({ exitCode: r.exitCode ?? -1, stderr: r.stderr }, 2, /no ivm project here: no folder with flake.nix and machines\//);
    } finally {
      fs.rmSync(other, { recursive: true });
    }
  });
});

// Per-VM secrets: machines/NAME/secrets/* (git-ignored) reach /var/identity/secrets/ (0700, each
// file 0600, root's) at create, and every upgrade keeps them in step (added, changed, removed; the
// folder goes when the last secret does). Real e2fsprogs, qemu-img and guestfish; the /var disk is
// read back with debugfs on a raw copy (exact modes and owners, no appliance).
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, ensureNetwork } from './support/libvirt.ts';
import { makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { readVarFile, waitUntilUnused } from './support/var-disk.ts';
import { repoRoot } from './support/standin.ts';

const VM = 'e2e-secrets';

/** Mode (octal, with type), uid and gid of a path on the /var filesystem, or undefined when absent. */
async function varStat(varDisk: string, file: string): Promise<{ mode: string; uid: number; gid: number } | undefined> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-stat-'));
  try {
    const raw = path.join(dir, 'var.raw');
    await execa('qemu-img', ['convert', '-U', '-O', 'raw', varDisk, raw]);
    const r = await execa('debugfs', ['-R', `stat ${file}`, raw], { reject: false });
    const mode = /Mode:\s+(\d+)/.exec(r.stdout)?.[1];
    const type = /Type: (\w+)/.exec(r.stdout)?.[1];
    if (!mode) return undefined;
    return {
      mode: `${type === 'directory' ? 'd' : '-'}${mode}`,
      uid: Number(/User:\s+(\d+)/.exec(r.stdout)?.[1]),
      gid: Number(/Group:\s+(\d+)/.exec(r.stdout)?.[1]),
    };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('per-VM secrets (machines/NAME/secrets -> /var/identity/secrets)', () => {
  let project: TestProject;
  let dir: string;
  let secrets: string;
  let varDisk: string;

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(VM);
    project = await makeTestProject('ivm-secrets-');
    fs.copyFileSync(path.join(repoRoot, '.gitignore'), path.join(project.root, '.gitignore'));
    await project.useStandinBase('a');
    dir = project.addMachine(VM, testMeta());
    secrets = path.join(dir, 'secrets');
    fs.mkdirSync(secrets);
    fs.writeFileSync(path.join(secrets, 'db-password'), 'hunter2\n');
    fs.writeFileSync(path.join(secrets, 'api.token'), 'tok-1\n');
    varDisk = path.join(project.vmDir, `${VM}-var.qcow2`);
  });

  afterAll(async () => {
    await cleanupDomain(VM);
    await project?.remove();
  });

  it('git never sees them', async () => {
    const ignored = await execa('git', ['-C', project.root, 'check-ignore', '--', `machines/${VM}/secrets/db-password`], { reject: false });
    expect(ignored.exitCode).toBe(0);
  });

  it('a link or a bad name in secrets/ is refused before anything is made', async () => {
    const link = path.join(secrets, 'linked');
    fs.symlinkSync('/etc/shadow', link);
    const linked = await project.ivm(['create', VM]);
    expect(linked.exitCode, linked.stderr).toBe(2);
    expect(linked.stderr).toContain(`${link} is a symbolic link`);
    fs.rmSync(link);
    const bad = path.join(secrets, '.hidden');
    fs.writeFileSync(bad, 'x');
    const named = await project.ivm(['create', VM]);
    expect(named.exitCode, named.stderr).toBe(2);
    expect(named.stderr).toContain("a secret's name is letters, digits and _.+-");
    fs.rmSync(bad);
    expect(fs.existsSync(varDisk)).toBe(false);
  });

  it('create writes them at 0600 in a 0700 folder, root\'s', async () => {
    const r = await project.ivm(['create', VM]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await varStat(varDisk, '/identity/secrets')).toEqual({ mode: 'd0700', uid: 0, gid: 0 });
    for (const [name, content] of [['db-password', 'hunter2\n'], ['api.token', 'tok-1\n']]) {
      expect(await varStat(varDisk, `/identity/secrets/${name}`)).toEqual({ mode: '-0600', uid: 0, gid: 0 });
      expect((await readVarFile(varDisk, `/identity/secrets/${name}`))?.toString()).toBe(content);
    }
  });

  it('upgrade adds, changes and removes secrets, each whole; status then says in sync', async () => {
    fs.writeFileSync(path.join(secrets, 'api.token'), 'tok-2\n');
    fs.rmSync(path.join(secrets, 'db-password'));
    fs.writeFileSync(path.join(secrets, 'new_one'), 'fresh\n');
    const up = await project.ivm(['upgrade', VM, '--no-build']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toMatch(/identity: added secrets\/new_one; changed secrets\/api\.token; removed secrets\/db-password/);
    await waitUntilUnused(varDisk);
    expect((await readVarFile(varDisk, '/identity/secrets/api.token'))?.toString()).toBe('tok-2\n');
    expect((await readVarFile(varDisk, '/identity/secrets/new_one'))?.toString()).toBe('fresh\n');
    expect(await varStat(varDisk, '/identity/secrets/new_one')).toEqual({ mode: '-0600', uid: 0, gid: 0 });
    expect(await varStat(varDisk, '/identity/secrets/db-password')).toBeUndefined();
    expect(await varStat(varDisk, '/identity/secrets/.api.token.ivm-new')).toBeUndefined();
    const status = await project.ivm(['status', VM, '--json']);
    expect(status.exitCode, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout).identity.sync).toBe('in sync');
  });

  it('without secrets any more, upgrade removes the folder', async () => {
    fs.rmSync(secrets, { recursive: true });
    const up = await project.ivm(['upgrade', VM, '--no-build']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain('removed secrets');
    await waitUntilUnused(varDisk);
    expect(await varStat(varDisk, '/identity/secrets')).toBeUndefined();
    expect(await varStat(varDisk, '/identity/machine-id')).toEqual({ mode: '-0444', uid: 0, gid: 0 });
  });
});

describe('a static address on a bridge (meta.nix ipAddress/gateway/dns -> /var/identity/network.conf)', () => {
  let project: TestProject;
  const NAME = 'e2e-bridged';

  beforeAll(async () => {
    await cleanupDomain(NAME);
    project = await makeTestProject('ivm-bridged-');
    await project.useStandinBase('a');
  });

  afterAll(async () => {
    await cleanupDomain(NAME);
    await project?.remove();
  });

  it('create writes the network.conf the guest applies at boot, in the format docs/flake.md gives', async () => {
    const dir = project.addMachine(
      NAME,
      '{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "128M"; bridge = "ivmtestbr0"; ipAddress = "192.168.1.50/24"; gateway = "192.168.1.1"; dns = [ "192.168.1.1" "9.9.9.9" ]; }\n',
    );
    const r = await project.ivm(['create', NAME]);
    expect(r.exitCode, r.stderr).toBe(0);
    const varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
    const conf = (await readVarFile(varDisk, '/identity/network.conf'))?.toString();
    expect(conf).toBe('# written by ivm from meta.nix (ipAddress, gateway, dns)\nADDRESS=192.168.1.50/24\nGATEWAY=192.168.1.1\nDNS=192.168.1.1 9.9.9.9\n');
    expect(await varStat(varDisk, '/identity/network.conf')).toEqual({ mode: '-0644', uid: 0, gid: 0 });
    // A network.conf of the machine's own as well: one would silently win, so it is refused.
    fs.writeFileSync(path.join(dir, 'network.conf'), 'ADDRESS=192.168.1.51/24\n');
    const both = await project.ivm(['upgrade', NAME, '--no-build']);
    expect(both.exitCode, both.stderr).toBe(2);
    expect(both.stderr).toContain('both say the VM\'s address');
  });
});

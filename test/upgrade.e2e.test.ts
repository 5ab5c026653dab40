// Day two, end to end with real qemu-img, guestfish and libvirt on stand-in bases "a" and "b":
// upgrade keeps /var data byte for byte and resyncs identity in one guestfish session; rollback;
// an upgrade killed at every step still leaves a bootable VM; gc; recreate; status.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, virsh, waitForState, withoutTestVirtlogd } from './support/libvirt.ts';
import { IVM_BIN, makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { parseStandinLog, sha256File } from './support/standin.ts';
import { readVarFile, waitUntilUnused, writeVarFile } from './support/var-disk.ts';

const NAME = 'e2e-up';
const SENTINEL = '/home/user/data';

describe('upgrade, rollback, gc, recreate, status (real tools)', () => {
  let project: TestProject;
  let dir: string;
  let boot: string;
  let bootPrev: string;
  let varDisk: string;
  let baseA: string;
  let baseB: string;
  const sentinel = crypto.randomBytes(4096);

  const backing = async (overlay: string) => {
    const { stdout } = await execa('qemu-img', ['info', '--output=json', '-U', overlay]);
    return JSON.parse(stdout)['backing-filename'] as string;
  };
  const guestfishLaunches = (stderr: string) => stderr.split('\n').filter((l) => /^\+ (\S+ )*guestfish .*\(session\)$|^\+ (\S+ )*guestfish --no-progress-bars <</.test(l)).length;
  const bootAndRead = async () => {
    const started = await project.ivm(['start', NAME]);
    expect(started.exitCode, started.stderr).toBe(0);
    await waitForState(NAME, 'shut off', 180_000);
    return parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${NAME}-serial.log`), 'utf8'));
  };

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(NAME);
    project = await makeTestProject('ivm-up-');
    await project.useStandinBase('a');
    dir = project.addMachine(NAME, testMeta(), {
      'resolv.conf': 'nameserver 192.0.2.1\n',
      admin_authorized_keys: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOld old@host\n',
      hosts: '192.0.2.10 db\n',
    });
    const created = await project.ivm(['create', NAME]);
    expect(created.exitCode, created.stderr).toBe(0);
    boot = path.join(project.vmDir, `${NAME}-boot.qcow2`);
    bootPrev = path.join(project.vmDir, `${NAME}-boot-prev.qcow2`);
    varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
    baseA = await backing(boot);
    await writeVarFile(varDisk, SENTINEL, sentinel);
  });

  afterAll(async () => {
    await cleanupDomain(NAME);
    await project?.remove();
  });

  it('refuses to upgrade a running VM without --restart, and changes nothing', async () => {
    expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
    const refused = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build']);
    expect(await domainState(NAME)).toBe('running');
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/is running: upgrade changes nothing while it runs\nhint: .*--restart/);
    expect(guestfishLaunches(refused.stderr)).toBe(0);
    await waitForState(NAME, 'shut off', 180_000);
    expect(await backing(boot)).toBe(baseA);
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
  });

  it('a VM with a saved memory image (virsh managedsave) counts as running: upgrade and destroy refuse', async () => {
    expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
    await virsh(['managedsave', NAME]);
    try {
      expect(await domainState(NAME)).toBe('shut off');
      const up = await project.ivm(['upgrade', NAME, '--no-build']);
      expect(up.exitCode).toBe(3);
      expect(up.stderr).toMatch(/has a saved memory image \(virsh managedsave\).*nothing was changed\nhint: .*virsh managedsave-remove e2e-up/);
      expect(guestfishLaunches(up.stderr)).toBe(0);
      const gone = await project.ivm(['destroy', NAME]);
      expect(gone.exitCode).toBe(3);
      expect(gone.stderr).toContain('has a saved memory image');
      expect(await domainState(NAME)).toBe('shut off');
      expect(await backing(boot)).toBe(baseA);
    } finally {
      await virsh(['managedsave-remove', NAME]);
    }
  });

  it('--dry-run shows old base -> new base and the identity changes, and changes nothing', async () => {
    fs.writeFileSync(path.join(dir, 'resolv.conf'), 'nameserver 192.0.2.2\n');
    fs.writeFileSync(path.join(dir, 'admin_authorized_keys'), 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINew new@host\n');
    fs.rmSync(path.join(dir, 'hosts'));
    await project.useStandinBase('b');
    const built = await project.ivm(['build', NAME]);
    expect(built.exitCode, built.stderr).toBe(0);
    baseB = built.stdout.trim();
    // list tells which VMs lag behind their machine's latest build (no guestfish, one virsh call).
    const list = await project.ivm(['list']);
    expect(list.stdout).toMatch(new RegExp(`^${NAME} +shut off +no +older than the latest build \\(ivm upgrade ${NAME} --no-build\\)$`, 'm'));
    const dry = await project.ivm(['--dry-run', 'upgrade', NAME, '--no-build']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`base: ${baseA} -> ${baseB}`);
    expect(dry.stdout).toContain('identity: changed resolv.conf, admin_authorized_keys; removed hosts');
    expect(dry.stdout).toContain('upload');
    expect(await backing(boot)).toBe(baseA);
    expect(fs.existsSync(bootPrev)).toBe(false);
  });

  it('upgrades in one guestfish session: new base, new identity, /var data intact, and it boots', async () => {
    const up = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(guestfishLaunches(up.stderr)).toBe(1);
    expect(up.stderr).not.toMatch(/mkfs/);
    expect(await backing(boot)).toBe(baseB);
    expect(await backing(bootPrev)).toBe(baseA);
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
    const log = await bootAndRead();
    expect(log.complete).toBe(true);
    expect(log.variant).toBe('b');
    expect(log.files['resolv.conf']?.content).toBe('nameserver 192.0.2.2\n');
    expect(log.files.admin_authorized_keys?.content).toContain('new@host');
    expect(log.files.admin_authorized_keys?.modeOctal).toBe('0644');
    expect(log.files.hosts).toBeUndefined();
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    expect(log.bootCount).toBe(2);
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
  });

  it('is idempotent: a second run changes nothing and says so', async () => {
    const before = [fs.statSync(boot).mtimeMs, fs.statSync(path.join(project.root, 'libvirt', `${NAME}.xml`)).mtimeMs];
    const varSha = await sha256File(varDisk);
    const again = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout).toContain(`${NAME} is up to date: nothing changed`);
    expect(again.stdout).toContain('identity: in sync');
    expect(guestfishLaunches(again.stderr)).toBe(1);
    expect(again.stderr).not.toMatch(/^\+ (mv|ln|qemu-img create|virsh .* define)/m);
    expect([fs.statSync(boot).mtimeMs, fs.statSync(path.join(project.root, 'libvirt', `${NAME}.xml`)).mtimeMs]).toEqual(before);
    expect(await sha256File(varDisk)).toBe(varSha); // not even a mount count changed
  });

  it('never regenerates identity, and never touches a domain that is not this machine\'s', async () => {
    const idFile = path.join(dir, 'machine-id');
    const realId = fs.readFileSync(idFile, 'utf8');
    const varSha = await sha256File(varDisk);
    fs.renameSync(idFile, `${idFile}.away`);
    try {
      const missing = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build']);
      expect(missing.exitCode).toBe(3);
      expect(missing.stderr).toMatch(/lacks machine-id: the VM's identity is on its \/var disk/);
      expect(guestfishLaunches(missing.stderr)).toBe(0);
      expect(fs.existsSync(idFile)).toBe(false);
    } finally {
      fs.renameSync(`${idFile}.away`, idFile);
    }
    fs.writeFileSync(idFile, 'fedcba9876543210fedcba9876543210\n');
    try {
      for (const args of [['upgrade', NAME, '--no-build'], ['rollback', NAME], ['destroy', NAME]]) {
        const other = await project.ivm(['--verbose', ...args]);
        expect(other.exitCode, args.join(' ')).toBe(3);
        expect(other.stderr).toMatch(/is not this project's machine/);
        expect(guestfishLaunches(other.stderr)).toBe(0);
      }
    } finally {
      fs.writeFileSync(idFile, realId);
    }
    expect(await sha256File(varDisk)).toBe(varSha);
    expect(await domainState(NAME)).toBe('shut off');
  });

  it('reports status: bases, disks and identity in sync', async () => {
    const status = await project.ivm(['status', NAME, '--json']);
    expect(status.exitCode, status.stderr).toBe(0);
    const json = JSON.parse(status.stdout);
    expect(json.state).toBe('shut off');
    expect(json.base.path).toBe(baseB);
    expect(json.rollbackBase.path).toBe(baseA);
    expect(json.disks.var.virtualBytes).toBe(128 * 1024 * 1024);
    expect(json.identity.sync).toBe('in sync');
    expect(json.identity.files.map((f: { name: string }) => f.name)).not.toContain('hosts');
  });

  it('rolls back to the previous base, and boots on it', async () => {
    const back = await project.ivm(['rollback', NAME]);
    expect(back.exitCode, back.stderr).toBe(0);
    expect(await backing(boot)).toBe(baseA);
    expect(await backing(bootPrev)).toBe(baseB);
    const log = await bootAndRead();
    expect(log.variant).toBe('a');
    expect(log.files['resolv.conf']?.content).toBe('nameserver 192.0.2.2\n');
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
  });

  it('an upgrade killed before each of its changes still leaves a VM on one of the two bases, /var intact', async () => {
    // A new identity change each time, so that the guestfish write is one of the steps killed.
    let completed = false;
    for (let step = 1; step <= 10 && !completed; step++) {
      fs.writeFileSync(path.join(dir, 'tcp_ports'), `${8000 + step}\n`);
      const run = await project.ivm(['upgrade', NAME, '--no-build'], { IVM_TEST_FAULT_KILL_AT: String(step) });
      completed = run.exitCode === 0;
      if (!completed) expect(run.signal, `step ${step}: ${run.stderr}`).toBe('SIGKILL');
      await waitUntilUnused(varDisk);
      expect([baseA, baseB], `step ${step}`).toContain(await backing(boot));
      await execa('qemu-img', ['check', '-U', boot]);
      expect(await domainState(NAME), `step ${step}`).toBe('shut off');
      expect(await readVarFile(varDisk, SENTINEL), `step ${step}`).toEqual(sentinel);
    }
    expect(completed).toBe(true);
    expect(await backing(boot)).toBe(baseB);
    const log = await bootAndRead();
    expect(log.variant).toBe('b');
    expect(log.files.tcp_ports?.content).toMatch(/^80\d\d\n$/);
    // About 10 runs with a guestfish launch each: 140-200 s here, more on a loaded machine.
  }, 1_800_000);

  it('an interrupted switch is finished by the next run: the rollback target is the base it left', async () => {
    expect(await backing(bootPrev)).toBe(baseA);
    expect(fs.existsSync(`${bootPrev}.next`)).toBe(false);
    expect(fs.existsSync(`${boot}.next`)).toBe(false);
  });

  it('bases that are gone: status says so, rollback refuses clearly, doctor fails (current) with the fix', async () => {
    fs.renameSync(baseA, `${baseA}.away`);
    fs.renameSync(baseB, `${baseB}.away`);
    try {
      const status = await project.ivm(['status', NAME]);
      expect(status.exitCode, status.stderr).toBe(0);
      expect(status.stdout).toContain(`base:           ${baseB} (MISSING: it cannot boot; ivm upgrade ${NAME} moves it to its latest base)`);
      expect(status.stdout).toContain(`rollback base:  ${baseA} (gone: rollback impossible)`);
      const rollback = await project.ivm(['rollback', NAME]);
      expect(rollback.exitCode).toBe(3);
      expect(rollback.stderr).toContain(`the previous base of ${NAME} is gone: ${baseA}`);
      const doctor = await project.ivm(['doctor', '--json']);
      const check = (JSON.parse(doctor.stdout) as { checks: { id: string; status: string; found: string; fix?: string }[] }).checks.find((c) => c.id === 'backing-files');
      expect(check?.status).toBe('fail');
      expect(check?.found).toContain(`${NAME}: its base ${baseB} is gone, so it cannot boot`);
      expect(check?.fix).toContain(`ivm upgrade ${NAME}`);
      expect(doctor.exitCode).toBe(4);
    } finally {
      fs.renameSync(`${baseA}.away`, baseA);
      fs.renameSync(`${baseB}.away`, baseB);
    }
    const doctor = await project.ivm(['doctor', '--json']);
    const check = (JSON.parse(doctor.stdout) as { checks: { id: string; status: string }[] }).checks.find((c) => c.id === 'backing-files');
    expect(check?.status).toBe('ok');
  });

  it('gc removes only an unreferenced base, never one a foreign disk uses; a second gc removes nothing', async () => {
    const orphan = path.join(project.baseDir, `${'4'.repeat(32)}-orphan-base.qcow2`);
    const foreignBase = path.join(project.baseDir, `${'1'.repeat(32)}-foreign-base.qcow2`);
    fs.copyFileSync(baseA, orphan);
    fs.copyFileSync(baseA, foreignBase);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', foreignBase, '-F', 'qcow2', path.join(project.vmDir, 'not-ivm.img')]);
    // A disk kept elsewhere and linked into IVM_VM_DIR protects its base too.
    const linkedBase = path.join(project.baseDir, `${'2'.repeat(32)}-linked-base.qcow2`);
    fs.copyFileSync(baseA, linkedBase);
    const elsewhere = path.join(project.root, 'elsewhere.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', linkedBase, '-F', 'qcow2', elsewhere]);
    fs.symlinkSync(elsewhere, path.join(project.vmDir, 'linked.qcow2'));
    // A base used directly (a link to it in IVM_VM_DIR) is in use too.
    const directBase = path.join(project.baseDir, `${'3'.repeat(32)}-direct-base.qcow2`);
    fs.copyFileSync(baseA, directBase);
    fs.symlinkSync(directBase, path.join(project.vmDir, 'direct.qcow2'));
    // A file not named as ivm build names a base is never gc's, used or not.
    const notOurs = path.join(project.baseDir, 'notes.qcow2');
    fs.copyFileSync(baseA, notOurs);
    const dry = await project.ivm(['--dry-run', 'gc']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(new RegExp(`would remove ${orphan} \\(\\d+ bytes\\)`));
    expect(dry.stdout).toMatch(/would remove 1 base image\(s\), \d+ bytes freed/);
    expect(fs.existsSync(orphan)).toBe(true);
    const gc = await project.ivm(['gc']);
    expect(gc.exitCode, gc.stderr).toBe(0);
    expect(fs.existsSync(orphan)).toBe(false);
    for (const kept of [baseA, baseB, foreignBase, linkedBase, directBase, notOurs]) expect(fs.existsSync(kept), kept).toBe(true);
    expect(gc.stdout).not.toContain(notOurs);
    expect(gc.stdout).toContain(`kept ${foreignBase} (used by ${path.join(project.vmDir, 'not-ivm.img')})`);
    const again = await project.ivm(['gc']);
    expect(again.stdout).toContain('nothing to remove');
  });

  it('recreate needs --yes without a terminal; with it, /var starts afresh', async () => {
    const refused = await project.ivm(['recreate', NAME, '--no-build']);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/deletes its \/var disk .*: all of its data is lost; nothing was changed\nhint: add --yes/);
    // What would stop the new VM is refused before the old one is destroyed.
    const varBefore = await sha256File(varDisk);
    const key = path.join(dir, 'ssh_host_ed25519_key');
    fs.renameSync(key, `${key}.away`);
    try {
      const noKey = await project.ivm(['recreate', NAME, '--no-build', '--yes']);
      expect(noKey.exitCode).toBe(2);
      expect(noKey.stderr).toContain('ssh_host_ed25519_key.pub exists but its private key ssh_host_ed25519_key does not');
    } finally {
      fs.renameSync(`${key}.away`, key);
    }
    const id = path.join(dir, 'machine-id');
    fs.renameSync(id, `${id}.away`);
    try {
      const noId = await project.ivm(['recreate', NAME, '--no-build', '--yes']);
      expect(noId.exitCode).toBe(3);
      expect(noId.stderr).toMatch(new RegExp(`machines/${NAME}/machine-id is missing.*nothing was changed:\\n[\\s\\S]*libvirt domain ${NAME} \\(shut off\\)\\nhint: restore the machine-id from the /var disk: guestfish --ro`));
    } finally {
      fs.renameSync(`${id}.away`, id);
    }
    expect(await domainState(NAME)).toBe('shut off');
    expect(await sha256File(varDisk)).toBe(varBefore);
    // On a terminal it asks: a wrong name, or Ctrl+D at the prompt, is no.
    for (const typed of ['nope\n', '\x04']) {
      const asked = await execa('script', ['-qfec', `${process.execPath} ${IVM_BIN} recreate ${NAME} --no-build`, '/dev/null'], {
        cwd: project.root,
        env: project.env,
        input: typed,
        reject: false,
        timeout: 60_000,
      });
      expect(asked.exitCode, asked.stdout).toBe(3);
      expect(asked.stdout).toContain('Type the machine name to confirm:');
      expect(asked.stdout).toContain('not confirmed; nothing was changed');
      expect(asked.stdout).not.toMatch(/internal error|\n\s+at /);
    }
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
    const fresh = await project.ivm(['recreate', NAME, '--no-build', '--yes']);
    expect(fresh.exitCode, fresh.stderr).toBe(0);
    expect(await readVarFile(varDisk, SENTINEL)).toBeUndefined();
    expect((await readVarFile(varDisk, '/identity/machine-id'))?.toString()).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    expect(await backing(boot)).toBe(baseB);
    expect(fs.existsSync(bootPrev)).toBe(false);
    expect(await virsh(['domstate', NAME])).toContain('shut off');
  });

  it('stop waits for a graceful shutdown and says when it does not come; --force powers off', async () => {
    expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
    // The stand-in guest ignores the ACPI power button, so a graceful stop cannot finish in 1 s.
    const slow = await project.ivm(['stop', NAME, '--timeout', '1']);
    expect(slow.exitCode).toBe(1);
    expect(slow.stderr).toMatch(/did not shut down within 1 s \(it was asked to, and may still power off later\)\nhint: .*ivm stop --force/);
    const busy = await project.ivm(['destroy', NAME]);
    expect(busy.exitCode).toBe(3);
    expect(busy.stderr).toMatch(/is running\nhint: stop it first .*--force/);
    expect(await domainState(NAME)).toBe('running');
    const forced = await project.ivm(['stop', '--force', NAME]);
    expect(forced.exitCode, forced.stderr).toBe(0);
    expect(await domainState(NAME)).toBe('shut off');
  });

  it('start says that virtlogd is down, not that libvirt is unreachable (needs the virtlogd the tests started)', async (ctx) => {
    const ran = await withoutTestVirtlogd(async () => {
      const r = await project.ivm(['start', NAME]);
      expect(r.exitCode).toBe(4);
      expect(r.stderr).toMatch(/cannot start the VM: virtlogd is not running .*virtlogd-sock.*\nhint: start it: systemctl start virtlogd/);
      expect(r.stderr).not.toMatch(/unreachable/);
      expect(await domainState(NAME)).toBe('shut off');
    });
    if (!ran) ctx.skip();
  });

  it('upgrade --restart shuts a running VM down, upgrades it and starts it again', async () => {
    fs.writeFileSync(path.join(dir, 'udp_ports'), '5353\n');
    expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
    // The stand-in powers itself off after its report; the shutdown wait covers that.
    const up = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build', '--restart', '--timeout', '120']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain('identity: added udp_ports');
    expect(up.stdout).toContain(`upgraded ${NAME} and started it again`);
    expect(up.stderr).toMatch(/virsh -c \S+ shutdown e2e-up[\s\S]*guestfish[\s\S]*virsh -c \S+ start e2e-up/);
    await waitForState(NAME, 'shut off', 180_000);
    const log = parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${NAME}-serial.log`), 'utf8'));
    expect(log.files.udp_ports?.content).toBe('5353\n');
  });
});

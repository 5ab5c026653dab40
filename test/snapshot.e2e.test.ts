// ivm snapshot, end to end with real qemu-img, guestfish and libvirt on the stand-in bases "a" and
// "b": internal qcow2 snapshots of the /var disk survive upgrade, rollback and destroy; restore
// brings back the snapshot's bytes and then the machine's current identity; a restore killed before
// each of its changes leaves the old state or the restored one, and a rerun finishes it; bad input
// and a running VM change nothing.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, virsh, waitForState } from './support/libvirt.ts';
import { makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { sha256File } from './support/standin.ts';
import { readVarFile, waitUntilUnused, writeVarFile } from './support/var-disk.ts';

const NAME = 'e2e-snap';
const SENTINEL = '/home/user/data';
const KEY_1 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyOne one@host\n';
const KEY_2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyTwo two@host\n';

const sha = (data: Buffer | undefined) => (data ? crypto.createHash('sha256').update(data).digest('hex') : 'missing');

describe('ivm snapshot (real tools)', () => {
  let project: TestProject;
  let dir: string;
  let varDisk: string;
  let boot: string;
  const first = crypto.randomBytes(8192);
  const later = crypto.randomBytes(8192);

  /** The snapshots on the disk as qemu-img itself lists them: the truth ivm must agree with. */
  const qemuSnapshots = async (): Promise<string[]> => {
    const { stdout } = await execa('qemu-img', ['info', '--output=json', '-U', varDisk]);
    return ((JSON.parse(stdout).snapshots ?? []) as { name: string }[]).map((s) => s.name);
  };
  const listJson = async () => {
    const list = await project.ivm(['snapshot', 'list', NAME, '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    return JSON.parse(list.stdout) as { state: string; disk: string; diskAllocatedBytes: number; snapshots: { name: string; id: string; created: string; dataBytes: number; note: string | null }[] };
  };
  const sentinelSha = async () => sha(await readVarFile(varDisk, SENTINEL));
  const backing = async (overlay: string) => JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', overlay])).stdout)['backing-filename'] as string;
  /** The VM shut off before the next test opens its disk: wait for the stand-in's own power-off, else power it off. */
  const settle = () => waitForState(NAME, 'shut off', 180_000).catch(() => virsh(['destroy', NAME]).catch(() => undefined));
  /** The whole disk file and qemu-img's list: "nothing changed" means neither did. */
  const diskState = async () => ({ file: await sha256File(varDisk), snapshots: await qemuSnapshots() });

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(NAME);
    project = await makeTestProject('ivm-snap-');
    await project.useStandinBase('a');
    dir = project.addMachine(NAME, testMeta(), { admin_authorized_keys: KEY_1 });
    const created = await project.ivm(['create', NAME]);
    expect(created.exitCode, created.stderr).toBe(0);
    varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
    boot = path.join(project.vmDir, `${NAME}-boot.qcow2`);
    await writeVarFile(varDisk, SENTINEL, first);
  });

  afterAll(async () => {
    await cleanupDomain(NAME);
    await project?.remove();
  });

  it('create: an internal snapshot of the stopped /var disk, listed with its time, data size and note', async () => {
    const made = await project.ivm(['snapshot', 'create', NAME, 'first', '--note', 'before the upgrade']);
    expect(made.exitCode, made.stderr).toBe(0);
    expect(made.stdout).toContain(`made snapshot first of ${NAME}'s /var disk; to go back to it: ivm snapshot restore ${NAME} first`);
    const unnamed = await project.ivm(['snapshot', 'create', NAME]);
    expect(unnamed.exitCode, unnamed.stderr).toBe(0);
    const names = await qemuSnapshots();
    expect(names[0]).toBe('first');
    expect(names[1]).toMatch(/^snap-\d{8}-\d{6}$/);
    // The default name is the UTC time it was made at.
    const stamp = names[1]!.slice(5);
    const utc = `${stamp.slice(0, 4)}-${stamp.slice(4, 6)}-${stamp.slice(6, 8)}T${stamp.slice(9, 11)}:${stamp.slice(11, 13)}:${stamp.slice(13, 15)}Z`;
    expect(Math.abs(Date.parse(utc) - Date.now())).toBeLessThan(120_000);

    const list = await listJson();
    expect(list.state).toBe('shut off');
    expect(list.snapshots.map((s) => s.name)).toEqual(names);
    const entry = list.snapshots[0]!;
    expect(entry.note).toBe('before the upgrade');
    expect(list.snapshots[1]!.note).toBeNull();
    expect(Math.abs(Date.parse(entry.created) - Date.now())).toBeLessThan(120_000);
    // Its data: at least the sentinel, far less than the 128 MiB disk.
    expect(entry.dataBytes).toBeGreaterThan(first.length);
    expect(entry.dataBytes).toBeLessThan(64 * 1024 * 1024);
    expect(list.diskAllocatedBytes).toBeGreaterThan(0);
    const text = await project.ivm(['snapshot', 'list', NAME]);
    expect(text.stdout).toMatch(/^NAME +CREATED \(UTC\) +DATA +NOTE$/m);
    expect(text.stdout).toMatch(/^first +\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +[\d.]+ (KiB|MiB) +before the upgrade$/m);

    const deleted = await project.ivm(['snapshot', 'delete', NAME, names[1]!]);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(await qemuSnapshots()).toEqual(['first']);

    // A note belongs to one snapshot (name and time): a later snapshot of the same name, the first
    // one deleted behind ivm's back, shows none.
    expect((await project.ivm(['snapshot', 'create', NAME, 'again', '--note', 'old note'])).exitCode).toBe(0);
    await execa('qemu-img', ['snapshot', '-d', 'again', varDisk]);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect((await project.ivm(['snapshot', 'create', NAME, 'again'])).exitCode).toBe(0);
    expect((await listJson()).snapshots.find((s) => s.name === 'again')?.note).toBeNull();
    expect((await project.ivm(['snapshot', 'delete', NAME, 'again'])).exitCode).toBe(0);
    const record = JSON.parse(fs.readFileSync(path.join(project.root, '.ivm', 'snapshots', `${NAME}.json`), 'utf8'));
    expect(record.notes.map((n: { name: string }) => n.name)).toEqual(['first']);
  });

  it('bad input: a clear error, its exit code, and nothing changed on the disk', async () => {
    const before = await diskState();
    const cases: [string[], number, RegExp][] = [
      [['snapshot', 'restore', NAME, 'nosuch'], 2, /has no snapshot "nosuch"; nothing was changed\nhint: its snapshots: first/],
      [['snapshot', 'delete', NAME, 'nosuch'], 2, /has no snapshot "nosuch"/],
      [['snapshot', 'create', NAME, 'first'], 3, /already has a snapshot first; nothing was changed\nhint: pick another name/],
      [['snapshot', 'create', NAME, '../x'], 2, /invalid snapshot name "\.\.\/x"/],
      [['snapshot', 'create', NAME, 'a b'], 2, /invalid snapshot name/],
      [['snapshot', 'create', NAME, '-dash'], 2, /unknown option|invalid snapshot name/],
      [['snapshot', 'create', NAME, '12'], 2, /not digits only/],
      [['snapshot', 'create', NAME, 'x'.repeat(65)], 2, /invalid snapshot name/],
      [['snapshot', 'restore', NAME, 'a;rm'], 2, /invalid snapshot name/],
      [['snapshot', 'create', NAME, 'ok', '--note', 'two\nlines'], 2, /invalid snapshot note/],
      [['snapshot', 'create', 'nosuch', 'ok'], 2, /unknown machine "nosuch"/],
      [['snapshot', 'list', 'nosuch'], 2, /unknown machine "nosuch"/],
      [['snapshot', 'restore', 'Bad_Name', 'first'], 2, /invalid machine name/],
    ];
    for (const [args, code, message] of cases) {
      const run = await project.ivm(args);
      expect(run.exitCode, `${args.join(' ')}: ${run.stderr}`).toBe(code);
      expect(run.stderr, args.join(' ')).toMatch(message);
      expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
    }
    expect(await diskState()).toEqual(before);
    // A machine with no VM made of it here (no machine-id), then one with its identity but no /var disk.
    project.addMachine('e2e-snap-novar', testMeta());
    const noId = await project.ivm(['snapshot', 'list', 'e2e-snap-novar']);
    expect(noId.exitCode).toBe(3);
    expect(noId.stderr).toMatch(/has no machine-id: no VM was made of it here/);
    expect((await project.ivm(['identity', 'e2e-snap-novar'])).exitCode).toBe(0);
    for (const args of [['snapshot', 'list', 'e2e-snap-novar'], ['snapshot', 'create', 'e2e-snap-novar', 'x']]) {
      const noVar = await project.ivm(args);
      expect(noVar.exitCode, noVar.stderr).toBe(3);
      expect(noVar.stderr).toMatch(/e2e-snap-novar has no \/var disk \(\S+e2e-snap-novar-var\.qcow2\), so it has no snapshots/);
    }
    // A name qemu-img holds twice (made by hand: qemu-img allows it) is ambiguous: refused.
    await execa('qemu-img', ['snapshot', '-c', 'twice', varDisk]);
    await execa('qemu-img', ['snapshot', '-c', 'twice', varDisk]);
    const beforeTwice = await diskState();
    for (const verb of ['restore', 'delete']) {
      const twice = await project.ivm(['snapshot', verb, NAME, 'twice']);
      expect(twice.exitCode, twice.stderr).toBe(3);
      expect(twice.stderr).toMatch(/holds 2 snapshots named twice .*nothing was changed/);
    }
    expect(await diskState()).toEqual(beforeTwice);
    // (qemu-img deletes by name, the first of that name each time.)
    await execa('qemu-img', ['snapshot', '-d', 'twice', varDisk]);
    await execa('qemu-img', ['snapshot', '-d', 'twice', varDisk]);
    const beforeDry = await diskState();
    // --dry-run prints the plan and changes nothing (and takes no lock).
    const dry = await project.ivm(['--dry-run', 'snapshot', 'restore', NAME, 'first']);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toMatch(/qemu-img snapshot -c before-restore-\d{8}-\d{6} \S+e2e-snap-var\.qcow2/);
    expect(dry.stdout).toMatch(/qemu-img snapshot -a first \S+e2e-snap-var\.qcow2/);
    const dryCreate = await project.ivm(['--dry-run', 'snapshot', 'create', NAME, 'planned']);
    expect(dryCreate.stdout).toMatch(/qemu-img snapshot -c planned /);
    // recreate would delete the disk and its snapshots with it: it says how many.
    const recreate = await project.ivm(['recreate', NAME, '--no-build']);
    expect(recreate.exitCode).toBe(3);
    expect(recreate.stderr).toMatch(/all of its data is lost, and with it its 1 snapshot \(ivm snapshot list e2e-snap\); nothing was changed/);
    expect(await diskState()).toEqual(beforeDry);
    expect(await sentinelSha()).toBe(sha(first));
  });

  it('a running VM: refused without --stop (list still reads it); a saved memory image is refused; --stop shuts down, snapshots, starts again', async () => {
    try {
      const before = { snapshots: await qemuSnapshots() };
      // The stand-in powers itself off some 15 s after it starts: each check right after a start.
      expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
      await virsh(['managedsave', NAME]);
      try {
        const saved = await project.ivm(['snapshot', 'create', NAME, 'saved', '--stop']);
        expect(saved.exitCode).toBe(3);
        expect(saved.stderr).toMatch(/has a saved memory image \(virsh managedsave\)/);
      } finally {
        await virsh(['managedsave-remove', NAME]);
      }
      expect(await domainState(NAME)).toBe('shut off');

      expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
      for (const args of [['snapshot', 'create', NAME, 'live'], ['snapshot', 'restore', NAME, 'first'], ['snapshot', 'delete', NAME, 'first']]) {
        const refused = await project.ivm(args);
        expect(refused.exitCode, refused.stderr).toBe(3);
        expect(refused.stderr).toMatch(/is running: its \/var disk is in use.*nothing was changed/);
        if (args[1] !== 'delete') expect(refused.stderr).toMatch(/hint: .*add --stop/);
      }
      // list reads only metadata, with qemu-img -U, while QEMU has the disk open.
      const listed = await listJson();
      expect(listed.state).toBe('running');
      expect(listed.snapshots.map((s) => s.name)).toEqual(['first']);
      expect(listed.snapshots[0]!.dataBytes).toBeGreaterThan(0);
      await waitForState(NAME, 'shut off', 180_000);
      // (The guest itself wrote to its /var while it ran: only the snapshots are compared.)
      expect(await qemuSnapshots()).toEqual(before.snapshots);

      // A failure after --stop shut it down leaves it off, and says so.
      const failing = path.join(project.root, 'qemu-img-failing-snapshot');
      fs.writeFileSync(failing, '#!/bin/sh\nif [ "$1" = snapshot ]; then echo "injected failure" >&2; exit 1; fi\nexec qemu-img "$@"\n', { mode: 0o755 });
      expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
      const broken = await project.ivm(['snapshot', 'create', NAME, 'broken', '--stop', '--timeout', '240'], { QEMU_IMG: failing });
      expect(broken.exitCode).toBe(1);
      expect(broken.stderr).toMatch(/injected failure[\s\S]*e2e-snap was left shut off; once this is fixed, run the command again, or start it as it is: ivm start e2e-snap/);
      expect(await domainState(NAME)).toBe('shut off');
      expect(await qemuSnapshots()).toEqual(['first']);

      expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
      const stopped = await project.ivm(['--verbose', 'snapshot', 'create', NAME, 'stopped', '--stop', '--timeout', '240']);
      expect(stopped.exitCode, stopped.stderr).toBe(0);
      expect(stopped.stderr).toMatch(/virsh -c \S+ shutdown e2e-snap[\s\S]*qemu-img snapshot -c stopped [\s\S]*virsh -c \S+ start e2e-snap/);
      expect(stopped.stdout).toContain('(e2e-snap was shut down for it and started again)');
      await waitForState(NAME, 'shut off', 180_000);
      expect(await qemuSnapshots()).toEqual(['first', 'stopped']);
      expect((await project.ivm(['snapshot', 'delete', NAME, 'stopped'])).exitCode).toBe(0);
      expect(await sentinelSha()).toBe(sha(first));
    } finally {
      await settle();
    }
  });

  it('snapshots survive upgrade, rollback and destroy; restore brings back their bytes and the current identity; the automatic snapshot undoes it', async () => {
    await writeVarFile(varDisk, SENTINEL, later);
    fs.writeFileSync(path.join(dir, 'admin_authorized_keys'), KEY_2);
    await project.useStandinBase('b');
    const up = await project.ivm(['upgrade', NAME]);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain('identity: changed admin_authorized_keys');
    const baseB = await backing(boot);
    expect((await listJson()).snapshots.map((s) => s.name)).toEqual(['first']);
    expect((await listJson()).snapshots[0]!.note).toBe('before the upgrade');
    expect((await project.ivm(['rollback', NAME])).exitCode).toBe(0);
    expect(await qemuSnapshots()).toEqual(['first']);
    const destroyed = await project.ivm(['destroy', NAME]);
    expect(destroyed.exitCode, destroyed.stderr).toBe(0);
    expect(await domainState(NAME)).toBeNull();
    expect(fs.existsSync(boot)).toBe(false);
    expect((await listJson()).snapshots.map((s) => s.name)).toEqual(['first']);
    expect(await sentinelSha()).toBe(sha(later));

    // An identity file added after the snapshot (and after the upgrade): restore must write it too.
    fs.writeFileSync(path.join(dir, 'tcp_ports'), '8080\n');
    const restored = await project.ivm(['snapshot', 'restore', NAME, 'first']);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(restored.stdout).toMatch(/identity: added tcp_ports; changed admin_authorized_keys|identity: .*changed admin_authorized_keys/);
    const undo = /to undo: ivm snapshot restore e2e-snap (before-restore-\d{8}-\d{6})$/m.exec(restored.stdout);
    expect(undo, restored.stdout).not.toBeNull();
    expect(await sentinelSha()).toBe(sha(first));
    expect((await readVarFile(varDisk, '/identity/admin_authorized_keys'))?.toString()).toBe(KEY_2);
    expect((await readVarFile(varDisk, '/identity/tcp_ports'))?.toString()).toBe('8080\n');
    expect((await readVarFile(varDisk, '/identity/machine-id'))?.toString()).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    // The VM is back: defined again, a boot overlay on the machine's last build.
    expect(await domainState(NAME)).toBe('shut off');
    expect(await backing(boot)).toBe(baseB);
    const keep = undo![1]!;
    const list = await listJson();
    expect(list.snapshots.map((s) => s.name)).toEqual(['first', keep]);
    expect(list.snapshots[1]!.note).toBe('automatic: the state before restoring first');

    const back = await project.ivm(['snapshot', 'restore', NAME, keep]);
    expect(back.exitCode, back.stderr).toBe(0);
    expect(await sentinelSha()).toBe(sha(later));
    expect((await readVarFile(varDisk, '/identity/tcp_ports'))?.toString()).toBe('8080\n');
    expect((await qemuSnapshots()).length).toBe(3);
  });

  it('a restore killed before each of its changes leaves the old state or the restored one, and a rerun finishes it', async () => {
    // The state to restore from each time: the later bytes, the current identity.
    expect((await project.ivm(['snapshot', 'create', NAME, 'ref'])).exitCode).toBe(0);
    let completed = false;
    const left = new Map<number, string>();
    for (let step = 1; step <= 10 && !completed; step++) {
      await execa('qemu-img', ['snapshot', '-a', 'ref', varDisk]);
      expect(await sentinelSha()).toBe(sha(later));
      const run = await project.ivm(['snapshot', 'restore', NAME, 'first'], { IVM_TEST_FAULT_KILL_AT: String(step) });
      completed = run.exitCode === 0;
      if (!completed) expect(run.signal, `step ${step}: ${run.stderr}`).toBe('SIGKILL');
      await waitUntilUnused(varDisk);
      const state = await sentinelSha();
      expect([sha(first), sha(later)], `step ${step}`).toContain(state);
      if (!completed) left.set(step, state === sha(first) ? 'restored' : 'old');
      await execa('qemu-img', ['check', '-U', varDisk]);
      expect(await domainState(NAME), `step ${step}`).toBe('shut off');
      expect(await qemuSnapshots(), `step ${step}`).toContain('first');
      if (completed) break;
      const rerun = await project.ivm(['snapshot', 'restore', NAME, 'first']);
      expect(rerun.exitCode, `rerun after step ${step}: ${rerun.stderr}`).toBe(0);
      expect(await sentinelSha(), `rerun after step ${step}`).toBe(sha(first));
      expect((await readVarFile(varDisk, '/identity/admin_authorized_keys'))?.toString(), `rerun after step ${step}`).toBe(KEY_2);
    }
    expect(completed).toBe(true);
    // The kills fell on both sides of the switch: before it (keep, apply) and after it (the
    // identity resync, the redefine).
    expect([left.get(1), left.get(2), left.get(3)]).toEqual(['old', 'old', 'restored']);
    expect([...left.values()].slice(3).every((state) => state === 'restored')).toBe(true);
    expect(await sentinelSha()).toBe(sha(first));
    expect((await readVarFile(varDisk, '/identity/admin_authorized_keys'))?.toString()).toBe(KEY_2);
  }, 1_800_000);
});

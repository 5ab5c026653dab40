// From a review of snapshot, grow, export and plan/apply: the fixes that need no VM. Records read
// back with control characters in them, names from a disk's snapshot table shown on a terminal,
// snapshot names that qemu-img would take for another snapshot's ID, a restore that failed after
// the disk changed, apply's summary of a VM left running, and the stamp apply --deep checks before
// it records what plan read (real files, real qemu-img and stat; no mocks).
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSnapshot, shownText, type DiskSnapshot } from '../src/core/disks/snapshot.ts';
import { notesFile, readNotes, updateNotes } from '../src/core/disks/snapshot-notes.ts';
import { appliedError } from '../src/core/disks/snapshot-restore.ts';
import { formatSummary } from '../src/core/fleet/fleet-format.ts';
import { identityAgainstRecord, recordSyncedIdentity, syncedRecordFile } from '../src/core/fleet/fleet-identity.ts';
import { diskStamp } from '../src/core/fleet/fleet-plan.ts';
import type { Outcome } from '../src/core/fleet/apply.ts';
import { projectAt, type Project } from '../src/core/machine/project.ts';
import { BadInputError, IvmError, RefusedError } from '../src/errors.ts';
import { Runner } from '../src/host/runner.ts';
import { readSettings } from '../src/host/settings.ts';

let root: string;
let project: Project;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-verbs-review-'));
  project = projectAt(root);
});

afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const snap = (id: string, name: string): DiskSnapshot => ({ id, name, dateSec: 1_700_000_000, dateNsec: 5 });

describe('snapshot notes read back', () => {
  it('a record whose note holds a control character (an escape sequence) is refused, as --note would be', () => {
    const file = notesFile(project, 'web');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, JSON.stringify({ notes: [{ name: 'a', dateSec: 1, dateNsec: 0, note: 'fine' }] }));
    expect(readNotes(project, 'web')).toEqual([{ name: 'a', dateSec: 1, dateNsec: 0, note: 'fine' }]);
    for (const note of ['\u001b[2J\u001b[Hgone', 'two\nlines', 'c1 \u009b31m', '']) {
      fs.writeFileSync(file, JSON.stringify({ notes: [{ name: 'a', dateSec: 1, dateNsec: 0, note }] }));
      expect(() => readNotes(project, 'web')).toThrow(BadInputError);
      expect(() => readNotes(project, 'web')).toThrow(/is not a snapshot note record/);
      // Nor is it carried on by the next change of the record.
      expect(() => updateNotes(project, 'web', [{ name: 'a', dateSec: 1, dateNsec: 0 }], {})).toThrow(/is not a snapshot note record/);
    }
    fs.rmSync(file);
  });
});

describe('names from a disk\'s snapshot table', () => {
  it('are shown as they are, unless they hold a control character (C0, DEL, C1): then quoted and escaped', () => {
    expect(shownText('before-restore-20250101-000000')).toBe('before-restore-20250101-000000');
    expect(shownText('made by hand')).toBe('made by hand');
    const shown = shownText('x\u001b]0;owned\u0007\u009b2J\u007f');
    expect(shown).toBe('"x\\u001b]0;owned\\u0007\\u009b2J\\u007f"');
    expect(shown).not.toMatch(/[\u0000-\u001f\u007f-\u009f]/);
  });

  it('findSnapshot: the hint lists them escaped; a name held twice, or that is another snapshot\'s ID, is refused', () => {
    const hostile = [snap('1', 'ok'), snap('2', 'evil\u001b[31m')];
    let hint = '';
    try {
      findSnapshot(hostile, 'nosuch', 'web');
    } catch (error) {
      expect(error).toBeInstanceOf(BadInputError);
      hint = (error as BadInputError).hint ?? '';
    }
    expect(hint).toContain('ok, "evil\\u001b[31m"');
    expect(hint).not.toMatch(/\u001b/);
    expect(findSnapshot(hostile, 'ok', 'web').id).toBe('1');
    expect(() => findSnapshot([snap('1', 'twice'), snap('2', 'twice')], 'twice', 'web')).toThrow(/holds 2 snapshots named twice/);
    // qemu-img -a/-d look a word up as an ID first: a disk from elsewhere may number them oddly.
    const odd = [snap('first', 'other'), snap('7', 'first')];
    expect(() => findSnapshot(odd, 'first', 'web')).toThrow(RefusedError);
    expect(() => findSnapshot(odd, 'first', 'web')).toThrow(/holds a snapshot whose ID is first \(named other/);
    // A snapshot whose own ID is its name is the same snapshot: no ambiguity.
    expect(findSnapshot([snap('x1', 'x1')], 'x1', 'web').id).toBe('x1');
  });
});

describe('a restore that failed after the disk was put back to the snapshot', () => {
  it('says the disk changed, drops the inner "nothing was changed", keeps the exit code and hints', () => {
    const inner = new RefusedError('the /var disk /v/web-var.qcow2 holds another machine-id than machines/web/machine-id: it is not this machine\'s disk; nothing was changed', 'restore machines/web/machine-id');
    const error = appliedError(inner, 'web', 'first') as IvmError;
    expect(error).toBeInstanceOf(IvmError);
    expect(error.exitCode).toBe(3);
    expect(error.message).toMatch(/^web's \/var disk was put back to snapshot first, but the rest of the restore \(the identity resync, the domain, the boot overlay\) failed: the \/var disk \/v\/web-var\.qcow2 holds another machine-id/);
    expect(error.message).not.toMatch(/nothing was changed/);
    expect(error.hint).toBe('restore machines/web/machine-id\nonce this is fixed, run the restore again: ivm snapshot restore web first');
    const bug = new TypeError('a bug');
    expect(appliedError(bug, 'web', 'first')).toBe(bug);
  });
});

describe('apply\'s summary', () => {
  const outcome = (name: string, result: Outcome['result'], done: Outcome['done'], waiting: Outcome['waiting']): Outcome => ({ name, kind: 'machine', result, done, waiting, error: undefined });

  it('a VM left running whose other actions were done says what was done', () => {
    const lines = formatSummary([outcome('web', 'needs restart', ['redefine'], ['restart']), outcome('db', 'needs restart', [], ['upgrade'])], false);
    expect(lines[0]).toBe('apply: 0 changed, 0 up to date, 2 needs restart, 0 failed');
    expect(lines).toContain('  needs restart: web (restart; left running: ivm apply --restart web; done: redefine)');
    expect(lines).toContain('  needs restart: db (upgrade; left running: ivm apply --restart db)');
    const dry = formatSummary([outcome('web', 'needs restart', ['redefine'], ['restart']), outcome('db', 'changed', ['create'], [])], true);
    // A dry run says what would be done, never that something "changed".
    expect(dry[0]).toBe('apply (dry run: nothing was changed): 1 would change, 0 up to date, 1 needs restart, 0 failed');
    expect(dry).toContain('  needs restart: web (restart; left running: ivm apply --restart web; would be done: redefine)');
  });
});

describe('the record of the last identity sync, read back', () => {
  it('a record naming a file with a control character says nothing (unknown), never prints it', () => {
    const sources = [{ name: 'hostname', local: '/x', mode: '0444', content: Buffer.from('web\n') }];
    recordSyncedIdentity(project, 'web', sources);
    expect(identityAgainstRecord(project, 'web', sources).state).toBe('in sync');
    const file = syncedRecordFile(project, 'web');
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as { salt: string; files: Record<string, string> };
    record.files['\u001b[2Jx'] = 'ab';
    fs.writeFileSync(file, JSON.stringify(record));
    expect(identityAgainstRecord(project, 'web', sources)).toEqual({ state: 'unknown', added: [], changed: [], removed: [] });
  });
});

describe('the stamp of a /var disk (apply --deep records only if the disk is as plan read it)', () => {
  const runners = () => [
    new Runner(readSettings({}, 0), { dryRun: false, verbose: false }),
    // HOST_CMD: asked of the host with stat through the runner (env stands in for host-spawn).
    new Runner(readSettings({ HOST_CMD: 'env' }, 0), { dryRun: false, verbose: false }),
  ];

  it('stays the same when the disk is only read, and moves with a write, a qemu-img snapshot or a replaced file', async () => {
    const disk = path.join(root, 'web-var.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '64M']);
    for (const runner of runners()) {
      const first = await diskStamp(runner, disk);
      fs.readFileSync(disk);
      await execa('qemu-img', ['info', '-U', disk]);
      expect(await diskStamp(runner, disk)).toBe(first);
      await execa('qemu-img', ['snapshot', '-c', `s${Date.now()}`, disk]);
      const afterSnapshot = await diskStamp(runner, disk);
      expect(afterSnapshot).not.toBe(first);
      // Same size, same content: a copy put in its place is still another file.
      fs.copyFileSync(disk, `${disk}.copy`);
      fs.renameSync(`${disk}.copy`, disk);
      expect(await diskStamp(runner, disk)).not.toBe(afterSnapshot);
    }
  });
});

describe('from a review of backup and clone (no VM)', () => {
  const listing = (imageMode: string) =>
    [
      'block 0: -rw------- 0/0             512 2026-12-02 03:00 manifest.json',
      `block 2: ${imageMode} 0/0            1024 2026-12-02 03:00 var.qcow2`,
      'block 5: -rw------- 0/0             512 2026-12-02 03:00 SHA256SUMS',
      'block 7: ** Block of NULs **',
      '',
    ].join('\n');
  it('a backup whose image member is not 0600 is refused: root\'s tar would give the restored disk that mode', async () => {
    const { parseLayout } = await import('../src/core/disks/backup-format.ts');
    expect(() => parseLayout('b.ivm-backup', listing('-rw-rw-rw-'), 4608)).toThrow(/var\.qcow2 has mode -rw-rw-rw-, not -rw------- \(0600\)/);
    // The same listing with the mode ivm packs passes that check (whatever else it says of the length).
    let message = '';
    try {
      parseLayout('b.ivm-backup', listing('-rw-------'), 4608);
    } catch (error) {
      message = (error as Error).message;
    }
    expect(message).not.toMatch(/has mode/);
  });
  it('tar runs in the C locale, through sudo too (its listing is parsed); a secret input is never echoed', () => {
    const runner = new Runner(readSettings({ SUDO: 'sudo' }, 1000), { dryRun: false, verbose: false });
    expect(runner.describe({ tool: 'tar', args: ['-t', '-f', 'x'], mutates: false })).toBe('sudo env LC_ALL=C tar -t -f x');
    const described = runner.describe({ tool: 'tee', args: ['--', '/m.json'], input: 'SECRET-HASH\n', secretInput: true, mutates: true });
    expect(described).not.toContain('SECRET-HASH');
    expect(described).toContain('12 bytes, not shown');
    expect(runner.describe({ tool: 'tee', args: ['--', '/m.json'], input: 'plain\n', mutates: true })).toContain('plain');
  });
});

describe('stage folders a killed run left (they hold copies of host private keys)', () => {
  it('are removed by the next run; a live run\'s, another host\'s and any other folder stay', async () => {
    const { makePrivateFolder, removeStaleStages } = await import('../src/core/private-folder.ts');
    const { processStartTime } = await import('../src/core/lock.ts');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-stages-'));
    try {
      // A run that has ended: a real process, waited for.
      const child = execa('sleep', ['0.1']);
      const pid = child.pid!;
      const start = processStartTime(pid)!;
      await child;
      const live = makePrivateFolder(root);
      const tag = path.basename(live.dir).split('.')[2]!.slice(0, 8);
      const dead = path.join(root, `stage-${pid}.${start}.${tag}-aaaaaa`);
      const elsewhere = path.join(root, `stage-${pid}.${start}.00000000-bbbbbb`);
      const other = path.join(root, 'stage-cccccc');
      for (const dir of [dead, elsewhere, other]) fs.mkdirSync(dir, { mode: 0o700 });
      fs.writeFileSync(path.join(dead, 'ssh_host_ed25519_key'), 'secret\n', { mode: 0o600 });
      expect(removeStaleStages(root)).toEqual([dead]);
      expect(fs.readdirSync(root).sort()).toEqual([path.basename(live.dir), path.basename(elsewhere), path.basename(other)].sort());
      // Making a new one sweeps as well; the live run's own stays until it removes it.
      fs.mkdirSync(dead, { mode: 0o700 });
      const next = makePrivateFolder(root);
      expect(fs.existsSync(dead)).toBe(false);
      expect(fs.existsSync(live.dir)).toBe(true);
      expect((fs.statSync(next.dir).mode & 0o777).toString(8)).toBe('700');
      live.remove();
      next.remove();
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

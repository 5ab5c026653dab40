// ivm backup create | list | restore, end to end with real qemu-img, tar, guestfish and libvirt on
// the stand-in base. The stand-in guest counts its boots on /var (/standin-boot-count): a restored
// /var boots with the count continuing from the backed-up one, and a sentinel file written with
// guestfish comes back byte for byte, onto the same machine and onto a fresh IVM_VM_DIR where the VM
// never existed. A byte flipped anywhere in a backup is refused before anything changes; another
// machine's backup is refused without --as and becomes a new machine with --as; a restore killed
// before each of its changes leaves the old /var or the new one, never neither.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, virsh, waitForState } from './support/libvirt.ts';
import { makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { parseStandinLog, sha256File } from './support/standin.ts';
import { readVarFile, waitUntilUnused, writeVarFile } from './support/var-disk.ts';
import { domainUuid } from '../src/core/identity/identity.ts';
import packageJson from '../package.json' with { type: 'json' };

const NAME = 'e2e-bak';
const OTHER = 'e2e-bak-b';
const AS = 'e2e-bak-as';
const SENTINEL = '/home/user/data';

const sha = (data: Buffer | undefined) => (data ? crypto.createHash('sha256').update(data).digest('hex') : 'missing');
const guestfishLaunches = (stderr: string) => stderr.split('\n').filter((l) => /^\+ (\S+ )*guestfish .*\(session\)$/.test(l)).length;

describe('ivm backup create, list, restore (real tools)', () => {
  let project: TestProject;
  let dir: string;
  let varDisk: string;
  let backupDir: string;
  /** The backup made of NAME, and the boot count on its /var. */
  let backupFile = '';
  let backedUpBoots = 0;
  const sentinel = crypto.randomBytes(8192);

  const serialLog = (vmDir = project.vmDir) => parseStandinLog(fs.readFileSync(path.join(vmDir, `${NAME}-serial.log`), 'utf8'));
  const bootAndRead = async (env: Record<string, string> = {}, vmDir = project.vmDir) => {
    fs.rmSync(path.join(vmDir, `${NAME}-serial.log`), { force: true });
    const started = await project.ivm(['start', NAME], env);
    expect(started.exitCode, started.stderr).toBe(0);
    await waitForState(NAME, 'shut off', 240_000);
    return serialLog(vmDir);
  };
  /** The files of a folder, for "nothing changed". */
  const listing = (folder: string) => (fs.existsSync(folder) ? fs.readdirSync(folder).sort() : []);
  /** The image inside a backup, unpacked (as any tar would) into a scratch folder. */
  const unpack = async (file: string) => {
    const out = fs.mkdtempSync(path.join(project.root, 'unpacked-'));
    await execa('tar', ['-x', '-f', file, '-C', out]);
    return out;
  };
  const keptNames = () => listing(project.vmDir).filter((f) => f.startsWith(`${NAME}-var.qcow2.before-restore-`)).map((f) => path.join(project.vmDir, f));

  beforeAll(async () => {
    await ensureNetwork('default');
    for (const name of [NAME, OTHER, AS]) await cleanupDomain(name);
    project = await makeTestProject('ivm-bak-');
    await project.useStandinBase('a');
    dir = project.addMachine(NAME, testMeta(), {
      tcp_ports: '8080\n',
      admin_authorized_keys: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBak bak@host\n',
    });
    const created = await project.ivm(['create', NAME]);
    expect(created.exitCode, created.stderr).toBe(0);
    varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
    backupDir = path.join(project.vmDir, 'backups', NAME);
    await writeVarFile(varDisk, SENTINEL, sentinel);
  });

  afterAll(async () => {
    for (const name of [NAME, OTHER, AS]) await cleanupDomain(name);
    if (project) for (const folder of ['immutable', 'immutable-parent']) await execa('chattr', ['-i', path.join(project.root, folder)], { reject: false });
    await project?.remove();
  });

  it('refuses a running VM (exit 3, hint --stop) and a saved one; --stop shuts it down, backs it up and starts it again', async () => {
    expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
    const running = await project.ivm(['backup', 'create', NAME]);
    expect(running.exitCode).toBe(3);
    expect(running.stderr).toMatch(/e2e-bak is running: backup reads its \/var disk only while it is shut off.*nothing was changed\nhint: .*add --stop/);
    await virsh(['managedsave', NAME]);
    try {
      const saved = await project.ivm(['backup', 'create', NAME]);
      expect(saved.exitCode).toBe(3);
      expect(saved.stderr).toContain('has a saved memory image (virsh managedsave)');
    } finally {
      await virsh(['managedsave-remove', NAME]);
    }
    expect(listing(backupDir)).toEqual([]);
    expect((await project.ivm(['start', NAME])).exitCode).toBe(0);
    // The stand-in ignores the power button and powers itself off after its report: --stop waits for that.
    const made = await project.ivm(['backup', 'create', NAME, '--stop', '--timeout', '240']);
    expect(made.exitCode, made.stderr).toBe(0);
    expect(made.stdout).toContain(`started ${NAME} again`);
    backupFile = /^backup of e2e-bak: (\S+) \(/m.exec(made.stdout)?.[1] ?? '';
    expect(path.dirname(backupFile)).toBe(backupDir);
    // A restore while the VM runs (again: its boot takes longer than this) is refused too.
    const busy = await project.ivm(['backup', 'restore', NAME, backupFile]);
    expect(busy.exitCode, busy.stderr).toBe(3);
    expect(busy.stderr).toMatch(/e2e-bak is running: a restore replaces its \/var disk.*\nhint: stop it first: ivm stop e2e-bak/);
    await waitForState(NAME, 'shut off', 240_000);
    const unpacked = await unpack(backupFile);
    backedUpBoots = Number((await readVarFile(path.join(unpacked, 'var.qcow2'), '/standin-boot-count'))?.toString().trim());
    expect(backedUpBoots).toBeGreaterThanOrEqual(1);
    expect(sha(await readVarFile(path.join(unpacked, 'var.qcow2'), SENTINEL))).toBe(sha(sentinel));
    // The VM was started again after the backup: its own /var counts one boot more.
    expect(Number((await readVarFile(varDisk, '/standin-boot-count'))?.toString().trim())).toBe(backedUpBoots + 1);
  });

  it('is one 0600 file: a tar of manifest.json, the compressed disk (zstd) and SHA256SUMS, nothing left beside it; list checks it', async () => {
    expect(path.basename(backupFile)).toMatch(/^e2e-bak-\d{8}T\d{6}Z\.ivm-backup$/);
    expect(fs.statSync(backupFile).mode & 0o777).toBe(0o600);
    expect(listing(backupDir)).toEqual([path.basename(backupFile)]);
    const { stdout: members } = await execa('tar', ['-t', '-f', backupFile]);
    expect(members.split('\n')).toEqual(['manifest.json', 'var.qcow2', 'SHA256SUMS']);
    const unpacked = await unpack(backupFile);
    expect((await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: unpacked })).stdout).toBe('manifest.json: OK\nvar.qcow2: OK');
    const manifest = JSON.parse(fs.readFileSync(path.join(unpacked, 'manifest.json'), 'utf8'));
    const boot = path.join(project.vmDir, `${NAME}-boot.qcow2`);
    expect(manifest).toMatchObject({
      format: 'ivm-backup',
      formatVersion: 1,
      machine: NAME,
      machineId: fs.readFileSync(path.join(dir, 'machine-id'), 'utf8').trim(),
      base: JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', boot])).stdout)['backing-filename'],
      varVirtualSize: 128 * 1024 * 1024,
      image: { file: 'var.qcow2', sha256: await sha256File(path.join(unpacked, 'var.qcow2')), compression: 'zstd' },
      ivmVersion: packageJson.version,
    });
    expect(Date.now() - Date.parse(manifest.createdAt)).toBeLessThan(3_600_000);
    expect(manifest.files.map((f: { name: string }) => f.name).sort()).toEqual(['admin_authorized_keys', 'default.nix', 'meta.nix', 'tcp_ports']);
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', path.join(unpacked, 'var.qcow2')])).stdout);
    expect(info['format-specific'].data['compression-type']).toBe('zstd');
    const list = await project.ivm(['backup', 'list', NAME, '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([
      expect.objectContaining({ file: backupFile, ok: true, machine: NAME, machineId: manifest.machineId, base: manifest.base, createdAt: manifest.createdAt, bytes: fs.statSync(backupFile).size }),
    ]);
    const text = await project.ivm(['backup', 'list', NAME]);
    expect(text.stdout).toMatch(new RegExp(`^${path.basename(backupFile).replace(/\./g, '\\.')} +${manifest.createdAt.replace(/\./g, '\\.')} +\\d+ +\\S+ +ok$`, 'm'));
    const none = await project.ivm(['backup', 'list', OTHER]);
    expect(none.stdout).toContain(`no backups of ${OTHER} in ${path.join(project.vmDir, 'backups', OTHER)}`);
    // Through HOST_CMD ivm reads no file itself (as with a root-only backup under SUDO): dd reads each
    // member's byte range on the host and ivm hashes what it prints. The same verdict, nothing unpacked.
    const hostSide = await project.ivm(['--verbose', 'backup', 'list', NAME, '--json'], { HOST_CMD: 'env' });
    expect(hostSide.exitCode, hostSide.stderr).toBe(0);
    expect(JSON.parse(hostSide.stdout)).toEqual(JSON.parse(list.stdout));
    expect(hostSide.stderr).toMatch(/^\+ env dd if=\S+\.ivm-backup bs=4M iflag=skip_bytes,count_bytes,fullblock skip=\d+ count=\d+ status=none$/m);
    expect(hostSide.stderr).not.toMatch(/tar -x|sha256sum/);
    expect(listing(backupDir)).toEqual([path.basename(backupFile)]);
  });

  it('a backup name already taken this second (a backup just made) is never replaced: the new one takes the next second', async () => {
    const to = path.join(project.root, 'twice');
    fs.mkdirSync(to);
    // At the start of a second, the name of that second is taken; ivm reaches its name check well
    // within it (it starts in a few tenths of a second).
    while (Date.now() % 1000 > 50) await new Promise((resolve) => setTimeout(resolve, 5));
    const taken = `${NAME}-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')}.ivm-backup`;
    fs.writeFileSync(path.join(to, taken), 'an earlier backup\n', { mode: 0o600 });
    const made = await project.ivm(['backup', 'create', NAME, '--to', to]);
    expect(made.exitCode, made.stderr).toBe(0);
    const names = listing(to);
    expect(names).toHaveLength(2);
    expect(fs.readFileSync(path.join(to, taken), 'utf8')).toBe('an earlier backup\n');
    const fresh = names.find((n) => n !== taken)!;
    expect(fresh > taken).toBe(true);
    const list = await project.ivm(['backup', 'list', NAME, '--in', to, '--json']);
    expect((JSON.parse(list.stdout) as { file: string; ok: boolean }[]).map((b) => [path.basename(b.file), b.ok])).toEqual([[taken, false], [fresh, true]]);
    fs.rmSync(to, { recursive: true, force: true });
  });

  it('a backup folder that is not writable, a file or a link in its place, or inside IVM_BASE_DIR: a clear error, nothing left', async () => {
    const before = listing(project.root);
    const immutable = path.join(project.root, 'immutable');
    fs.mkdirSync(immutable);
    const parent = path.join(project.root, 'immutable-parent');
    fs.mkdirSync(parent);
    await execa('chattr', ['+i', immutable, parent]);
    for (const [to, what] of [
      [immutable, /cannot write into .*immutable: it is not writable/],
      [path.join(parent, 'new', 'deeper'), /cannot write into .*immutable-parent \(to make .*immutable-parent\/new\/deeper\): it is not writable/],
    ] as const) {
      const r = await project.ivm(['backup', 'create', NAME, '--to', to]);
      expect(r.exitCode, r.stderr).toBe(4);
      expect(r.stderr).toMatch(what);
    }
    expect(listing(immutable)).toEqual([]);
    expect(listing(parent)).toEqual([]);
    await execa('chattr', ['-i', immutable, parent]);
    const file = path.join(project.root, 'a-file');
    fs.writeFileSync(file, 'x');
    const link = path.join(project.root, 'a-link');
    fs.symlinkSync(immutable, link);
    for (const [to, what] of [
      [file, 'is a file, not a regular folder'],
      [link, 'is a symbolic link, not a regular folder'],
      [path.join(project.baseDir, 'backups'), 'is inside IVM_BASE_DIR'],
    ] as const) {
      const r = await project.ivm(['backup', 'create', NAME, '--to', to]);
      expect(r.exitCode, `${to}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(what);
    }
    expect(listing(immutable)).toEqual([]);
    expect(fs.existsSync(path.join(project.baseDir, 'backups'))).toBe(false);
    // --dry-run prints the plan and writes nothing.
    const dry = await project.ivm(['--dry-run', 'backup', 'create', NAME, '--to', path.join(project.root, 'dry')]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    // Straight into the backup file, where the image member's data begins (a window of the file).
    expect(dry.stdout).toMatch(/qemu-img convert -q -n -c --target-is-zero -f qcow2 \S+e2e-bak-var\.qcow2 --target-image-opts '?driver=qcow2,file\.driver=raw,file\.offset=\d+,file\.file\.driver=file,file\.file\.filename=\S+\/backup\.tar'?$/m);
    expect(dry.stdout).toMatch(/^ln -T \S+\/\.e2e-bak-\d{8}T\d{6}Z\.ivm-backup\.partial\/backup\.tar \S+\/dry\/e2e-bak-\d{8}T\d{6}Z\.ivm-backup$/m);
    expect(fs.existsSync(path.join(project.root, 'dry'))).toBe(false);
    fs.rmSync(file);
    fs.rmSync(link);
    fs.rmdirSync(immutable);
    fs.rmdirSync(parent);
    expect(listing(project.root)).toEqual(before);
  });

  it('refuses a corrupted backup before anything changes: a byte flipped anywhere, a cut or a longer file (exit 2)', async () => {
    const bytes = fs.readFileSync(backupFile);
    const state = async () => ({ disk: await sha256File(varDisk), files: listing(project.vmDir), domain: await domainState(NAME) });
    const before = await state();
    const corrupt = path.join(project.root, 'corrupt');
    fs.mkdirSync(corrupt);
    // The middle of the file (the image's data), every header and member, the end-of-archive blocks.
    const places = [Math.floor(bytes.length / 2), 0, 100, 511, 512, 700, 1023, 1024, 1536, 2047, 2048, 4000, bytes.length - 3000, bytes.length - 1600, bytes.length - 1536, bytes.length - 1100, bytes.length - 1024, bytes.length - 600, bytes.length - 1];
    for (const [i, at] of places.entries()) {
      const copy = Buffer.from(bytes);
      copy[at] = copy[at]! ^ 0x01;
      fs.writeFileSync(path.join(corrupt, `${NAME}-2020010${i % 10}T0000${String(i).padStart(2, '0')}Z.ivm-backup`), copy);
    }
    fs.writeFileSync(path.join(corrupt, `${NAME}-20210101T000000Z.ivm-backup`), bytes.subarray(0, bytes.length - 1));
    fs.writeFileSync(path.join(corrupt, `${NAME}-20210101T000001Z.ivm-backup`), Buffer.concat([bytes, Buffer.from([0])]));
    const files = listing(corrupt);
    expect(files.length).toBe(places.length + 2);
    for (const file of files) {
      const r = await project.ivm(['--verbose', 'backup', 'restore', NAME, path.join(corrupt, file)]);
      expect(r.exitCode, `${file}: ${r.stderr}`).toBe(2);
      expect(r.stderr).toMatch(/is not an intact ivm backup: .*; nothing was changed/);
      expect(guestfishLaunches(r.stderr)).toBe(0);
    }
    expect(await state()).toEqual(before);
    const list = await project.ivm(['backup', 'list', NAME, '--in', corrupt, '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    const entries = JSON.parse(list.stdout) as { ok: boolean; problem: string }[];
    expect(entries.length).toBe(files.length);
    for (const entry of entries) expect(entry.ok, entry.problem).toBe(false);
    // Where ivm cannot read a backup itself (HOST_CMD: the host's tools), it still checks every byte.
    const viaHost = await project.ivm(['backup', 'list', NAME, '--in', corrupt, '--json'], { HOST_CMD: 'env' });
    expect((JSON.parse(viaHost.stdout) as { ok: boolean }[]).map((e) => e.ok)).toEqual(files.map(() => false));
    fs.copyFileSync(backupFile, path.join(corrupt, path.basename(backupFile)));
    const good = await project.ivm(['backup', 'list', NAME, '--in', corrupt, '--json'], { HOST_CMD: 'env' });
    expect((JSON.parse(good.stdout) as { file: string; ok: boolean }[]).filter((e) => e.ok).map((e) => path.basename(e.file))).toEqual([path.basename(backupFile)]);
    const missing = await project.ivm(['backup', 'restore', NAME, path.join(corrupt, 'nope.ivm-backup')]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain('no such backup file');
    expect(await state()).toEqual(before);
  });

  it("refuses another machine's backup without --as (exit 3, hint --as); with --as it becomes a new machine with its own identity", async () => {
    project.addMachine(OTHER, testMeta(), { user_authorized_keys: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther other@host\n' });
    expect((await project.ivm(['create', OTHER])).exitCode).toBe(0);
    const made = await project.ivm(['backup', 'create', OTHER]);
    expect(made.exitCode, made.stderr).toBe(0);
    const otherFile = /^backup of e2e-bak-b: (\S+) \(/m.exec(made.stdout)![1]!;
    const diskBefore = await sha256File(varDisk);
    const refused = await project.ivm(['backup', 'restore', NAME, otherFile]);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/is a backup of e2e-bak-b \(machine-id [0-9a-f]{32}\), not of e2e-bak \(machine-id [0-9a-f]{32}\): nothing was changed\nhint: .*--as NEW/);
    for (const [args, code, what] of [
      [['backup', 'restore', NAME, otherFile, '--as', AS], 2, 'is a backup of e2e-bak-b, not of e2e-bak'],
      [['backup', 'restore', OTHER, otherFile, '--as', NAME], 3, 'machines/e2e-bak already exists'],
      [['backup', 'restore', OTHER, otherFile, '--as', 'Bad_Name'], 2, 'invalid machine name "Bad_Name"'],
    ] as const) {
      const r = await project.ivm([...args]);
      expect(r.exitCode, r.stderr).toBe(code);
      expect(r.stderr).toContain(what);
    }
    expect(await sha256File(varDisk)).toBe(diskBefore);
    expect(fs.existsSync(path.join(project.root, 'machines', AS))).toBe(false);
    const as = await project.ivm(['--verbose', 'backup', 'restore', OTHER, path.basename(otherFile), '--as', AS]);
    expect(as.exitCode, as.stderr).toBe(0);
    expect(guestfishLaunches(as.stderr)).toBe(1);
    const asDir = path.join(project.root, 'machines', AS);
    const asId = fs.readFileSync(path.join(asDir, 'machine-id'), 'utf8');
    expect(asId).not.toBe(fs.readFileSync(path.join(project.root, 'machines', OTHER, 'machine-id'), 'utf8'));
    expect(fs.readFileSync(path.join(asDir, 'user_authorized_keys'), 'utf8')).toContain('other@host');
    const asVar = path.join(project.vmDir, `${AS}-var.qcow2`);
    expect(fs.statSync(asVar).mode & 0o777).toBe(0o600);
    expect((await readVarFile(asVar, '/identity/machine-id'))?.toString()).toBe(asId);
    expect((await readVarFile(asVar, '/identity/hostname'))?.toString()).toBe(`${AS}\n`);
    expect((await readVarFile(asVar, '/identity/ssh_host_ed25519_key.pub'))?.toString()).toBe(fs.readFileSync(path.join(asDir, 'ssh_host_ed25519_key.pub'), 'utf8'));
    expect((await virsh(['domuuid', AS])).trim()).toBe(domainUuid(asId.trim()));
    const { stdout: tracked } = await execa('git', ['-C', project.root, 'ls-files', '--', `machines/${AS}`]);
    expect(tracked.split('\n').map((f) => path.basename(f)).sort()).toEqual(['default.nix', 'hostname', 'known_hosts', 'machine-id', 'meta.nix', 'ssh_host_ed25519_key.pub']);
    expect(fs.existsSync(path.join(project.root, '.ivm', 'unfinished', `${AS}.json`))).toBe(false);
    expect(listing(project.vmDir).filter((f) => f.startsWith('.'))).toEqual([]);
    const again = await project.ivm(['backup', 'restore', OTHER, otherFile, '--as', AS]);
    expect(again.exitCode).toBe(3);
    expect(again.stderr).toContain(`machines/${AS} already exists`);
  });

  it('refuses a disk too small for the backup (varSize below its size): nothing changed', async () => {
    const meta = path.join(dir, 'meta.nix');
    const text = fs.readFileSync(meta, 'utf8');
    fs.writeFileSync(meta, text.replace('varSize = "128M"', 'varSize = "64M"'));
    try {
      const before = await sha256File(varDisk);
      const r = await project.ivm(['backup', 'restore', NAME, backupFile]);
      expect(r.exitCode).toBe(3);
      expect(r.stderr).toMatch(/disk too small: the backed-up \/var disk is 134217728 bytes, more than e2e-bak's varSize \(64M\).*\nhint: raise varSize in \S+meta\.nix to at least 128M/);
      expect(await sha256File(varDisk)).toBe(before);
    } finally {
      fs.writeFileSync(meta, text);
    }
  });

  it('a restore killed before each of its changes leaves the old /var or the restored one, never neither; the finished one boots the backup', async () => {
    // An identity change since the backup: the restore then also writes /identity (one of the steps killed).
    fs.writeFileSync(path.join(dir, 'tcp_ports'), '9090\n');
    const oldSha = await sha256File(varDisk);
    let completed = false;
    let killed = 0;
    for (let step = 1; step <= 20 && !completed; step++) {
      const run = await project.ivm(['backup', 'restore', NAME, backupFile], { IVM_TEST_FAULT_KILL_AT: String(step) });
      if (run.signal === 'SIGKILL') killed += 1;
      completed = run.exitCode === 0;
      if (!completed) expect(run.signal, `step ${step}: ${run.stderr}`).toBe('SIGKILL');
      await waitUntilUnused(varDisk);
      expect(fs.existsSync(varDisk), `step ${step}`).toBe(true);
      await execa('qemu-img', ['check', '-q', '-U', varDisk]);
      // The /var it had is never lost: at its name, or kept beside it.
      const shas = await Promise.all([varDisk, ...keptNames()].map((f) => sha256File(f)));
      expect(shas, `step ${step}`).toContain(oldSha);
      expect(await domainState(NAME), `step ${step}`).toBe('shut off');
    }
    expect(completed).toBe(true);
    // Unpack, keep, switch, clean up, write /identity, define: each was a place it was cut short.
    expect(killed).toBeGreaterThanOrEqual(8);
    const kept = keptNames();
    expect(kept.length).toBeGreaterThanOrEqual(1);
    expect(await Promise.all(kept.map((f) => sha256File(f)))).toContain(oldSha);
    for (const f of kept) expect(fs.statSync(f).mode & 0o777).toBe(0o600);
    expect(listing(project.vmDir).filter((f) => f.startsWith('.'))).toEqual([]);
    expect(sha(await readVarFile(varDisk, SENTINEL))).toBe(sha(sentinel));
    const log = await bootAndRead();
    expect(log.complete).toBe(true);
    expect(log.bootCount).toBe(backedUpBoots + 1);
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    expect(log.files.tcp_ports?.content).toBe('9090\n');
    expect(sha(await readVarFile(varDisk, SENTINEL))).toBe(sha(sentinel));
  });

  it('restores onto a fresh host folder (another IVM_VM_DIR, where the VM never existed): defined there, it boots the backup', async () => {
    const destroyed = await project.ivm(['destroy', NAME]);
    expect(destroyed.exitCode, destroyed.stderr).toBe(0);
    expect(await domainState(NAME)).toBeNull();
    const fresh = path.join(project.root, 'fresh-images');
    const env = { IVM_VM_DIR: fresh };
    const restored = await project.ivm(['--verbose', 'backup', 'restore', NAME, backupFile, '--no-build'], env);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(guestfishLaunches(restored.stderr)).toBe(1);
    const freshVar = path.join(fresh, `${NAME}-var.qcow2`);
    expect(fs.statSync(freshVar).mode & 0o777).toBe(0o600);
    expect(listing(fresh).filter((f) => f.includes('before-restore'))).toEqual([]);
    expect(await virsh(['dumpxml', NAME])).toContain(`<source file='${freshVar}'/>`);
    expect(sha(await readVarFile(freshVar, SENTINEL))).toBe(sha(sentinel));
    const log = await bootAndRead(env, fresh);
    expect(log.complete).toBe(true);
    expect(log.bootCount).toBe(backedUpBoots + 1);
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    expect(log.files.hostname?.content).toBe(`${NAME}\n`);
    expect(sha(await readVarFile(freshVar, SENTINEL))).toBe(sha(sentinel));
  });
});

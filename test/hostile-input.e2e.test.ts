// Hostile input, concurrent runs and half-done syncs, through the real CLI with the real tools:
// links and odd files everywhere ivm reads or writes, image folders that overlap or are system
// folders, domains ivm did not make, a lock held by another process (alive or dead), two runs at
// once, a guest-controlled file name that tries to end a guestfish batch early, and an identity
// sync cut off by a full /var filesystem.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, virsh, waitForState } from './support/libvirt.ts';
import { makeTestProject, testMeta, type IvmResult, type TestProject } from './support/ivm.ts';
import { readVarFile, waitUntilUnused, writeVarFile } from './support/var-disk.ts';
import { processStartTime } from '../src/core/lock.ts';

const VM = 'hostile-vm';
const FOREIGN = 'hostile-foreign';
const SENTINEL = '/home/user/data';

const expectClean = (r: IvmResult, code: number, text: RegExp) => {
  expect(r.stderr).not.toMatch(/internal error|at .*\.ts:\d+/);
  expect(r.stderr).toMatch(text);
  expect(r.exitCode, r.stderr).toBe(code);
};

const guestfish = (script: string[]) =>
  execa('guestfish', ['--no-progress-bars'], { input: `${script.join('\n')}\n`, env: { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' } });

/** The names in /identity on a /var disk, read with debugfs on a raw copy (no appliance, exact bytes). */
async function identityNames(varDisk: string): Promise<string[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-names-'));
  try {
    const raw = path.join(dir, 'var.raw');
    await execa('qemu-img', ['convert', '-U', '-O', 'raw', varDisk, raw]);
    await execa('debugfs', ['-R', `rdump /identity ${dir}`, raw]);
    return fs.readdirSync(path.join(dir, 'identity')).sort();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('hostile input: links, odd files and folders (nothing followed, nothing touched)', () => {
  let project: TestProject;
  let secret: string;

  beforeAll(async () => {
    // Left over by an interrupted run (or by a run of an ivm that followed these links).
    for (const name of ['linkhosts', 'linkkey', 'donor', 'fifo', 'realone', 'linkdir', 'linkmeta', 'linkxml', 'linkrec', 'linkvar']) await cleanupDomain(name);
    project = await makeTestProject('ivm-hostile-');
    await project.useStandinBase('a');
    secret = path.join(project.root, 'root-only-secret');
    fs.writeFileSync(secret, 'SECRET LINE\n', { mode: 0o600 });
  });

  afterAll(async () => {
    await project?.remove();
  });

  it('an identity file that is a link (hosts -> a root-only file) is refused before anything is made', async () => {
    const dir = project.addMachine('linkhosts', testMeta());
    fs.symlinkSync(secret, path.join(dir, 'hosts'));
    const r = await project.ivm(['create', 'linkhosts']);
    expectClean(r, 2, new RegExp(`${path.join(dir, 'hosts')} is a symbolic link, not a regular file: ivm never follows links`));
    expect(fs.existsSync(project.vmDir)).toBe(false);
  });

  it('a host key that is a link to another key is refused (identity and create)', async () => {
    const dir = project.addMachine('linkkey', testMeta());
    const other = path.join(project.root, 'users-own-key');
    // A real key of the right format, made by ivm for another machine.
    const donor = project.addMachine('donor', testMeta());
    expect((await project.ivm(['identity', 'donor'])).exitCode).toBe(0);
    fs.copyFileSync(path.join(donor, 'ssh_host_ed25519_key'), other);
    fs.symlinkSync(other, path.join(dir, 'ssh_host_ed25519_key'));
    for (const verb of ['identity', 'create']) {
      const r = await project.ivm([verb, 'linkkey']);
      expectClean(r, 2, /ssh_host_ed25519_key is a symbolic link/);
    }
    expect(fs.readdirSync(dir).sort()).toEqual(['default.nix', 'meta.nix', 'ssh_host_ed25519_key']);
  });

  it('a fifo where an identity file belongs is refused at once, never read (no hang)', async () => {
    const dir = project.addMachine('fifo', testMeta());
    expect((await project.ivm(['identity', 'fifo'])).exitCode).toBe(0);
    await execa('mkfifo', [path.join(dir, 'resolv.conf')]);
    const r = await project.ivm(['--dry-run', 'create', 'fifo']);
    expectClean(r, 2, /resolv\.conf is a special file/);
  });

  it('meta.nix, the machine folder and machines/ itself as links are refused', async () => {
    const real = project.addMachine('realone', testMeta());
    fs.symlinkSync(real, path.join(project.root, 'machines', 'linkdir'));
    expectClean(await project.ivm(['create', 'linkdir']), 2, /machines\/linkdir is a symbolic link, not a regular folder/);
    const dir = path.join(project.root, 'machines', 'linkmeta');
    fs.mkdirSync(dir);
    fs.symlinkSync(path.join(real, 'meta.nix'), path.join(dir, 'meta.nix'));
    expectClean(await project.ivm(['create', 'linkmeta']), 2, /linkmeta\/meta\.nix is a symbolic link/);
    // list shows neither as a machine.
    const list = await project.ivm(['list']);
    expect(list.stdout).not.toMatch(/linkdir|linkmeta/);
  });

  it('libvirt/NAME.xml as a link: define and xml --write refuse, and the file it points at is unchanged', async () => {
    project.addMachine('linkxml', testMeta());
    expect((await project.ivm(['identity', 'linkxml'])).exitCode).toBe(0);
    fs.mkdirSync(path.join(project.root, 'libvirt'), { recursive: true });
    const victim = path.join(project.root, 'victim.txt');
    fs.writeFileSync(victim, 'keep me\n');
    fs.symlinkSync(victim, path.join(project.root, 'libvirt', 'linkxml.xml'));
    expectClean(await project.ivm(['define', 'linkxml']), 2, /libvirt\/linkxml\.xml is a symbolic link/);
    expectClean(await project.ivm(['xml', '--write', 'linkxml']), 2, /libvirt\/linkxml\.xml is a symbolic link/);
    expect(fs.readFileSync(victim, 'utf8')).toBe('keep me\n');
    expect(fs.lstatSync(path.join(project.root, 'libvirt', 'linkxml.xml')).isSymbolicLink()).toBe(true);
    expect(await domainState('linkxml')).toBeNull();
  });

  it('a build record (.ivm/NAME.json) that is a link is refused', async () => {
    project.addMachine('linkrec', testMeta());
    fs.mkdirSync(path.join(project.root, '.ivm'), { recursive: true });
    const fake = path.join(project.root, 'fake-record.json');
    fs.writeFileSync(fake, JSON.stringify({ storePath: '/nix/store/x', base: '/etc/passwd' }));
    fs.symlinkSync(fake, path.join(project.root, '.ivm', 'linkrec.json'));
    expectClean(await project.ivm(['create', 'linkrec', '--no-build']), 2, /\.ivm\/linkrec\.json is a symbolic link/);
    // gc reads every machine's record: it refuses too, rather than guess what the link meant.
    expectClean(await project.ivm(['gc']), 2, /\.ivm\/linkrec\.json is a symbolic link/);
    expect(fs.existsSync(project.vmDir)).toBe(false);
    fs.rmSync(path.join(project.root, '.ivm', 'linkrec.json'));
  });

  it('links in IVM_VM_DIR: a /var disk that is a link is not upgraded, a link planted at a temporary name stops create', async () => {
    project.addMachine('linkvar', testMeta());
    expect((await project.ivm(['identity', 'linkvar'])).exitCode).toBe(0);
    fs.mkdirSync(project.vmDir, { recursive: true });
    const victim = path.join(project.root, 'victim.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', victim, '64M']);
    const before = fs.readFileSync(victim);
    const varLink = path.join(project.vmDir, 'linkvar-var.qcow2');
    fs.symlinkSync(victim, varLink);
    expectClean(await project.ivm(['upgrade', 'linkvar']), 2, /linkvar-var\.qcow2 is a symbolic link/);
    expectClean(await project.ivm(['create', 'linkvar']), 2, /linkvar-var\.qcow2 is a symbolic link/);
    fs.rmSync(varLink);
    // qemu-img create would write through a link at the temporary name: refused before it runs.
    fs.symlinkSync(victim, path.join(project.vmDir, 'linkvar-var.qcow2.new'));
    expectClean(await project.ivm(['create', 'linkvar']), 2, /linkvar-var\.qcow2\.new is a symbolic link/);
    expect(fs.readFileSync(victim).equals(before)).toBe(true);
    expect(fs.existsSync(path.join(project.vmDir, 'linkvar-boot.qcow2'))).toBe(false);
    expect(await domainState('linkvar')).toBeNull();
  });

  it('refuses image folders that overlap or are system or home folders (exit 2), before any chmod', async () => {
    fs.mkdirSync(project.vmDir, { recursive: true });
    const disk = path.join(project.vmDir, 'someone-var.qcow2');
    fs.writeFileSync(disk, 'a /var disk holding a host key\n', { mode: 0o600 });
    const cases: [Record<string, string>, RegExp][] = [
      [{ IVM_BASE_DIR: project.vmDir }, /IVM_BASE_DIR and IVM_VM_DIR are the same folder/],
      [{ IVM_BASE_DIR: path.join(project.vmDir, 'base') }, /IVM_BASE_DIR \(.*\) is inside IVM_VM_DIR/],
      [{ IVM_VM_DIR: path.join(project.baseDir, 'vms') }, /IVM_VM_DIR \(.*\) is inside IVM_BASE_DIR/],
      [{ IVM_BASE_DIR: path.join(project.root, 'images', '..') , IVM_VM_DIR: path.join(project.root, 'images') }, /IVM_VM_DIR \(.*\) is inside IVM_BASE_DIR/],
      [{ IVM_BASE_DIR: '/' }, /IVM_BASE_DIR=\/ is a system folder/],
      [{ IVM_BASE_DIR: '/etc' }, /IVM_BASE_DIR=\/etc is a system folder/],
      [{ IVM_VM_DIR: '/var' }, /IVM_VM_DIR=\/var is a system folder/],
      [{ IVM_BASE_DIR: '/home' }, /is a system folder/],
      [{ IVM_BASE_DIR: '/home/someone' }, /is a home folder itself/],
      [{ IVM_BASE_DIR: os.homedir() }, /is (a home folder itself|a system folder)/],
    ];
    for (const [env, message] of cases) {
      const r = await project.ivm(['host', 'setup', '--apply'], env);
      expectClean(r, 2, message);
    }
    expect((fs.statSync(disk).mode & 0o7777).toString(8)).toBe('600');
  });

  it('host setup and gc touch only files named as ivm build names a base', async () => {
    fs.mkdirSync(project.baseDir, { recursive: true, mode: 0o755 });
    const notes = path.join(project.baseDir, 'notes.txt');
    const foreign = path.join(project.baseDir, 'handmade.qcow2');
    const ours = path.join(project.baseDir, `${'5'.repeat(32)}-image.qcow2`);
    for (const file of [notes, foreign, ours]) fs.writeFileSync(file, 'x', { mode: 0o644 });
    const r = await project.ivm(['host', 'setup', '--apply'], { IVM_TEST_HARNESS: '1', IVM_TEST_SYSROOT: path.join(project.root, 'no-sysroot') });
    expect(r.stdout).toContain(`${path.basename(ours)}: wants root, 0444`);
    expect(r.stdout).not.toContain('notes.txt');
    expect(r.stdout).not.toContain('handmade.qcow2');
    const mode = (f: string) => (fs.statSync(f).mode & 0o7777).toString(8);
    expect([mode(notes), mode(foreign), mode(ours)]).toEqual(['644', '644', '444']);
    const gc = await project.ivm(['gc']);
    expect(gc.exitCode, gc.stderr).toBe(0);
    expect(fs.existsSync(notes) && fs.existsSync(foreign)).toBe(true);
    expect(fs.existsSync(ours)).toBe(false);
  });
});

describe('domains ivm did not make are never touched', () => {
  let project: TestProject;

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(FOREIGN);
    project = await makeTestProject('ivm-foreign-');
    // A running domain made by other means: no disk, it just sits in the firmware.
    const xml = path.join(project.root, 'foreign.xml');
    fs.writeFileSync(xml, `<domain type='qemu'><name>${FOREIGN}</name><memory unit='MiB'>32</memory><os><type arch='x86_64'>hvm</type></os></domain>`);
    await virsh(['define', xml]);
    await virsh(['start', FOREIGN]);
  });

  afterAll(async () => {
    await cleanupDomain(FOREIGN);
    await project?.remove();
  });

  it('no machine folder names it: every verb refuses, and it keeps running', async () => {
    for (const args of [['stop', '--force', FOREIGN], ['start', FOREIGN], ['console', FOREIGN], ['define', FOREIGN], ['ip', FOREIGN], ['wait', FOREIGN, '--timeout', '1'], ['destroy', '--force', FOREIGN]]) {
      const r = await project.ivm(args);
      expectClean(r, 2, new RegExp(`unknown machine "${FOREIGN}"`));
    }
    expect(await domainState(FOREIGN)).toBe('running');
  });

  it('a machine of that name whose uuid differs (another checkout, another tool): every verb refuses', async () => {
    project.addMachine(FOREIGN, testMeta());
    const without = await project.ivm(['stop', '--force', FOREIGN]);
    expectClean(without, 3, /has no machine-id: no VM was made of it here/);
    expect((await project.ivm(['identity', FOREIGN])).exitCode).toBe(0);
    for (const args of [['stop', '--force', FOREIGN], ['start', FOREIGN], ['console', FOREIGN], ['define', FOREIGN], ['ip', FOREIGN], ['ssh', FOREIGN, '--', 'true'], ['wait', FOREIGN, '--timeout', '1'], ['destroy', '--force', FOREIGN]]) {
      const r = await project.ivm(args);
      expectClean(r, 3, new RegExp(`the libvirt domain ${FOREIGN} \\(uuid [0-9a-f-]+\\) is not this project's machine`));
    }
    expect(await domainState(FOREIGN)).toBe('running');
  });
});

describe('one writer at a time, whole syncs, and names on /var the guest controls', () => {
  let project: TestProject;
  let dir: string;
  let varDisk: string;
  const sentinel = crypto.randomBytes(4096);
  const oldHosts = '192.0.2.10 db\n';

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(VM);
    project = await makeTestProject('ivm-locks-');
    await project.useStandinBase('a');
    dir = project.addMachine(VM, testMeta(), { hosts: oldHosts, 'resolv.conf': 'nameserver 192.0.2.1\n' });
    varDisk = path.join(project.vmDir, `${VM}-var.qcow2`);
  });

  afterAll(async () => {
    await cleanupDomain(VM);
    await project?.remove();
  });

  it('create builds /var from a private copy of the identity, never from the project\'s own files', async () => {
    const r = await project.ivm(['--verbose', 'create', VM]);
    expect(r.exitCode, r.stderr).toBe(0);
    const mkfs = r.stderr.split('\n').filter((line) => /^\+ mkfs\.ext4 /.test(line));
    expect(mkfs).toHaveLength(1);
    expect(mkfs[0]).toMatch(new RegExp(`-d ${path.join(project.root, '.ivm', 'stage-').replace(/[.]/g, '\\.')}[\\w.-]+/tree `));
    // No privileged tool (or e2fsprogs) is given a path of the project's machines/ (nix eval, run as
    // the user, reads meta.nix there: that is its job).
    const tools = r.stderr.split('\n').filter((line) => /^\+ (\S+ )*(mkfs\.ext4|debugfs|qemu-img|guestfish|cp|chmod|ln|mv) /.test(line));
    expect(tools.length).toBeGreaterThanOrEqual(6);
    for (const line of tools) expect(line).not.toContain(`${path.join(project.root, 'machines')}/`);
    // The private folder is gone afterwards.
    expect(fs.readdirSync(path.join(project.root, '.ivm')).filter((f) => f.startsWith('stage-'))).toEqual([]);
    await writeVarFile(varDisk, SENTINEL, sentinel);
  });

  it('two upgrades started together: one runs, the other refuses naming the holder (exit 3); nothing is lost', async () => {
    fs.writeFileSync(path.join(dir, 'udp_ports'), '5353\n');
    const env = { IVM_LOCK_WAIT: '1' };
    const [a, b] = await Promise.all([project.ivm(['--verbose', 'upgrade', VM, '--no-build'], env), project.ivm(['--verbose', 'upgrade', VM, '--no-build'], env)]);
    const results = [a, b].sort((x, y) => x.exitCode - y.exitCode);
    expect(results[0]!.exitCode, results[0]!.stderr).toBe(0);
    expectClean(results[1]!, 3, new RegExp(`${VM} is locked by ivm upgrade \\(pid \\d+, since [^)]+\\); waited 1 s, nothing was changed`));
    expect(results[0]!.stdout).toContain('identity: added udp_ports');
    // guestfish (root, through SUDO) uploads a private copy, never the project's file.
    const uploads = results[0]!.stderr.split('\n').filter((line) => /^\+ guestfish> upload /.test(line));
    expect(uploads).toEqual([expect.stringMatching(new RegExp(`^\\+ guestfish> upload ${path.join(project.root, '.ivm', 'stage-').replace(/[.]/g, '\\.')}[\\w.-]+/udp_ports /identity/\\.udp_ports\\.ivm-new$`))]);
    await waitUntilUnused(varDisk);
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
    expect((await readVarFile(varDisk, '/identity/udp_ports'))?.toString()).toBe('5353\n');
    // The winner released its lock.
    expect(fs.existsSync(path.join(project.root, '.ivm', 'locks', `vm-${VM}.lock`))).toBe(false);
  });

  it('a lock held by a live process refuses after the wait; once that process is gone it is taken over', async () => {
    const holder = execa('sleep', ['60']);
    const lock = path.join(project.root, '.ivm', 'locks', `vm-${VM}.lock`);
    const started = processStartTime(holder.pid!);
    fs.writeFileSync(lock, `${JSON.stringify({ pid: holder.pid, startTime: started, verb: 'recreate', host: os.hostname(), since: '2026-12-01T00:00:00Z' })}\n`);
    const refused = await project.ivm(['define', VM], { IVM_LOCK_WAIT: '1' });
    expectClean(refused, 3, new RegExp(`${VM} is locked by ivm recreate \\(pid ${holder.pid}, since 2026-12-01T00:00:00Z\\)`));
    holder.kill('SIGKILL');
    await holder.catch(() => undefined);
    // The same pid number with another start time is another process: the lock is stale too.
    const taken = await project.ivm(['define', VM], { IVM_LOCK_WAIT: '1' });
    expect(taken.exitCode, taken.stderr).toBe(0);
    expect(fs.existsSync(lock)).toBe(false);
    // The base folder's lock: gc refuses while a live process holds it.
    const other = execa('sleep', ['60']);
    const baseLock = path.join(project.root, '.ivm', 'locks', 'base-images.lock');
    fs.writeFileSync(baseLock, `${JSON.stringify({ pid: other.pid, startTime: processStartTime(other.pid!), verb: 'build', host: os.hostname(), since: 'now' })}\n`);
    expectClean(await project.ivm(['gc'], { IVM_LOCK_WAIT: '0' }), 3, /the base-image folder .* is locked by ivm build \(pid \d+/);
    other.kill('SIGKILL');
    await other.catch(() => undefined);
    expect((await project.ivm(['gc'])).exitCode).toBe(0);
  });

  it('a guest-made name in /identity that fakes the end of a batch: status never says "in sync", upgrade removes it', async () => {
    // Sorted after every real name (udp_ports is the last), it closed status's `ls` batch (its
    // 5th) early when the marker was predictable: the names read were exactly the real ones.
    const evil = 'udp_ports\n::ivm-batch-5::';
    await guestfish([`add-drive ${varDisk} format:qcow2`, 'run', 'mount /dev/sda /', 'write "/identity/udp_ports\\x0a::ivm-batch-5::" "x"']);
    expect(await identityNames(varDisk)).toContain(evil);
    const status = await project.ivm(['status', VM, '--json']);
    expect(status.exitCode, status.stderr).toBe(0);
    const identity = JSON.parse(status.stdout).identity;
    expect(identity.sync).toBe('differs');
    expect(identity.detail).toContain(JSON.stringify(evil));
    const up = await project.ivm(['upgrade', VM, '--no-build']);
    expect(up.exitCode, up.stderr).toBe(0);
    await waitUntilUnused(varDisk);
    expect(await identityNames(varDisk)).not.toContain(evil);
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
  });

  it('a sync cut off midway (a full /var) leaves every old file in place, and --restart does not start the VM', async () => {
    // Fill /var to within a few KiB: each size tried in turn, failures ignored (guestfish "-").
    const sizes = Array.from({ length: 16 }, (_, i) => 2 ** (26 - i)); // 64 MiB down to 2 KiB
    await guestfish([`add-drive ${varDisk} format:qcow2`, 'run', 'mount /dev/sda /', ...sizes.map((s, i) => `-fallocate64 /fill-${i} ${s}`)]);
    // A new hosts that cannot fit, and a changed resolv.conf before it in the table.
    fs.writeFileSync(path.join(dir, 'resolv.conf'), 'nameserver 192.0.2.53\n');
    fs.writeFileSync(path.join(dir, 'hosts'), crypto.randomBytes(4 * 1024 * 1024).toString('base64'));
    expect((await project.ivm(['start', VM])).exitCode).toBe(0);
    const up = await project.ivm(['upgrade', VM, '--no-build', '--restart', '--timeout', '120']);
    expect(up.exitCode).not.toBe(0);
    expect(up.stderr).not.toMatch(/internal error/);
    // The first error is the one reported: the upload of a new file under its temporary name.
    expect(up.stderr).toMatch(/upload: write error: \/identity\/\.(resolv\.conf|hosts)\.ivm-new/);
    expect(up.stderr).toMatch(new RegExp(`${VM} was left shut off`));
    expect(await domainState(VM)).toBe('shut off');
    await waitUntilUnused(varDisk);
    // Whole or not at all: the old files, never none.
    expect((await readVarFile(varDisk, '/identity/hosts'))?.toString()).toBe(oldHosts);
    expect((await readVarFile(varDisk, '/identity/resolv.conf'))?.toString()).toBe('nameserver 192.0.2.1\n');
    for (const name of ['machine-id', 'hostname', 'ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub']) {
      expect(await readVarFile(varDisk, `/identity/${name}`), name).toBeDefined();
    }
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
    await waitForState(VM, 'shut off', 1_000);
  });
});

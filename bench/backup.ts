// `node bin/run-ts.js bench/backup.ts` (part of `npm run bench`): backup and restore throughput of a
// /var disk holding 1 GiB of data (random, so it does not compress), each next to the plain copy of
// the same disk in the same run: `ivm backup create` against `qemu-img convert -c` with the same
// compression, the data part of `ivm backup restore` (every byte of the backup checked, then the
// image copied out of it into a new disk, up to the identity resync) and the whole restore (with its
// one guestfish launch) against `cp --sparse=always`, and `ivm backup list` (which checksums every
// byte) against `sha256sum`; the median of BENCH_RUNS rounds (3). BENCH_STEPS=1 prints when each of ivm's steps began. Real qemu-img, tar, guestfish and libvirt; the base comes from
// test/support/standin-nix, the stand-in for `nix build`. BENCH_DATA_MIB changes the amount of data.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { cleanupDomain, ensureNetwork } from '../test/support/libvirt.ts';
import { IVM_BIN, makeTestProject } from '../test/support/ivm.ts';

const NAME = 'bench-bak';
const DATA_MIB = Number(process.env.BENCH_DATA_MIB ?? 1024);
await ensureNetwork('default');
await cleanupDomain(NAME);
const project = await makeTestProject('ivm-bench-bak-');

/** Wall time of a command, in seconds. */
async function timed(file: string, args: string[], options: { env?: Record<string, string>; cwd?: string } = {}): Promise<number> {
  const started = process.hrtime.bigint();
  const result = await execa(file, args, { reject: false, ...options, env: { ...process.env, ...options.env } });
  if (result.exitCode !== 0) throw new Error(`${file} ${args.join(' ')}:\n${result.stderr}`);
  return Number(process.hrtime.bigint() - started) / 1e9;
}

/** Runs ivm and notes when each line of its progress (stderr) came: the time to a given step. */
async function ivmTimed(args: string[], mark: RegExp): Promise<{ total: number; toMark: number | undefined }> {
  const started = process.hrtime.bigint();
  const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
  let toMark: number | undefined;
  const child = execa(process.execPath, [IVM_BIN, ...args], { cwd: project.root, env: project.env, reject: false, stdin: 'ignore' });
  let pending = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split('\n');
    pending = lines.pop() ?? '';
    for (const line of lines) {
      if (toMark === undefined && mark.test(line)) toMark = seconds();
      // BENCH_STEPS=1: when each step of ivm's began.
      if (process.env.BENCH_STEPS) console.log(`  ${seconds().toFixed(2)} s  ${line}`);
    }
  });
  const result = await child;
  if (result.exitCode !== 0) throw new Error(`ivm ${args.join(' ')}:\n${result.stderr}`);
  return { total: seconds(), toMark };
}

try {
  await project.useStandinBase('a');
  const dir = project.addMachine(NAME, `{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "${2 * DATA_MIB}M"; network = "default"; }\n`);
  const created = await project.ivm(['create', NAME]);
  if (created.exitCode !== 0) throw new Error(created.stderr);

  // The /var disk, quickly (no guestfish): the machine's identity and the data in a tree, mkfs.ext4 -d
  // into a raw file, qemu-img convert into the VM's qcow2 (replacing the one create made).
  const scratch = path.join(project.root, 'bench');
  const tree = path.join(scratch, 'tree');
  fs.mkdirSync(path.join(tree, 'identity'), { recursive: true });
  for (const file of ['machine-id', 'hostname', 'ssh_host_ed25519_key', 'ssh_host_ed25519_key.pub']) {
    fs.copyFileSync(path.join(dir, file), path.join(tree, 'identity', file));
    fs.chmodSync(path.join(tree, 'identity', file), file === 'ssh_host_ed25519_key' ? 0o600 : file.endsWith('.pub') ? 0o644 : 0o444);
  }
  fs.mkdirSync(path.join(tree, 'home'), { mode: 0o755 });
  fs.mkdirSync(path.join(tree, 'root'), { mode: 0o700 });
  const data = fs.openSync(path.join(tree, 'home', 'data'), 'w');
  const chunk = Buffer.alloc(1024 * 1024);
  for (let i = 0; i < DATA_MIB; i++) fs.writeSync(data, crypto.randomFillSync(chunk));
  fs.closeSync(data);
  const raw = path.join(scratch, 'var.raw');
  const varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
  await execa('mkfs.ext4', ['-q', '-F', '-t', 'ext4', '-L', 'ivm-var', '-E', 'root_owner=0:0', '-d', tree, raw, `${2 * DATA_MIB}M`]);
  fs.rmSync(varDisk);
  await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, varDisk]);
  fs.chmodSync(varDisk, 0o600);
  fs.rmSync(raw);
  fs.rmSync(tree, { recursive: true });
  await execa('sync');

  // BENCH_RUNS rounds (3), each plain copy next to ivm's, a sync before each: the median of each.
  const runs = Number(process.env.BENCH_RUNS ?? 3);
  const times: Record<'convert' | 'backup' | 'sha' | 'list' | 'cp' | 'restoreData' | 'restore', number[]> = { convert: [], backup: [], sha: [], list: [], cp: [], restoreData: [], restore: [] };
  const backups = path.join(project.vmDir, 'backups', NAME);
  let backupFile = '';
  for (let round = 0; round < runs; round++) {
    const plain = path.join(scratch, 'plain.qcow2');
    await execa('sync');
    times.convert.push(await timed('qemu-img', ['convert', '-q', '-c', '-f', 'qcow2', '-O', 'qcow2', '-o', 'compression_type=zstd', varDisk, plain]));
    fs.rmSync(plain);
    await execa('sync');
    const before = new Set(fs.existsSync(backups) ? fs.readdirSync(backups) : []);
    times.backup.push((await ivmTimed(['backup', 'create', NAME], /^$/)).total);
    const made = path.join(backups, fs.readdirSync(backups).find((f) => !before.has(f))!);
    // One backup in the folder: list checks them all.
    if (backupFile === '') backupFile = made;
    else fs.rmSync(made);
    await execa('sync');
    times.sha.push(await timed('sha256sum', [backupFile]));
    times.list.push((await ivmTimed(['backup', 'list', NAME], /^$/)).total);
    await execa('sync');
    times.cp.push(await timed('cp', ['--sparse=always', varDisk, path.join(scratch, 'copy.qcow2')]));
    fs.rmSync(path.join(scratch, 'copy.qcow2'));
    await execa('sync');
    const restore = await ivmTimed(['backup', 'restore', NAME, backupFile], /open the \/var disk \(guestfish appliance\)/);
    times.restoreData.push(restore.toMark ?? Number.NaN);
    times.restore.push(restore.total);
    // The disk each restore replaced is kept beside it: the bench's own, it goes.
    for (const f of fs.readdirSync(project.vmDir).filter((f) => f.startsWith(`${NAME}-var.qcow2.before-restore-`))) fs.rmSync(path.join(project.vmDir, f));
  }
  const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
  const backupBytes = fs.statSync(backupFile).size;
  const mib = (bytes: number) => `${Math.round(bytes / 1024 / 1024)} MiB`;
  const rate = (seconds: number) => `${Math.round(DATA_MIB / seconds)} MiB/s`;
  const row = (what: string, ivm: number, other: string, plainSeconds: number) =>
    `| ${what} | ${ivm.toFixed(2)} s (${rate(ivm)}) | ${other} | ${plainSeconds.toFixed(2)} s (${rate(plainSeconds)}) | ${(ivm / plainSeconds).toFixed(2)}x |`;
  console.log(`/var holding ${DATA_MIB} MiB of random data; the backup file is ${mib(backupBytes)}; median of ${runs} rounds`);
  console.log('');
  console.log('| operation | ivm | plain copy | plain | ratio |');
  console.log('|---|---|---|---|---|');
  console.log(row('backup create', median(times.backup), '`qemu-img convert -c` (zstd)', median(times.convert)));
  console.log(row('restore: checks and copy (up to the identity resync)', median(times.restoreData), '`cp --sparse=always` of the disk', median(times.cp)));
  console.log(row('restore, whole (one guestfish launch)', median(times.restore), '`cp --sparse=always` of the disk', median(times.cp)));
  console.log(row('backup list (checks every byte)', median(times.list), '`sha256sum` of the backup', median(times.sha)));
  await project.ivm(['destroy', '--delete-var', NAME]);
} finally {
  await cleanupDomain(NAME);
  await project.remove();
}

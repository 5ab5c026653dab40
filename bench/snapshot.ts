// The wall time of `ivm snapshot create` and `ivm snapshot restore` on a /var disk holding 1 GiB of
// data, each next to the plain `qemu-img snapshot -c` / `-a` on the same disk in the same run, and,
// for scale, a full copy of that disk (what a copy-based snapshot would cost). Real qemu-img,
// e2fsprogs, guestfish and libvirt; the base comes from test/support/standin-nix.
// Run: node bin/run-ts.js bench/snapshot.ts (after npm run build). BENCH_RUNS=N (3) runs per figure.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { cleanupDomain, ensureNetwork } from '../test/support/libvirt.ts';
import { makeTestProject } from '../test/support/ivm.ts';

const NAME = 'bench-snap';
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const DATA_MIB = 1024;

await ensureNetwork('default');
await cleanupDomain(NAME);
const project = await makeTestProject('ivm-bench-snap-');

const seconds = async (work: () => Promise<unknown>): Promise<number> => {
  const started = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - started) / 1e9;
};
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const shown = (s: number) => (s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(1)} s`);

try {
  await project.useStandinBase('a');
  project.addMachine(NAME, '{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "2G"; network = "default"; }\n');
  const created = await project.ivm(['create', NAME]);
  if (created.exitCode !== 0) throw new Error(created.stderr);
  const varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);

  // The same /var (identity and all), plus 1 GiB of random data, built without an appliance: the
  // tree ivm made is dumped with debugfs, the data added, mkfs.ext4 -d, qemu-img convert.
  const work = path.join(project.root, 'bench-work');
  const tree = path.join(work, 'tree');
  fs.mkdirSync(tree, { recursive: true });
  const build = await seconds(async () => {
    await execa('qemu-img', ['convert', '-O', 'raw', varDisk, path.join(work, 'old.raw')]);
    await execa('debugfs', ['-R', `rdump /identity /home /root ${tree}`, path.join(work, 'old.raw')]);
    fs.mkdirSync(path.join(tree, 'home', 'user'), { recursive: true });
    await execa('dd', ['if=/dev/urandom', `of=${path.join(tree, 'home', 'user', 'data')}`, 'bs=1M', `count=${DATA_MIB}`, 'status=none']);
    await execa('mkfs.ext4', ['-q', '-F', '-t', 'ext4', '-L', 'ivm-var', '-E', 'root_owner=0:0', '-d', tree, path.join(work, 'new.raw'), '2G']);
    await execa('qemu-img', ['convert', '-O', 'qcow2', path.join(work, 'new.raw'), `${varDisk}.big`]);
    fs.chmodSync(`${varDisk}.big`, 0o600);
    fs.renameSync(`${varDisk}.big`, varDisk);
    fs.rmSync(work, { recursive: true, force: true });
  });
  const allocated = JSON.parse((await execa('qemu-img', ['info', '--output=json', varDisk])).stdout)['actual-size'] as number;
  console.error(`/var disk with 1 GiB of data built in ${shown(build)} (${(allocated / 2 ** 30).toFixed(2)} GiB allocated)`);

  const ivm = async (args: string[]) => {
    const result = await project.ivm(['--verbose', ...args]);
    if (result.exitCode !== 0) throw new Error(`ivm ${args.join(' ')}:\n${result.stderr}`);
    return result;
  };
  const guestfishLaunches = (stderr: string) => stderr.split('\n').filter((l) => /^\+ (\S+ )*guestfish .*\(session\)$/.test(l)).length;

  const rows: { what: string; ivm: number; plain: number; launches: number }[] = [];
  const create = { ivm: [] as number[], plain: [] as number[] };
  for (let run = 1; run <= RUNS; run++) {
    create.ivm.push(await seconds(() => ivm(['snapshot', 'create', NAME, `ivm-${run}`])));
    create.plain.push(await seconds(() => execa('qemu-img', ['snapshot', '-c', `plain-${run}`, varDisk])));
  }
  rows.push({ what: 'snapshot create', ivm: median(create.ivm), plain: median(create.plain), launches: 0 });

  const restore = { ivm: [] as number[], plain: [] as number[] };
  let launches = 0;
  for (let run = 1; run <= RUNS; run++) {
    let stderr = '';
    restore.ivm.push(await seconds(async () => void (stderr = (await ivm(['snapshot', 'restore', NAME, `ivm-${run}`])).stderr)));
    launches = guestfishLaunches(stderr);
    restore.plain.push(await seconds(() => execa('qemu-img', ['snapshot', '-a', `plain-${run}`, varDisk])));
  }
  rows.push({ what: 'snapshot restore', ivm: median(restore.ivm), plain: median(restore.plain), launches });

  const copy = await seconds(() => execa('qemu-img', ['convert', '-O', 'qcow2', varDisk, `${varDisk}.copy`]));
  fs.rmSync(`${varDisk}.copy`, { force: true });

  console.log(`| operation (1 GiB of data on /var, median of ${RUNS}) | ivm | plain qemu-img | ivm / plain | guestfish launches (ivm) |`);
  console.log('|---|---|---|---|---|');
  for (const row of rows) console.log(`| ${row.what} | ${shown(row.ivm)} | ${shown(row.plain)} (\`snapshot -${row.what.endsWith('create') ? 'c' : 'a'}\`) | ${(row.ivm / row.plain).toFixed(0)}x | ${row.launches} |`);
  console.log(`| for scale: a full copy of the disk (\`qemu-img convert\`) | | ${shown(copy)} | | |`);
  await project.ivm(['destroy', '--delete-var', NAME]);
} finally {
  await cleanupDomain(NAME);
  await project.remove();
}

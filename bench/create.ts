// npm run bench: creating N VMs (N = 1, 5, 20 by default; or the numbers given as arguments or in
// BENCH_SIZES), three ways, in one run on the same machine, with real qemu-img, e2fsprogs, guestfish
// and libvirt on the stand-in base (test/support/standin-nix is the stand-in for `nix build`:
// NixOS cannot be built without the binary cache):
//   - ivm: `ivm create --no-build NAME` (a whole process each: start-up included);
//   - chain: the way the closest peer writes the identity: two `qemu-img create`, one guestfish
//     chain (mkfs, mkdir, upload, chown, chmod) on the /var disk, `virsh define`;
//   - floor: the least a create has to do: two `qemu-img create`, `mkfs.ext4 -d` of the /var tree
//     into a raw file, `qemu-img convert` to qcow2, `virsh define`.
// Per VM: wall time of each, the ratios ivm/chain and ivm/floor, ivm's guestfish launches and virsh
// calls, and the bytes each VM adds beyond the shared base. BENCH_CHAIN=0 skips the chain (slow:
// one appliance launch per VM).
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { cleanupDomain, ensureNetwork, virsh } from '../test/support/libvirt.ts';
import { makeTestProject, testMeta, type TestProject } from '../test/support/ivm.ts';
import { initVarScript } from '../test/support/var-disk.ts';
import { identitySources } from '../src/core/identity/identity.ts';
import { VAR_DIRS, VAR_IDENTITY_DIR } from '../src/core/identity/identity-files.ts';

// Sizes: arguments, or BENCH_SIZES="1 5" (npm run bench passes no arguments through).
const counts = [...process.argv.slice(2), ...(process.env.BENCH_SIZES ?? '').split(/\s+/)].map(Number).filter((n) => n > 0);
const sizes = counts.length > 0 ? counts : [1, 5, 20];
const withChain = process.env.BENCH_CHAIN !== '0';
const VAR_SIZE = '128M';
const guestfsEnv = { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };

function allocated(file: string): number {
  return fs.existsSync(file) ? fs.statSync(file).blocks * 512 : 0;
}

function count(lines: string[], tool: string): number {
  return lines.filter((line) => new RegExp(`^\\+ (\\S+ )*${tool} `).test(line)).length;
}

const seconds = (started: bigint) => Number(process.hrtime.bigint() - started) / 1e9;

/** The domain XML ivm renders for `name`, for the chain and the floor to define as ivm would. */
async function xmlOf(project: TestProject, name: string): Promise<string> {
  const r = await project.ivm(['xml', name]);
  if (r.exitCode !== 0) throw new Error(r.stderr);
  const file = path.join(project.root, `${name}.xml`);
  fs.writeFileSync(file, r.stdout);
  return file;
}

/** The peer's way: qemu-img twice, one guestfish chain for the /var filesystem and identity, define. */
async function chainCreate(project: TestProject, name: string, base: string): Promise<void> {
  const boot = path.join(project.vmDir, `${name}-boot.qcow2`);
  const varDisk = path.join(project.vmDir, `${name}-var.qcow2`);
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', boot]);
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', varDisk, VAR_SIZE]);
  const sources = identitySources(path.join(project.root, 'machines', name));
  await execa('guestfish', ['--no-progress-bars'], { input: `${initVarScript(varDisk, sources).join('\n')}\n`, env: guestfsEnv });
  await virsh(['define', await xmlOf(project, name)]);
}

/** The floor: qemu-img twice, mkfs.ext4 -d of the staged tree, qemu-img convert, define. */
async function floorCreate(project: TestProject, name: string, base: string, xml: string): Promise<void> {
  const dir = path.join(project.root, `floor-${name}`);
  const tree = path.join(dir, 'tree');
  for (const d of VAR_DIRS) fs.mkdirSync(path.join(tree, d.path), { recursive: true, mode: Number.parseInt(d.mode, 8) });
  for (const source of identitySources(path.join(project.root, 'machines', name))) {
    fs.copyFileSync(source.local, path.join(tree, VAR_IDENTITY_DIR, source.name));
  }
  const started = process.hrtime.bigint();
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', path.join(project.vmDir, `${name}-boot.qcow2`)]);
  await execa('mkfs.ext4', ['-q', '-F', '-L', 'ivm-var', '-E', 'root_owner=0:0', '-d', tree, path.join(dir, 'var.raw'), VAR_SIZE]);
  await execa('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', path.join(dir, 'var.raw'), path.join(project.vmDir, `${name}-var.qcow2`)]);
  await virsh(['define', xml]);
  floorSeconds += seconds(started);
}
let floorSeconds = 0;

await ensureNetwork('default');
const rows: string[] = [];
for (const n of sizes) {
  const project = await makeTestProject('ivm-bench-');
  await project.useStandinBase('a');
  fs.mkdirSync(project.vmDir, { recursive: true });
  const kinds = ['ivm', 'chain', 'floor'] as const;
  const names = Object.fromEntries(kinds.map((kind) => [kind, Array.from({ length: n }, (_, i) => `bench-${kind}-${n}-${i}`)])) as Record<(typeof kinds)[number], string[]>;
  let base = '';
  for (const kind of kinds) {
    for (const name of names[kind]) {
      await cleanupDomain(name); // left over from an interrupted run
      project.addMachine(name, testMeta());
      const built = await project.ivm(['build', name]);
      if (built.exitCode !== 0) throw new Error(built.stderr);
      base = built.stdout.trim().split('\n').pop()!;
      if (kind !== 'ivm' && (await project.ivm(['identity', name])).exitCode !== 0) throw new Error(`identity ${name}`);
    }
  }
  let wall = 0;
  let guestfish = 0;
  let virshCalls = 0;
  let bytes = 0;
  for (const name of names.ivm) {
    const started = process.hrtime.bigint();
    const result = await project.ivm(['--verbose', 'create', '--no-build', name]);
    wall += seconds(started);
    if (result.exitCode !== 0) throw new Error(`create ${name} failed:\n${result.stderr}`);
    const lines = result.stderr.split('\n');
    guestfish += count(lines, 'guestfish');
    virshCalls += count(lines, 'virsh');
    bytes += ['boot', 'var'].reduce((sum, disk) => sum + allocated(path.join(project.vmDir, `${name}-${disk}.qcow2`)), 0);
  }
  let chain = Number.NaN;
  if (withChain) {
    const started = process.hrtime.bigint();
    for (const name of names.chain) await chainCreate(project, name, base);
    chain = seconds(started);
  }
  floorSeconds = 0;
  for (const name of names.floor) await floorCreate(project, name, base, await xmlOf(project, name));
  const floor = floorSeconds;
  const perVm = (total: number) => (Number.isNaN(total) ? 'skipped' : total / n < 1 ? `${((total / n) * 1000).toFixed(0)} ms` : `${(total / n).toFixed(1)} s`);
  const ratio = (a: number, b: number) => (Number.isNaN(a) || Number.isNaN(b) ? '-' : `${(a / b).toFixed(a / b < 10 ? 2 : 0)}x`);
  const installed = fs.readdirSync(project.baseDir).filter((f) => f.endsWith('.qcow2'));
  rows.push(
    `| ${n} | ${perVm(wall)} | ${perVm(chain)} | ${perVm(floor)} | ${ratio(wall, chain)} | ${ratio(wall, floor)} | ${guestfish / n} | ${virshCalls / n} | ${Math.round(bytes / n / 1024)} KiB | ${installed.length} |`,
  );
  for (const name of [...names.ivm, ...names.chain, ...names.floor]) await cleanupDomain(name);
  await project.remove();
  console.error(`N=${n} done`);
}
console.log(`Creating N VMs (varSize ${VAR_SIZE}), per VM:`);
console.log('');
console.log('| N | ivm create | peer-style guestfish chain | floor | ivm/chain | ivm/floor | guestfish launches (ivm) | virsh calls (ivm) | bytes added (boot + /var) | base images installed |');
console.log('|---|---|---|---|---|---|---|---|---|---|');
for (const row of rows) console.log(row);

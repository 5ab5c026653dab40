// npm run bench: `ivm create --no-build` of N machines (N = 1, 5, 20 by default; or the numbers
// given as arguments or in BENCH_SIZES), on the stand-in base with real qemu-img, guestfish and libvirt. Reports per
// VM: wall time, guestfish launches, virsh calls, and the bytes each VM adds beyond the shared base.
// (The base comes from test/support/standin-nix, the stand-in for `nix build`: NixOS cannot be
// built without the binary cache.)
import fs from 'node:fs';
import path from 'node:path';
import { cleanupDomain, ensureNetwork } from '../test/support/libvirt.ts';
import { makeTestProject, testMeta } from '../test/support/ivm.ts';

// Sizes: arguments, or BENCH_SIZES="1 5" (npm run bench passes no arguments through).
const counts = [...process.argv.slice(2), ...(process.env.BENCH_SIZES ?? '').split(/\s+/)].map(Number).filter((n) => n > 0);
const sizes = counts.length > 0 ? counts : [1, 5, 20];

function allocated(file: string): number {
  return fs.existsSync(file) ? fs.statSync(file).blocks * 512 : 0;
}

function count(lines: string[], tool: string): number {
  return lines.filter((line) => new RegExp(`^\\+ (\\S+ )*${tool} `).test(line)).length;
}

await ensureNetwork('default');
const rows: string[] = [];
for (const n of sizes) {
  const project = await makeTestProject('ivm-bench-');
  await project.useStandinBase('a');
  const names = Array.from({ length: n }, (_, i) => `bench-${n}-${i}`);
  for (const name of names) {
    await cleanupDomain(name); // left over from an interrupted run
    project.addMachine(name, testMeta());
    const built = await project.ivm(['build', name]);
    if (built.exitCode !== 0) throw new Error(built.stderr);
  }
  let wall = 0;
  let guestfish = 0;
  let virsh = 0;
  let bytes = 0;
  for (const name of names) {
    const started = process.hrtime.bigint();
    const result = await project.ivm(['--verbose', 'create', '--no-build', name]);
    wall += Number(process.hrtime.bigint() - started) / 1e9;
    if (result.exitCode !== 0) throw new Error(`create ${name} failed:\n${result.stderr}`);
    const lines = result.stderr.split('\n');
    guestfish += count(lines, 'guestfish');
    virsh += count(lines, 'virsh');
    bytes += ['boot', 'var'].reduce((sum, disk) => sum + allocated(path.join(project.vmDir, `${name}-${disk}.qcow2`)), 0);
  }
  const base = fs.readdirSync(project.baseDir).filter((f) => f.endsWith('.qcow2'));
  rows.push(
    `| ${n} | ${(wall / n).toFixed(1)} s | ${guestfish / n} | ${virsh / n} | ${Math.round(bytes / n / 1024)} KiB | ${base.length} |`,
  );
  for (const name of names) await project.ivm(['destroy', '--delete-var', name]);
  await project.remove();
  console.error(`N=${n} done`);
}
console.log('| N | wall time per VM | guestfish launches per VM | virsh calls per VM | bytes added per VM (allocated, boot + /var) | base images installed |');
console.log('|---|---|---|---|---|---|');
for (const row of rows) console.log(row);

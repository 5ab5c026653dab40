// npm run bench (last): start-up of the CLI, the median of BENCH_RUNS runs (20; 3 warm-up runs
// first) of each command, as a markdown table:
//   - `node -e 0`, node itself: the floor;
//   - `ivm --version` (goal: within 2x of node -e 0): the compiled CLI with its command
//     definitions, nothing else loaded;
//   - `ivm list` in a scratch project with 20 machines (machines/NAME/meta.nix), the real nix as NIX
//     and the tests' libvirtd answering (goal: under 0.2 s): one `virsh list --all`, no VM made;
//   - the same with a boot overlay for each of the 20 (one `qemu-img info` each, as for real VMs);
//   - `ivm completion --machines`, what a shell runs at each Tab.
import { execa, execaSync } from 'execa';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ensureLibvirt } from '../test/support/libvirt.ts';
import { IVM_BIN, makeTestProject, testMeta } from '../test/support/ivm.ts';

const RUNS = Number(process.env.BENCH_RUNS ?? 20);
const WARMUP = 3;
const MACHINES = 20;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Median wall time of `argv`, in ms; every run must succeed. */
function time(argv: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): number {
  const samples: number[] = [];
  for (let i = 0; i < WARMUP + RUNS; i++) {
    const started = process.hrtime.bigint();
    const r = spawnSync(argv[0]!, argv.slice(1), { cwd: options.cwd, env: options.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    if (r.status !== 0) throw new Error(`${argv.join(' ')} failed (exit ${r.status}): ${r.stderr.toString().trim()}`);
    if (i >= WARMUP) samples.push(ms);
  }
  return median(samples);
}

// The CLI as built from the current sources (npm run bench builds first; so does this).
execaSync(process.execPath, [path.resolve('scripts/build.js')], { stdio: 'inherit' });
await ensureLibvirt();

const project = await makeTestProject('ivm-bench-startup-');
try {
  const nix = (await execa('sh', ['-c', 'command -v nix'], { reject: false })).stdout.trim() || 'nix';
  const env = { ...process.env, ...project.env, NIX: nix, SUDO: '' };
  for (let i = 1; i <= MACHINES; i++) project.addMachine(`vm${String(i).padStart(2, '0')}`, testMeta());
  const node = process.execPath;
  const ivm = (...args: string[]) => [node, IVM_BIN, ...args];

  const floor = time([node, '-e', '0']);
  const version = time(ivm('--version'));
  const listed = (await execa(node, [IVM_BIN, 'list'], { cwd: project.root, env })).stdout.trim().split('\n').length - 1;
  if (listed !== MACHINES) throw new Error(`ivm list showed ${listed} machines, not ${MACHINES}`);
  const list = time(ivm('list'), { cwd: project.root, env });
  const completion = time(ivm('completion', '--machines'), { cwd: project.root, env });

  // A boot overlay for each machine, on one small base: list then reads each overlay's header.
  fs.mkdirSync(project.baseDir, { recursive: true });
  fs.mkdirSync(project.vmDir, { recursive: true });
  const base = path.join(project.baseDir, `${'0'.repeat(32)}-bench.qcow2`);
  await execa('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
  for (let i = 1; i <= MACHINES; i++) {
    const name = `vm${String(i).padStart(2, '0')}`;
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', path.join(project.vmDir, `${name}-boot.qcow2`)]);
  }
  const listOverlays = time(ivm('list'), { cwd: project.root, env });

  const ratio = (ms: number) => `${(ms / floor).toFixed(1)}x`;
  const row = (what: string, ms: number, goal = '') => `| ${what} | ${Math.round(ms)} ms | ${ratio(ms)} | ${goal} |`;
  console.log(`\nStart-up, median of ${RUNS} runs (${WARMUP} warm-up runs first), node ${process.version}:\n`);
  console.log('| command | median | vs `node -e 0` | goal |');
  console.log('|---|---|---|---|');
  console.log(row('`node -e 0`', floor));
  console.log(row('`ivm --version`', version, `within 2x: ${version <= 2 * floor ? 'met' : 'NOT met'}`));
  console.log(row(`\`ivm list\`, ${MACHINES} machines`, list, `under 200 ms: ${list < 200 ? 'met' : 'NOT met'}`));
  console.log(row(`\`ivm list\`, ${MACHINES} machines with a boot overlay each`, listOverlays));
  console.log(row('`ivm completion --machines`', completion));
} finally {
  await project.remove();
}

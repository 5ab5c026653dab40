// Part of `npm run bench`: the wall time of `ivm upgrade` with an unchanged base and with a new base
// (and a changed identity file), and the guestfish launches each makes (target: one). Real qemu-img,
// guestfish and libvirt; the bases come from test/support/standin-nix, the stand-in for `nix build`.
import { cleanupDomain, ensureNetwork } from '../test/support/libvirt.ts';
import { makeTestProject, testMeta } from '../test/support/ivm.ts';
import fs from 'node:fs';
import path from 'node:path';

const NAME = 'bench-up';
await ensureNetwork('default');
await cleanupDomain(NAME);
const project = await makeTestProject('ivm-bench-up-');
try {
  await project.useStandinBase('a');
  const dir = project.addMachine(NAME, testMeta());
  const created = await project.ivm(['create', NAME]);
  if (created.exitCode !== 0) throw new Error(created.stderr);

  const timed = async (label: string) => {
    const started = process.hrtime.bigint();
    const result = await project.ivm(['--verbose', 'upgrade', NAME]);
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    if (result.exitCode !== 0) throw new Error(`${label}:\n${result.stderr}`);
    const launches = result.stderr.split('\n').filter((l) => /^\+ (\S+ )*guestfish /.test(l)).length;
    return `| ${label} | ${seconds.toFixed(1)} s | ${launches} |`;
  };
  const rows = [await timed('unchanged base, identity in sync')];
  await project.useStandinBase('b');
  fs.writeFileSync(path.join(dir, 'tcp_ports'), '80\n');
  rows.push(await timed('new base, one identity file added'));
  console.log('| upgrade | wall time | guestfish launches |');
  console.log('|---|---|---|');
  for (const row of rows) console.log(row);
  await project.ivm(['destroy', '--delete-var', NAME]);
} finally {
  await project.remove();
}

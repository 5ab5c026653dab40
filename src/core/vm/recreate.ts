// ivm recreate: a clean slate. A fresh boot overlay AND a fresh /var disk: every byte of the VM's
// /var is lost, so it asks first (or needs --yes where nobody can be asked).
import readline from 'node:readline/promises';
import { RefusedError } from '../../errors.ts';
import { buildBase, lastBuiltBase } from '../base/build.ts';
import type { Context } from '../context.ts';
import { createVm, existingParts } from './create.ts';
import { destroyVm } from './lifecycle.ts';
import { requireBaseInBaseDir } from '../base/base-dir.ts';
import { hasMachineId, planIdentity } from '../identity/identity.ts';
import { hostFileExists } from '../disks/vm-files.ts';
import { diskSnapshots } from '../disks/snapshot.ts';
import { withVmLock } from '../lock.ts';
import { loadMachine } from '../machine/machine.ts';
import { reservationSteps } from '../network/net.ts';
import { vmPaths, type VmPaths } from '../disks/vm-paths.ts';

export interface RecreateOptions {
  yes: boolean;
  build: boolean;
  start: boolean;
}

export async function recreateVm(ctx: Context, name: string, options: RecreateOptions): Promise<void> {
  await withVmLock(ctx, name, 'recreate', () => recreateLocked(ctx, name, options));
}

async function recreateLocked(ctx: Context, name: string, options: RecreateOptions): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  await refuseUnknownLeftovers(ctx, name, machine.dir, paths);
  // What create would refuse is refused before anything is destroyed: a bad identity (a .pub
  // without its private key), or an address that cannot be reserved.
  planIdentity(machine.dir, name);
  await reservationSteps({ ...ctx, say: () => undefined }, machine);
  // Its snapshots live inside the /var disk (ivm snapshot), so they go with it: the warning counts them.
  const lost = (await hostFileExists(ctx.runner, paths.var)) ? await snapshotsLost(ctx, name, paths.var) : undefined;
  if (!ctx.runner.dryRun && !options.yes && lost !== undefined) await confirm(name, paths.var, lost);
  if ((ctx.runner.dryRun || options.yes) && lost) ctx.say(`recreate ${name} deletes its /var disk ${paths.var}${lost}`);
  // Build first: a failing build must not leave the user without a VM.
  const base = options.build ? (await buildBase(ctx, name)).base : await lastBuiltBase(ctx, name);
  requireBaseInBaseDir(ctx.settings, base);
  if (ctx.runner.dryRun) ctx.say(`# recreate ${name}: destroy (with its /var disk), then create`);
  await destroyVm(ctx, name, { deleteVar: true, force: true, quietIfAbsent: true });
  await createVm(ctx, name, { build: false, start: options.start, base, replacing: true });
}

/**
 * Without machines/<name>/machine-id, destroy cannot tell that a domain or disks of this name are
 * this machine's, and leaves them; create would then refuse. Say so before anything happens.
 */
async function refuseUnknownLeftovers(ctx: Context, name: string, dir: string, paths: VmPaths): Promise<void> {
  if (hasMachineId(dir)) return;
  const { parts: found } = await existingParts(ctx, name, paths);
  if (found.length === 0) return;
  throw new RefusedError(
    `machines/${name}/machine-id is missing, so nothing tells that these are this machine's; nothing was changed:\n${found.map((f) => `  ${f}`).join('\n')}`,
    (await hostFileExists(ctx.runner, paths.var))
      ? `restore the machine-id from the /var disk: guestfish --ro -a ${paths.var} -m /dev/sda cat /identity/machine-id > machines/${name}/machine-id`
      : `remove them yourself if they are this machine's (virsh undefine --nvram ${name}; rm the files), then run ivm recreate ${name} again`,
  );
}

/** ", and with it its N snapshots" ('' when it has none; a disk qemu-img cannot read says so instead). */
async function snapshotsLost(ctx: Context, name: string, varDisk: string): Promise<string> {
  try {
    const count = (await diskSnapshots(ctx.runner, varDisk)).length;
    return count === 0 ? '' : `, and with it its ${count} snapshot${count === 1 ? '' : 's'} (ivm snapshot list ${name})`;
  } catch {
    return ', and with it any snapshots it holds (qemu-img could not list them)';
  }
}

async function confirm(name: string, varDisk: string, snapshots: string): Promise<void> {
  const warning = `recreate ${name} deletes its /var disk ${varDisk}: all of its data is lost${snapshots}`;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new RefusedError(`${warning}; nothing was changed`, `add --yes to confirm`);
  }
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    let answer: string;
    try {
      answer = await rl.question(`${warning}.\nType the machine name to confirm: `);
    } catch {
      // Ctrl+C or Ctrl+D at the prompt: an answer too.
      answer = '';
      process.stderr.write('\n');
    }
    if (answer.trim() !== name) throw new RefusedError('not confirmed; nothing was changed');
  } finally {
    rl.close();
  }
}

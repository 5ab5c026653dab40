// ivm recreate: a clean slate. A fresh boot overlay AND a fresh /var disk: every byte of the VM's
// /var is lost, so it asks first (or needs --yes where nobody can be asked).
import fs from 'node:fs';
import readline from 'node:readline/promises';
import { RefusedError } from '../errors.ts';
import { buildBase, lastBuiltBase } from './build.ts';
import type { Context } from './context.ts';
import { createVm } from './create.ts';
import { destroyVm } from './lifecycle.ts';
import { loadMachine } from './machine.ts';
import { vmPaths } from './vm-paths.ts';

export interface RecreateOptions {
  yes: boolean;
  build: boolean;
  start: boolean;
}

export async function recreateVm(ctx: Context, name: string, options: RecreateOptions): Promise<void> {
  await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  if (!ctx.runner.dryRun && !options.yes && fs.existsSync(paths.var)) await confirm(name, paths.var);
  // Build first: a failing build must not leave the user without a VM.
  const base = options.build ? (await buildBase(ctx, name)).base : lastBuiltBase(ctx, name);
  if (ctx.runner.dryRun) ctx.say(`# recreate ${name}: destroy (with its /var disk), then create`);
  await destroyVm(ctx, name, { deleteVar: true, force: true, quietIfAbsent: true });
  await createVm(ctx, name, { build: false, start: options.start, base, replacing: true });
}

async function confirm(name: string, varDisk: string): Promise<void> {
  const warning = `recreate ${name} deletes its /var disk ${varDisk}: all of its data is lost`;
  if (!process.stdin.isTTY || !process.stderr.isTTY) {
    throw new RefusedError(`${warning}; nothing was changed`, `add --yes to confirm`);
  }
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${warning}.\nType the machine name to confirm: `);
    if (answer.trim() !== name) throw new RefusedError('not confirmed; nothing was changed');
  } finally {
    rl.close();
  }
}

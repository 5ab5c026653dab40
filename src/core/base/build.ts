// ivm build: nix build the machine's image and install it once into the base-image folder.
import path from 'node:path';
import { RefusedError } from '../../errors.ts';
import { readlink } from '../../host/files.ts';
import { basePathFor, findImage, installPlan, readBuildRecord, runBuild, writeBuildRecord } from './base-image.ts';
import type { Context } from '../context.ts';
import { machineDir } from '../machine/machine.ts';
import { executePlan } from '../plan.ts';
import { hostFileExists } from '../disks/vm-files.ts';
import { withBaseLock } from '../lock.ts';

export interface BuiltBase {
  /** Installed base image; a placeholder under --dry-run when the build would run. */
  base: string;
  /** False when the same build was installed before (nothing copied). */
  copied: boolean;
}

export async function buildBase(ctx: Context, name: string): Promise<BuiltBase> {
  machineDir(ctx.project, name);
  // nix prints its own log while it builds (streamed to stderr below this step's line).
  const outPath = await ctx.runner.progress.step(`build the image of ${name} (nix build)`, () => runBuild(ctx.runner, ctx.project, name));
  if (outPath === undefined) {
    return { base: path.join(ctx.settings.baseDir, '<store path printed by nix build>.qcow2'), copied: false };
  }
  const image = await readlink(ctx.runner, findImage(outPath));
  const base = basePathFor(ctx.settings, outPath);
  // Installed and recorded under the base folder's lock: gc never sees the base before it is recorded.
  return withBaseLock(ctx, 'build', async () => {
    let copied = false;
    if (!(await hostFileExists(ctx.runner, base))) {
      const plan = installPlan(ctx.settings, image, base);
      await executePlan(ctx.runner, plan, ctx.say);
      copied = true;
    }
    writeBuildRecord(ctx.project, name, { storePath: outPath, base });
    return { base, copied };
  });
}

/** The base last built for a machine (create --no-build). */
export async function lastBuiltBase(ctx: Context, name: string): Promise<string> {
  const record = readBuildRecord(ctx.project, name);
  if (!record) throw new RefusedError(`no base image has been built for ${name}`, `run: ivm build ${name} (or drop --no-build)`);
  if (!(await hostFileExists(ctx.runner, record.base))) {
    throw new RefusedError(`the base image last built for ${name} is gone: ${record.base}`, `run: ivm build ${name}`);
  }
  return record.base;
}

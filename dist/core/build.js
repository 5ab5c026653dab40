// ivm build: nix build the machine's image and install it once into the base-image folder.
import path from 'node:path';
import { RefusedError } from "../errors.js";
import { readlink } from "../host/files.js";
import { basePathFor, findImage, installPlan, readBuildRecord, runBuild, writeBuildRecord } from "./base-image.js";
import { machineDir } from "./machine.js";
import { executePlan } from "./plan.js";
import { hostFileExists } from "./vm-files.js";
import { withBaseLock } from "./lock.js";
export async function buildBase(ctx, name) {
    machineDir(ctx.project, name);
    const outPath = await runBuild(ctx.runner, ctx.project, name);
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
export async function lastBuiltBase(ctx, name) {
    const record = readBuildRecord(ctx.project, name);
    if (!record)
        throw new RefusedError(`no base image has been built for ${name}`, `run: ivm build ${name} (or drop --no-build)`);
    if (!(await hostFileExists(ctx.runner, record.base))) {
        throw new RefusedError(`the base image last built for ${name} is gone: ${record.base}`, `run: ivm build ${name}`);
    }
    return record.base;
}

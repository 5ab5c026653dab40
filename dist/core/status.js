// ivm status: what a VM is made of now. Reads only: libvirt's state, the disks' backing files and
// sizes, and, when the VM is stopped, /identity on its /var disk (guestfish, read-only).
import fs from 'node:fs';
import path from 'node:path';
import { hostFileExists } from "./vm-files.js";
import { imageInfo } from "../host/qemu-img.js";
import { domainState } from "../host/virsh.js";
import { readBuildRecord } from "./base-image.js";
import { backingOf } from "./boot-overlay.js";
import { identitySources } from "./identity.js";
import { describeDiff, diffIdentity, isInSync, openVarDisk, readDiskIdentity } from "./identity-sync.js";
import { machineDir } from "./machine.js";
import { vmPaths } from "./vm-paths.js";
async function disk(ctx, file) {
    if (!(await hostFileExists(ctx.runner, file)))
        return undefined;
    const info = await imageInfo(ctx.runner, file);
    // qemu-img's own count where ivm cannot stat the file (HOST_CMD).
    const allocated = ctx.settings.hostCmd.length === 0 ? fs.lstatSync(file).blocks * 512 : (info['actual-size'] ?? 0);
    return { path: file, virtualBytes: info['virtual-size'] ?? 0, allocatedBytes: allocated };
}
export async function vmStatus(ctx, name) {
    const dir = machineDir(ctx.project, name);
    const paths = vmPaths(ctx.settings, ctx.project, name);
    const state = (await domainState(ctx.runner, name)) ?? 'undefined';
    const current = await backingOf(ctx.runner, paths.boot);
    const previous = await backingOf(ctx.runner, paths.bootPrevious);
    const record = readBuildRecord(ctx.project, name);
    const sources = identitySources(dir, []);
    let sync = 'not checked';
    let detail;
    if (!(await hostFileExists(ctx.runner, paths.var)))
        detail = 'no /var disk';
    else if (state !== 'shut off' && state !== 'undefined')
        detail = `the VM is ${state}: guestfish never opens a running VM's disks`;
    else {
        const session = await openVarDisk(ctx.runner, paths.var, { write: false });
        let diff;
        try {
            diff = diffIdentity(sources, await readDiskIdentity(session));
            await session.close();
        }
        finally {
            session.abort();
        }
        sync = isInSync(diff) ? 'in sync' : 'differs';
        detail = isInSync(diff) ? `machines/${name}/ and /var/identity agree` : `upgrade would: ${describeDiff(diff)}`;
    }
    const storePath = current && record && path.resolve(record.base) === path.resolve(current) ? record.storePath : current ? `/nix/store/${path.basename(current, '.qcow2')}` : undefined;
    return {
        name,
        state,
        base: current ? { path: current, storePath, exists: await hostFileExists(ctx.runner, current) } : undefined,
        rollbackBase: previous ? { path: previous, exists: await hostFileExists(ctx.runner, previous) } : undefined,
        disks: { boot: await disk(ctx, paths.boot), var: await disk(ctx, paths.var) },
        identity: { files: sources.map((s) => ({ name: s.name, mode: s.mode })), sync, detail },
    };
}
function size(bytes) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
        value /= 1024;
        unit += 1;
    }
    return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}
export function formatStatus(status) {
    const diskLine = (d) => (d ? `${d.path} (${size(d.allocatedBytes)} allocated of ${size(d.virtualBytes)})` : 'missing');
    return [
        `name:           ${status.name}`,
        `state:          ${status.state}`,
        `base:           ${status.base ? `${status.base.path}${status.base.exists ? '' : ` (MISSING: it cannot boot; ivm upgrade ${status.name} moves it to its latest base)`}` : 'none'}`,
        `  store path:   ${status.base?.storePath ?? 'unknown'}`,
        `rollback base:  ${status.rollbackBase ? `${status.rollbackBase.path}${status.rollbackBase.exists ? '' : ' (gone: rollback impossible)'}` : 'none'}`,
        `boot overlay:   ${diskLine(status.disks.boot)}`,
        `/var disk:      ${diskLine(status.disks.var)}`,
        `identity files: ${status.identity.files.map((f) => `${f.name} (${f.mode})`).join(', ')}`,
        `identity sync:  ${status.identity.sync}: ${status.identity.detail}`,
    ];
}

import { ensureIdentity } from "../core/identity.js";
import { machineDir } from "../core/machine.js";
import { withVmLock } from "../core/lock.js";
export function registerIdentity(program, context) {
    program
        .command('identity')
        .argument('<name>', 'machine name (a folder in machines/)')
        .description("create the machine's missing identity files (machine-id, hostname, SSH host key, known_hosts); never overwrites")
        .action(async (name) => {
        const ctx = context();
        const dir = machineDir(ctx.project, name);
        const writes = await withVmLock(ctx, name, 'identity', async () => ensureIdentity(ctx, dir, name));
        if (writes.length === 0)
            ctx.say(`${name}: identity complete, nothing to write`);
    });
}

import { formatStatus, vmStatus } from "../core/status.js";
export function registerStatus(program, context) {
    program
        .command('status')
        .argument('<name>', 'machine name')
        .description('state, current and rollback base, disk sizes, identity files and whether /var/identity is in sync (read-only)')
        .option('--json', 'print JSON')
        .action(async (name, options) => {
        const ctx = context();
        const status = await vmStatus(ctx, name);
        if (options.json)
            process.stdout.write(`${JSON.stringify(status, null, 2)}\n`);
        else
            for (const line of formatStatus(status))
                ctx.say(line);
    });
}

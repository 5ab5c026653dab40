import { virshCommand } from "../host/virsh.js";
import { xmlText } from "./xml-text.js";
export async function listPools(runner) {
    const names = (await runner.run(virshCommand(runner, ['pool-list', '--all', '--name'], false))).stdout
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean);
    const pools = [];
    for (const name of names) {
        const xml = (await runner.run(virshCommand(runner, ['pool-dumpxml', name], false))).stdout;
        const info = (await runner.run(virshCommand(runner, ['pool-info', name], false))).stdout;
        const pathMatch = /<target>[\s\S]*?<path>([^<]*)<\/path>/.exec(xml);
        pools.push({
            name,
            path: pathMatch ? xmlText(pathMatch[1]) : undefined,
            active: /^State:\s+running/m.test(info),
            autostart: /^Autostart:\s+yes/m.test(info),
        });
    }
    return pools;
}

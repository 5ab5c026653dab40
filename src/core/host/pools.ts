// libvirt storage pools: basepool (IVM_BASE_DIR) and vmpool (IVM_VM_DIR), type dir. Existing pools
// are read, never redefined: a pool of that name with another path is reported and left alone.
import type { Runner } from '../../host/runner.ts';
import { virshCommand } from '../../host/virsh.ts';
import { xmlText } from '../xml-text.ts';

export interface PoolInfo {
  name: string;
  path: string | undefined;
  active: boolean;
  autostart: boolean;
}

export async function listPools(runner: Runner): Promise<PoolInfo[]> {
  const names = (await runner.run(virshCommand(runner, ['pool-list', '--all', '--name'], false))).stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
  const pools: PoolInfo[] = [];
  for (const name of names) {
    const xml = (await runner.run(virshCommand(runner, ['pool-dumpxml', name], false))).stdout;
    const info = (await runner.run(virshCommand(runner, ['pool-info', name], false))).stdout;
    const pathMatch = /<target>[\s\S]*?<path>([^<]*)<\/path>/.exec(xml);
    pools.push({
      name,
      path: pathMatch ? xmlText(pathMatch[1]!) : undefined,
      active: /^State:\s+running/m.test(info),
      autostart: /^Autostart:\s+yes/m.test(info),
    });
  }
  return pools;
}

import { type Command, InvalidArgumentError } from 'commander';
import type { ContextFactory } from '../cli.ts';
import type { NetKind } from '../core/network/net.ts';
import { hostContextOf } from './host-context.ts';

/** core/net.ts's NET_KINDS, in its order; here so that parsing the options does not load the implementation. */
const NET_KINDS = Object.keys({ nat: 0, isolated: 0, bridge: 0 } satisfies Record<NetKind, 0>) as NetKind[];

/** The implementation, loaded when a command runs. */
const core = () => import('../core/network/net.ts');

function kind(value: string): NetKind {
  if (!(NET_KINDS as readonly string[]).includes(value)) throw new InvalidArgumentError(`one of ${NET_KINDS.join(', ')}`);
  return value as NetKind;
}

export function registerNet(program: Command, _context: ContextFactory): void {
  const context = hostContextOf(program);
  const net = program.command('net').description('libvirt networks: nat, isolated, or a host bridge');
  net
    .command('create')
    .argument('<name>', 'network name')
    .description('define, start and autostart a network: gateway .1, DHCP from .2 to the last usable address; refuses a CIDR overlapping another network')
    .option('--kind <kind>', 'nat (forwarded to the outside), isolated (host and VMs only) or bridge (an existing host bridge)', kind, 'nat')
    .option('--cidr <cidr>', 'IPv4 network for nat and isolated, e.g. 192.168.100.0/24 (prefix 8 to 30)')
    .option('--bridge <name>', 'kind bridge: the host bridge (e.g. br0); nat/isolated: the name of the bridge libvirt makes (default: virbrN)')
    .action(async (name: string, options: { kind: NetKind; cidr?: string; bridge?: string }) =>
      (await core()).netCreate(context(), name, { kind: options.kind, cidr: options.cidr, bridge: options.bridge }),
    );
  net
    .command('list')
    .description('every libvirt network with its kind, CIDR, DHCP range, bridge and state')
    .option('--json', 'print JSON: [{"name", "kind", "cidr", "gateway", "dhcp", "bridge", "active", "autostart"}]')
    .action(async (options: { json?: boolean }) => {
      const entries = await (await core()).netList(context());
      if (options.json) return void process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
      const rows = [['NAME', 'KIND', 'CIDR', 'DHCP', 'BRIDGE', 'STATE', 'AUTOSTART']];
      for (const e of entries) {
        rows.push([e.name, e.kind, e.cidr ?? '-', e.dhcp ?? '-', e.bridge ?? '-', e.active ? 'active' : 'inactive', e.autostart ? 'yes' : 'no']);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const row of rows) process.stdout.write(`${row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
    });
  net
    .command('destroy')
    .argument('<name>', 'network name')
    .description('stop and undefine a network; refuses while a VM is attached to it')
    .option('--force', 'destroy it even though VMs are attached (they lose their network)')
    .action(async (name: string, options: { force?: boolean }) => (await core()).netDestroy(context(), name, { force: Boolean(options.force) }));
  net
    .command('reserve')
    .argument('<machine>', 'machine name')
    .description("make the DHCP reservation of the machine's ipAddress (meta.nix) for its MAC on its network (create does it too)")
    .action(async (name: string) => {
      const [{ requireProject }, { loadMachine }, { reserveMachineAddress }] = await Promise.all([
        import('../core/host/host-context.ts'),
        import('../core/machine/machine.ts'),
        core(),
      ]);
      const ctx = context();
      const machine = await loadMachine(ctx.runner, requireProject(ctx), name);
      if (machine.meta.ipAddress === undefined) return ctx.say(`${name} has no ipAddress in its meta.nix: its address comes from the DHCP range, stable by its MAC`);
      await reserveMachineAddress(ctx, machine);
      if (!ctx.runner.dryRun) ctx.say(`${name}: ${machine.meta.ipAddress} reserved on ${machine.meta.network}`);
    });
}

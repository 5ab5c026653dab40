// ivm net create/list/destroy/reserve: libvirt networks of three kinds.
//   nat, isolated: a bridge libvirt makes, gateway .1, DHCP (dnsmasq) from .2 to the last usable
//     address, netmask from the prefix; nat forwards to the outside, isolated does not.
//   bridge: an existing host bridge (the LAN's DHCP server hands out addresses).
// Bad CIDRs are bad input (exit 2); a name in use or a CIDR overlapping an existing libvirt network
// is refused (exit 3). A machine's static address (meta.nix ipAddress) becomes a DHCP host
// reservation for its MAC.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BadInputError, RefusedError } from '../../errors.ts';
import type { Runner } from '../../host/runner.ts';
import { listDomains, virshCommand } from '../../host/virsh.ts';
import { contains, ipv4Net, overlaps, parseCidr, parseIpv4, prefixFromNetmask, type Ipv4Net } from './cidr.ts';
import type { HostContext } from '../host/host-context.ts';
import { hasMachineId, machineIdFrom, macAddress } from '../identity/identity.ts';
import type { Machine } from '../machine/machine.ts';
import { executePlan, type Step } from '../plan.ts';
import { xmlAttr, xmlEscape } from '../xml-text.ts';

export const NET_KINDS = ['nat', 'isolated', 'bridge'] as const;
export type NetKind = (typeof NET_KINDS)[number];

export interface DhcpHost {
  mac: string | undefined;
  name: string | undefined;
  ip: string | undefined;
}

export interface NetworkInfo {
  name: string;
  /** nat, isolated, bridge, or libvirt's other forward modes (route, open, ...). */
  kind: string;
  active: boolean;
  autostart: boolean;
  /** The Linux bridge (made by libvirt, or the host's for kind bridge). */
  bridge: string | undefined;
  /** The IPv4 network, when the network has an address. */
  net: Ipv4Net | undefined;
  gateway: string | undefined;
  dhcpRange: { start: string; end: string } | undefined;
  hosts: DhcpHost[];
}

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const BRIDGE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$/;

export function validateNetworkName(name: string): void {
  if (!NAME.test(name)) throw new BadInputError(`bad network name ${JSON.stringify(name)}: letters, digits, _ . - (at most 64, starting with a letter or digit)`);
}

/** Reads a network's XML into what ivm uses (the first IPv4 address block). */
export function parseNetworkXml(name: string, xml: string, info = ''): NetworkInfo {
  const forward = /<forward\b[^>]*>/.exec(xml)?.[0];
  const kind = forward === undefined ? 'isolated' : (xmlAttr(forward, 'mode') ?? 'nat');
  const bridgeTag = /<bridge\b[^>]*>/.exec(xml)?.[0];
  let net: Ipv4Net | undefined;
  let gateway: string | undefined;
  let dhcpRange: NetworkInfo['dhcpRange'];
  const hosts: DhcpHost[] = [];
  for (const block of xml.matchAll(/<ip\b([^>]*?)(\/>|>([\s\S]*?)<\/ip>)/g)) {
    const tag = `<ip ${block[1]}>`;
    const family = xmlAttr(tag, 'family');
    const address = xmlAttr(tag, 'address');
    if ((family && family !== 'ipv4') || !address || parseIpv4(address) === undefined) continue;
    const netmask = xmlAttr(tag, 'netmask');
    const prefix = netmask ? prefixFromNetmask(netmask) : Number(xmlAttr(tag, 'prefix') ?? '24');
    if (prefix === undefined || Number.isNaN(prefix)) continue;
    net = ipv4Net(parseIpv4(address)!, prefix);
    gateway = address;
    const body = block[3] ?? '';
    const range = /<range\b[^>]*>/.exec(body)?.[0];
    if (range) dhcpRange = { start: xmlAttr(range, 'start') ?? '', end: xmlAttr(range, 'end') ?? '' };
    for (const host of body.matchAll(/<host\b[^>]*>/g)) {
      hosts.push({ mac: xmlAttr(host[0], 'mac')?.toLowerCase(), name: xmlAttr(host[0], 'name'), ip: xmlAttr(host[0], 'ip') });
    }
    break;
  }
  return {
    name,
    kind,
    active: /^Active:\s+yes/m.test(info),
    autostart: /^Autostart:\s+yes/m.test(info),
    bridge: bridgeTag ? xmlAttr(bridgeTag, 'name') : /^Bridge:\s+(\S+)/m.exec(info)?.[1],
    net,
    gateway,
    dhcpRange,
    hosts,
  };
}

export async function networkNames(runner: Runner): Promise<string[]> {
  const r = await runner.run(virshCommand(runner, ['net-list', '--all', '--name'], false));
  return r.stdout
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean);
}

export async function networkInfo(runner: Runner, name: string): Promise<NetworkInfo | undefined> {
  const xml = await runner.run(virshCommand(runner, ['net-dumpxml', name], false), { allowFailure: true });
  if (xml.exitCode !== 0) {
    if (/network not found|no network with matching name/i.test(xml.stderr)) return undefined;
    await runner.run(virshCommand(runner, ['net-dumpxml', name], false)); // throws with the message
  }
  const info = await runner.run(virshCommand(runner, ['net-info', name], false));
  return parseNetworkXml(name, xml.stdout, info.stdout);
}

export async function listNetworks(runner: Runner): Promise<NetworkInfo[]> {
  const result: NetworkInfo[] = [];
  for (const name of await networkNames(runner)) {
    const info = await networkInfo(runner, name);
    if (info) result.push(info);
  }
  return result;
}

export interface NetCreateOptions {
  kind: NetKind;
  cidr: string | undefined;
  bridge: string | undefined;
}

/** The network XML ivm defines. */
export function networkXml(name: string, kind: NetKind, net: Ipv4Net | undefined, bridge: string | undefined): string {
  const lines = ['<network>', `  <name>${xmlEscape(name)}</name>`];
  if (kind === 'bridge') {
    lines.push("  <forward mode='bridge'/>", `  <bridge name='${xmlEscape(bridge!)}'/>`);
  } else {
    if (kind === 'nat') lines.push("  <forward mode='nat'/>");
    if (bridge) lines.push(`  <bridge name='${xmlEscape(bridge)}' stp='on' delay='0'/>`);
    lines.push(
      `  <ip address='${net!.gateway}' netmask='${net!.netmask}'>`,
      '    <dhcp>',
      `      <range start='${net!.dhcpStart}' end='${net!.dhcpEnd}'/>`,
      '    </dhcp>',
      '  </ip>',
    );
  }
  lines.push('</network>', '');
  return lines.join('\n');
}

/** Session mode has no libvirt networks of its own (making a bridge needs root). */
function refuseInSession(ctx: HostContext, what: string): void {
  if (ctx.settings.mode !== 'session') return;
  throw new RefusedError(
    `session mode (${ctx.settings.libvirtUri}): ivm does not ${what} libvirt networks; its VMs use user-mode networking or a host bridge`,
    'networks are made in system mode: LIBVIRT_URI=qemu:///system ivm net ... (see README.md, "Session mode")',
  );
}

export async function netCreate(ctx: HostContext, name: string, options: NetCreateOptions): Promise<void> {
  refuseInSession(ctx, 'create');
  validateNetworkName(name);
  const { kind, bridge } = options;
  if (!(NET_KINDS as readonly string[]).includes(kind)) throw new BadInputError(`bad --kind ${JSON.stringify(kind)}: one of ${NET_KINDS.join(', ')}`);
  if (bridge !== undefined && !BRIDGE.test(bridge)) throw new BadInputError(`bad --bridge ${JSON.stringify(bridge)}: an interface name of at most 15 letters, digits, _ . -`);
  let net: Ipv4Net | undefined;
  if (kind === 'bridge') {
    if (!bridge) throw new BadInputError('--kind bridge needs --bridge NAME: the host bridge to attach to (e.g. br0)');
    if (options.cidr !== undefined) throw new BadInputError("--cidr does not apply to --kind bridge: the LAN's own DHCP server hands out the addresses");
  } else {
    if (options.cidr === undefined) throw new BadInputError(`--kind ${kind} needs --cidr, e.g. --cidr 192.168.100.0/24`);
    net = parseCidr(options.cidr);
  }
  const existing = await listNetworks(ctx.runner);
  if (existing.some((n) => n.name === name)) throw new RefusedError(`libvirt network ${name} exists already`, `to replace it: ivm net destroy ${name}`);
  if (net) {
    const clash = existing.filter((n) => n.net && overlaps(n.net, net!));
    if (clash.length > 0) {
      throw new RefusedError(
        `${net.text} overlaps ${clash.map((n) => `network ${n.name} (${n.net!.text})`).join(', ')}`,
        'choose a CIDR that no libvirt network uses (`ivm net list`)',
      );
    }
  }
  if (bridge && kind !== 'bridge' && existing.some((n) => n.bridge === bridge)) {
    throw new RefusedError(`bridge ${bridge} is used by network ${existing.find((n) => n.bridge === bridge)!.name}`);
  }
  const xml = networkXml(name, kind, net, bridge);
  // virsh reads the XML from a file: a temporary one (a dry run prints it as a here-document instead).
  const tmp = ctx.runner.dryRun ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-net-'));
  const xmlFile = tmp ? path.join(tmp, `${name}.xml`) : '/dev/stdin';
  if (tmp) {
    fs.chmodSync(tmp, 0o755);
    fs.writeFileSync(xmlFile, xml, { mode: 0o644 });
  }
  const steps: Step[] = [
    {
      kind: 'run',
      title: `define network ${name}`,
      command: { ...virshCommand(ctx.runner, ['net-define', xmlFile], true), ...(tmp ? {} : { input: xml }) },
      undo: virshCommand(ctx.runner, ['net-undefine', name], true),
    },
    { kind: 'run', title: `start network ${name}`, command: virshCommand(ctx.runner, ['net-start', name], true), undo: virshCommand(ctx.runner, ['net-destroy', name], true) },
    { kind: 'run', title: `autostart network ${name}`, command: virshCommand(ctx.runner, ['net-autostart', name], true) },
  ];
  try {
    await executePlan(ctx.runner, { title: `create network ${name}`, steps }, ctx.say);
  } finally {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  }
  if (ctx.runner.dryRun) return;
  const made = await networkInfo(ctx.runner, name);
  ctx.say(
    net
      ? `created ${kind} network ${name}: ${net.text}, gateway ${net.gateway}, DHCP ${net.dhcpStart}-${net.dhcpEnd}, netmask ${net.netmask}, bridge ${made?.bridge ?? '?'}`
      : `created bridge network ${name} on host bridge ${bridge}`,
  );
}

export interface NetListEntry {
  name: string;
  kind: string;
  cidr: string | null;
  gateway: string | null;
  dhcp: string | null;
  bridge: string | null;
  active: boolean;
  autostart: boolean;
}

export async function netList(ctx: HostContext): Promise<NetListEntry[]> {
  return (await listNetworks(ctx.runner)).map((n) => ({
    name: n.name,
    kind: n.kind,
    cidr: n.net?.text ?? null,
    gateway: n.gateway ?? null,
    dhcp: n.dhcpRange ? `${n.dhcpRange.start}-${n.dhcpRange.end}` : null,
    bridge: n.bridge ?? null,
    active: n.active,
    autostart: n.autostart,
  }));
}

/** Domains whose interfaces use the network (one domiflist per domain). */
async function domainsOn(runner: Runner, network: string): Promise<string[]> {
  const names = [...(await listDomains(runner)).keys()];
  const users: string[] = [];
  for (const domain of names) {
    const r = await runner.run(virshCommand(runner, ['domiflist', domain], false), { allowFailure: true });
    const uses = r.stdout.split('\n').some((line) => {
      const [, type, source] = line.trim().split(/\s+/);
      return type === 'network' && source === network;
    });
    if (uses) users.push(domain);
  }
  return users;
}

export async function netDestroy(ctx: HostContext, name: string, options: { force: boolean }): Promise<void> {
  refuseInSession(ctx, 'destroy');
  validateNetworkName(name);
  const info = await networkInfo(ctx.runner, name);
  if (!info) throw new BadInputError(`no libvirt network ${name} at ${ctx.settings.libvirtUri}`, 'see: ivm net list');
  const users = await domainsOn(ctx.runner, name);
  if (users.length > 0 && !options.force) {
    throw new RefusedError(`network ${name} is used by ${users.join(', ')}`, `destroy those VMs first, or cut them off: ivm net destroy --force ${name}`);
  }
  const steps: Step[] = [];
  if (info.active) steps.push({ kind: 'run', title: `stop network ${name}`, command: virshCommand(ctx.runner, ['net-destroy', name], true) });
  steps.push({ kind: 'run', title: `undefine network ${name}`, command: virshCommand(ctx.runner, ['net-undefine', name], true) });
  await executePlan(ctx.runner, { title: `destroy network ${name}`, steps }, ctx.say);
  if (!ctx.runner.dryRun) ctx.say(`destroyed network ${name}`);
}

/**
 * The step that makes the DHCP host reservation of a machine's static address (meta.nix ipAddress)
 * for its MAC, on its network: add it, change it, or nothing when it is there already. Its undo
 * puts the network back as it was (so a create that fails later leaves no reservation it made).
 * Refuses an address outside the network, the gateway, or one reserved for another MAC.
 */
export async function planReservation(
  runner: Runner,
  machine: { name: string; network: string | undefined; ipAddress: string | undefined },
  mac: string,
): Promise<{ outcome: 'none' | 'kept' | 'added' | 'changed'; step?: Step }> {
  if (machine.ipAddress === undefined || machine.network === undefined) return { outcome: 'none' };
  const info = await networkInfo(runner, machine.network);
  if (!info) throw new RefusedError(`${machine.name}: its network ${machine.network} does not exist`, `make it: ivm net create ${machine.network} --kind nat --cidr <cidr>`);
  if (!info.net || !info.dhcpRange) {
    throw new RefusedError(`${machine.name}: network ${machine.network} has no DHCP of its own, so ipAddress ${machine.ipAddress} cannot be reserved`);
  }
  const ip = machine.ipAddress;
  const net = info.net;
  if (!contains(net, ip) || ip === info.gateway || ip === net.text.split('/')[0] || ip === net.broadcast) {
    throw new RefusedError(`${machine.name}: ipAddress ${ip} is not a usable address of network ${machine.network} (${net.text}, gateway ${info.gateway})`);
  }
  const macLower = mac.toLowerCase();
  const other = info.hosts.find((h) => h.ip === ip && h.mac !== macLower);
  if (other) throw new RefusedError(`${machine.name}: ${ip} is reserved on ${machine.network} for ${other.name ?? other.mac}`);
  const mine = info.hosts.find((h) => h.mac === macLower);
  if (mine && mine.ip === ip && mine.name === machine.name) return { outcome: 'kept' };
  const hostXml = (host: DhcpHost) =>
    `<host mac='${host.mac}'${host.name !== undefined ? ` name='${xmlEscape(host.name)}'` : ''}${host.ip !== undefined ? ` ip='${host.ip}'` : ''}/>`;
  const wanted = hostXml({ mac: macLower, name: machine.name, ip });
  const where = info.active ? ['--live', '--config'] : ['--config'];
  const update = (verb: string, xml: string) => virshCommand(runner, ['net-update', machine.network!, verb, 'ip-dhcp-host', xml, ...where], true);
  return {
    outcome: mine ? 'changed' : 'added',
    step: {
      kind: 'run',
      title: `${machine.network}: DHCP reservation ${ip} for ${machine.name} (${macLower})`,
      command: update(mine ? 'modify' : 'add-last', wanted),
      undo: mine ? update('modify', hostXml(mine)) : update('delete', wanted),
    },
  };
}

/**
 * The steps that reserve a machine's static address by the MAC derived from its machine-id
 * (create's first step). None in session mode (user-mode networking has no libvirt DHCP), and
 * none when the machine-id is only planned (--dry-run before `ivm identity`): then it says so.
 */
export async function reservationSteps(ctx: Pick<HostContext, 'runner' | 'say' | 'settings'>, machine: Machine): Promise<Step[]> {
  const { ipAddress, network } = machine.meta;
  if (ipAddress === undefined || network === undefined) return [];
  if (ctx.settings.mode === 'session') {
    ctx.say(`${machine.name}: ipAddress ${ipAddress} is ignored in session mode (user-mode networking, no libvirt DHCP)`);
    return [];
  }
  if (!hasMachineId(machine.dir)) {
    ctx.say(`# would reserve ${ipAddress} on ${network} for ${machine.name} (by the MAC derived from its machine-id, not written yet)`);
    return [];
  }
  const { step } = await planReservation(ctx.runner, { name: machine.name, network, ipAddress }, macAddress(machineIdFrom(machine.dir)));
  return step ? [step] : [];
}

/** ivm net reserve: the reservation of a machine's ipAddress, made now. */
export async function reserveMachineAddress(ctx: Pick<HostContext, 'runner' | 'say' | 'settings'>, machine: Machine): Promise<void> {
  const steps = await reservationSteps(ctx, machine);
  if (steps.length === 0) return;
  await executePlan(ctx.runner, { title: `reserve ${machine.meta.ipAddress} for ${machine.name}`, steps }, ctx.say);
  if (!ctx.runner.dryRun) for (const step of steps) ctx.say(step.title);
}

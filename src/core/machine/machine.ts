// machines/<name>/ -> a validated Machine. meta.nix is evaluated with nix (never parsed by hand) and
// checked key by key; a mistake names the file and the key.
import path from 'node:path';
import { BadInputError } from '../../errors.ts';
import { evalJsonFile } from '../../host/nix.ts';
import type { Runner } from '../../host/runner.ts';
import { contains, formatIpv4, ipv4Net, parseIpv4 } from '../network/cidr.ts';
import { validateMachineName } from './names.ts';
import { machineNames, type Project } from './project.ts';
import { folderExists, regularFileExists } from '../safe-files.ts';

export const SYSTEMS = ['x86_64-linux', 'aarch64-linux'] as const;
export type System = (typeof SYSTEMS)[number];

export interface MachineMeta {
  system: System;
  /** MiB */
  memory: number;
  vcpus: number;
  /** qemu-img size of the /var disk, e.g. "20G" */
  varSize: string;
  /** Exactly one of network and bridge is set. */
  network: string | undefined;
  bridge: string | undefined;
  virtType: 'kvm' | 'qemu';
  /** A static IPv4 address on `network`: made a DHCP host reservation for the VM's MAC. */
  ipAddress: string | undefined;
  /**
   * A static address on `bridge` (`ipAddress = "192.168.1.50/24"`, `gateway`, `dns`): no DHCP
   * server of libvirt's is there, so the guest applies it at boot from the identity's network.conf.
   */
  staticNetwork?: { address: string; prefix: number; gateway: string | undefined; dns: string[] } | undefined;
  /** libvirt starts the VM when the host boots (`virsh autostart`); define, create and upgrade apply it. */
  autostart: boolean;
}

export interface Machine {
  name: string;
  dir: string;
  metaFile: string;
  meta: MachineMeta;
}

const DEFAULTS = { memory: 2048, vcpus: 2, varSize: '20G', virtType: 'kvm' as const, autostart: false };
const KNOWN_KEYS = ['system', 'memory', 'vcpus', 'varSize', 'network', 'bridge', 'virtType', 'ipAddress', 'gateway', 'dns', 'autostart'];
const SIZE = /^([1-9][0-9]*)([KMGT]?)$/;
const MIN_VAR_BYTES = 64 * 1024 * 1024;

export function sizeInBytes(size: string): number {
  const match = SIZE.exec(size);
  if (!match) return Number.NaN;
  const power = { '': 0, K: 1, M: 2, G: 3, T: 4 }[match[2] as '' | 'K' | 'M' | 'G' | 'T'];
  return Number(match[1]) * 1024 ** power;
}

/** Checks the JSON that meta.nix evaluated to. Throws BadInputError naming the file and the key. */
export function validateMeta(file: string, value: unknown): MachineMeta {
  const fail = (what: string): never => {
    throw new BadInputError(`${file}: ${what}`, `meta.nix keys: ${KNOWN_KEYS.join(', ')} (see README.md, "Machines")`);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('must evaluate to an attribute set');
  const meta = value as Record<string, unknown>;
  const unknown = Object.keys(meta).filter((key) => !KNOWN_KEYS.includes(key));
  if (unknown.length > 0) fail(`unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`);

  const system = meta.system;
  if (system === undefined) fail('`system` is required (e.g. "x86_64-linux")');
  if (typeof system !== 'string' || !(SYSTEMS as readonly string[]).includes(system)) {
    fail(`\`system\` must be one of ${SYSTEMS.join(', ')}, not ${JSON.stringify(system)}`);
  }
  const positiveInt = (key: string, fallback: number): number => {
    const v = meta[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) fail(`\`${key}\` must be a positive integer, not ${JSON.stringify(v)}`);
    return v as number;
  };
  const name = (key: string): string | undefined => {
    const v = meta[key];
    if (v === undefined) return undefined;
    if (typeof v !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v)) fail(`\`${key}\` must be a libvirt ${key} name, not ${JSON.stringify(v)}`);
    return v as string;
  };
  const memory = positiveInt('memory', DEFAULTS.memory);
  const vcpus = positiveInt('vcpus', DEFAULTS.vcpus);
  const varSize = meta.varSize ?? DEFAULTS.varSize;
  if (typeof varSize !== 'string' || !SIZE.test(varSize)) fail(`\`varSize\` must be a size like "20G" or "512M", not ${JSON.stringify(varSize)}`);
  if (sizeInBytes(varSize as string) < MIN_VAR_BYTES) fail(`\`varSize\` must be at least 64M, not ${JSON.stringify(varSize)}`);
  const virtType = meta.virtType ?? DEFAULTS.virtType;
  if (virtType !== 'kvm' && virtType !== 'qemu') fail(`\`virtType\` must be "kvm" or "qemu" (TCG, where KVM is unusable), not ${JSON.stringify(virtType)}`);
  const autostart = meta.autostart ?? DEFAULTS.autostart;
  if (typeof autostart !== 'boolean') fail(`\`autostart\` must be true or false (start the VM when the host boots), not ${JSON.stringify(autostart)}`);
  const bridge = name('bridge');
  const network = name('network');
  if (bridge !== undefined && network !== undefined) fail('set `network` or `bridge`, not both');
  const ipAddress = meta.ipAddress;
  let staticNetwork: MachineMeta['staticNetwork'];
  if (bridge === undefined) {
    if (ipAddress !== undefined && (typeof ipAddress !== 'string' || parseIpv4(ipAddress) === undefined)) {
      fail(`\`ipAddress\` must be an IPv4 address like "192.168.100.10", not ${JSON.stringify(ipAddress)}`);
    }
    for (const key of ['gateway', 'dns']) {
      if (meta[key] !== undefined) fail(`\`${key}\` is for a static address on a \`bridge\`; on a libvirt network its DHCP server gives it`);
    }
  } else if (ipAddress !== undefined) {
    staticNetwork = staticAddress(meta, fail);
  } else if (meta.gateway !== undefined || meta.dns !== undefined) {
    fail('`gateway` and `dns` go with a static `ipAddress = "ADDRESS/PREFIX"` on the bridge');
  }

  return {
    system: system as System,
    memory,
    vcpus,
    varSize: varSize as string,
    network: bridge === undefined ? (network ?? 'default') : undefined,
    bridge,
    virtType: virtType as 'kvm' | 'qemu',
    ipAddress: bridge === undefined ? (ipAddress as string | undefined) : undefined,
    staticNetwork,
    autostart: autostart as boolean,
  };
}

/** ipAddress "a.b.c.d/p" with gateway (inside the prefix) and dns on a bridge, checked. */
function staticAddress(meta: Record<string, unknown>, fail: (what: string) => never): NonNullable<MachineMeta['staticNetwork']> {
  const text = meta.ipAddress;
  const match = typeof text === 'string' ? /^([0-9.]+)\/([0-9]{1,2})$/.exec(text) : null;
  const address = match ? parseIpv4(match[1]!) : undefined;
  const prefix = match ? Number(match[2]) : Number.NaN;
  if (!match || address === undefined || !(prefix >= 1 && prefix <= 32)) {
    fail(`with \`bridge\`, \`ipAddress\` is the VM's static address with its prefix, like "192.168.1.50/24", not ${JSON.stringify(text)}`);
  }
  const net = ipv4Net(address!, prefix);
  if (prefix < 31 && (address === net.network || formatIpv4(address!) === net.broadcast)) {
    fail(`\`ipAddress\` ${String(text)} is the network's ${address === net.network ? 'own address' : 'broadcast address'}, not a host's`);
  }
  const gateway = meta.gateway;
  if (gateway !== undefined) {
    if (typeof gateway !== 'string' || parseIpv4(gateway) === undefined) fail(`\`gateway\` must be an IPv4 address, not ${JSON.stringify(gateway)}`);
    // A /32 (some hosting providers) reaches its gateway on-link, outside the prefix.
    if (prefix < 32 && !contains(net, gateway as string)) fail(`\`gateway\` ${String(gateway)} is outside ${net.text}, the prefix of \`ipAddress\` ${String(text)}: the VM could not reach it`);
    if (gateway === match![1]) fail('`gateway` is the VM\'s own address');
    if (prefix < 31 && (parseIpv4(gateway as string) === net.network || gateway === net.broadcast)) {
      fail(`\`gateway\` ${String(gateway)} is the network's ${parseIpv4(gateway as string) === net.network ? 'own address' : 'broadcast address'}, not a host's`);
    }
  }
  const dns = meta.dns ?? [];
  if (!Array.isArray(dns) || !dns.every((d) => typeof d === 'string' && parseIpv4(d) !== undefined)) {
    fail(`\`dns\` must be a list of IPv4 addresses like [ "192.168.1.1" ], not ${JSON.stringify(meta.dns)}`);
  }
  return { address: match![1]!, prefix, gateway: gateway as string | undefined, dns: dns as string[] };
}

/** The identity file network.conf (format: docs/flake.md, "Static addresses") of a static bridge address. */
export function networkConf(staticNetwork: NonNullable<MachineMeta['staticNetwork']>): string {
  const lines = ['# written by ivm from meta.nix (ipAddress, gateway, dns)', `ADDRESS=${staticNetwork.address}/${staticNetwork.prefix}`];
  if (staticNetwork.gateway) lines.push(`GATEWAY=${staticNetwork.gateway}`);
  if (staticNetwork.dns.length > 0) lines.push(`DNS=${staticNetwork.dns.join(' ')}`);
  return `${lines.join('\n')}\n`;
}

/** The folder of a machine, after checking the name; throws when there is no such machine. */
export function machineDir(project: Project, name: string): string {
  validateMachineName(name);
  const dir = path.join(project.machinesDir, name);
  // machines/ and machines/NAME are real folders (a link is refused: ivm reads and writes in them).
  const present = folderExists(project.machinesDir) && folderExists(dir) && regularFileExists(path.join(dir, 'meta.nix'));
  if (!present) {
    const known = machineNames(project);
    throw new BadInputError(
      `unknown machine ${JSON.stringify(name)}: ${path.join(dir, 'meta.nix')} does not exist`,
      known.length > 0 ? `machines here: ${known.join(', ')}` : `create ${path.join(project.machinesDir, name)}/meta.nix and default.nix`,
    );
  }
  return dir;
}

export async function loadMachine(runner: Runner, project: Project, name: string): Promise<Machine> {
  const dir = machineDir(project, name);
  const metaFile = path.join(dir, 'meta.nix');
  const meta = validateMeta(metaFile, await evalJsonFile(runner, metaFile));
  return { name, dir, metaFile, meta };
}

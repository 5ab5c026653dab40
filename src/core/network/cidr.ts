// IPv4 networks for `ivm net`: parsing a CIDR strictly, the gateway (.1), the DHCP range (.2 to the
// last usable address), the netmask, overlaps and membership.
import { BadInputError } from '../../errors.ts';

export interface Ipv4Net {
  /** The network address, as a 32-bit unsigned number. */
  network: number;
  prefix: number;
  /** "a.b.c.d/p" */
  text: string;
  netmask: string;
  gateway: string;
  dhcpStart: string;
  dhcpEnd: string;
  broadcast: string;
}

export function parseIpv4(text: string): number | undefined {
  const parts = text.split('.');
  if (parts.length !== 4 || !parts.every((p) => /^(0|[1-9][0-9]{0,2})$/.test(p) && Number(p) <= 255)) return undefined;
  return parts.reduce((n, p) => n * 256 + Number(p), 0);
}

export function formatIpv4(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff - (2 ** (32 - prefix) - 1)) >>> 0;
}

export function prefixFromNetmask(netmask: string): number | undefined {
  const n = parseIpv4(netmask);
  if (n === undefined) return undefined;
  for (let prefix = 0; prefix <= 32; prefix++) if (maskOf(prefix) === n) return prefix;
  return undefined;
}

/** A network from its address and prefix (host bits cleared). */
export function ipv4Net(address: number, prefix: number): Ipv4Net {
  const size = 2 ** (32 - prefix);
  const network = address - (address % size);
  const last = network + size - 1;
  return {
    network,
    prefix,
    text: `${formatIpv4(network)}/${prefix}`,
    netmask: formatIpv4(maskOf(prefix)),
    gateway: formatIpv4(network + 1),
    dhcpStart: formatIpv4(network + 2),
    dhcpEnd: formatIpv4(last - 1),
    broadcast: formatIpv4(last),
  };
}

/** Parses "a.b.c.d/p" for a network ivm can make: prefix 8 to 30, host bits zero. BadInputError otherwise. */
export function parseCidr(text: string): Ipv4Net {
  const match = /^([0-9.]+)\/([0-9]{1,2})$/.exec(text.trim());
  const address = match ? parseIpv4(match[1]!) : undefined;
  const prefix = match ? Number(match[2]) : Number.NaN;
  if (!match || address === undefined || !(prefix >= 0 && prefix <= 32)) {
    throw new BadInputError(`bad CIDR ${JSON.stringify(text)}: expected an IPv4 network like 192.168.100.0/24`);
  }
  if (prefix < 8 || prefix > 30) {
    throw new BadInputError(`bad CIDR ${text}: the prefix must be 8 to 30 (a gateway, at least one DHCP address and a broadcast address)`);
  }
  const net = ipv4Net(address, prefix);
  if (net.network !== address) throw new BadInputError(`bad CIDR ${text}: host bits are set`, `did you mean ${net.text}?`);
  const special = SPECIAL.find((r) => overlaps(r.net, net));
  if (special) {
    throw new BadInputError(`bad CIDR ${text}: it overlaps ${special.net.text} (${special.what})`, 'use a private range: 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16');
  }
  return net;
}

/** Ranges no VM network may use. */
const SPECIAL = [
  { net: ipv4Net(0, 8), what: '"this network"' },
  { net: ipv4Net(127 * 2 ** 24, 8), what: 'loopback' },
  { net: ipv4Net((169 * 256 + 254) * 2 ** 16, 16), what: 'link-local' },
  { net: ipv4Net(224 * 2 ** 24, 3), what: 'multicast and reserved' },
];

export function overlaps(a: Ipv4Net, b: Ipv4Net): boolean {
  const aEnd = a.network + 2 ** (32 - a.prefix) - 1;
  const bEnd = b.network + 2 ** (32 - b.prefix) - 1;
  return a.network <= bEnd && b.network <= aEnd;
}

export function contains(net: Ipv4Net, address: string): boolean {
  const n = parseIpv4(address);
  return n !== undefined && n >= net.network && n < net.network + 2 ** (32 - net.prefix);
}

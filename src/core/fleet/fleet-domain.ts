// What a domain definition says, in the terms meta.nix sets: the few fields `ivm plan` compares
// between the XML ivm renders now, the libvirt/NAME.xml it wrote last, libvirt's persistent
// definition (`virsh dumpxml --inactive`) and, for a running VM, what it runs with (`virsh dumpxml`).
// libvirt adds much to a definition (addresses, controllers, aliases, defaults), so whole documents
// are never compared with libvirt's; only these fields, read the same way from each.
import { virshCommand } from '../../host/virsh.ts';
import type { Runner } from '../../host/runner.ts';

export interface DomainFacts {
  /** <domain type=...>: kvm or qemu. */
  type: string;
  memoryKiB: number | undefined;
  vcpus: number | undefined;
  /** "network default", "bridge br0", "user". */
  interface: string;
  mac: string;
  /** "vda /path/to/boot.qcow2", one per disk. */
  disks: string[];
  /** The graphics types (none in ivm's own XML). */
  graphics: string[];
}

/** The XML entities handlebars and libvirt write, back to their characters. */
function unescape(text: string): string {
  return text
    .replace(/&#x([0-9a-fA-F]+);/g, (_, hex: string) => String.fromCodePoint(Number.parseInt(hex, 16)))
    .replace(/&#([0-9]+);/g, (_, dec: string) => String.fromCodePoint(Number(dec)))
    .replace(/&(lt|gt|quot|apos|amp);/g, (_, name: string) => ({ lt: '<', gt: '>', quot: '"', apos: "'", amp: '&' })[name as 'lt']);
}

/** The value of attribute `name` in the start tag `tag` (either quote), unescaped. */
function attribute(tag: string, name: string): string | undefined {
  const match = new RegExp(`\\s${name}=(?:'([^']*)'|"([^"]*)")`).exec(tag);
  return match ? unescape(match[1] ?? match[2] ?? '') : undefined;
}

const UNIT_KIB: Record<string, number> = { b: 1 / 1024, bytes: 1 / 1024, KB: 1000 / 1024, k: 1, KiB: 1, MB: 1e6 / 1024, M: 1024, MiB: 1024, GB: 1e9 / 1024, G: 1024 ** 2, GiB: 1024 ** 2, TB: 1e12 / 1024, T: 1024 ** 3, TiB: 1024 ** 3 };

/** Reads the compared fields from a domain XML document (ivm's or libvirt's). */
export function domainFacts(xml: string): DomainFacts {
  // Comments hold no settings (ivm's template says why it asks for firmware without Secure Boot).
  const text = xml.replace(/<!--[\s\S]*?-->/g, '');
  const domainTag = /<domain\b[^>]*>/.exec(text)?.[0] ?? '';
  const memory = /<memory\b([^>]*)>\s*([0-9]+)\s*<\/memory>/.exec(text);
  const unit = memory ? (attribute(memory[1] ?? '', 'unit') ?? 'KiB') : 'KiB';
  const vcpu = /<vcpu\b[^>]*>\s*([0-9]+)\s*<\/vcpu>/.exec(text);
  const iface = /<interface\b[^>]*>[\s\S]*?<\/interface>/.exec(text)?.[0] ?? '';
  const ifaceType = attribute(/<interface\b[^>]*>/.exec(iface)?.[0] ?? '', 'type') ?? '';
  const source = /<source\b[^>]*>/.exec(iface)?.[0] ?? '';
  const via = ifaceType === 'network' ? attribute(source, 'network') : ifaceType === 'bridge' ? attribute(source, 'bridge') : undefined;
  const disks = [...text.matchAll(/<disk\b[^>]*>[\s\S]*?<\/disk>/g)].map((match) => {
    const block = match[0];
    // The disk's own <source> comes before a <backingStore> (whose <source> is its backing file's).
    const file = attribute(/<source\b[^>]*>/.exec(block)?.[0] ?? '', 'file') ?? '';
    const dev = attribute(/<target\b[^>]*>/.exec(block)?.[0] ?? '', 'dev') ?? '';
    return `${dev} ${file}`;
  });
  return {
    type: attribute(domainTag, 'type') ?? '',
    memoryKiB: memory ? Math.round(Number(memory[2]) * (UNIT_KIB[unit] ?? Number.NaN)) : undefined,
    vcpus: vcpu ? Number(vcpu[1]) : undefined,
    interface: [ifaceType, via].filter(Boolean).join(' '),
    mac: attribute(/<mac\b[^>]*>/.exec(iface)?.[0] ?? '', 'address')?.toLowerCase() ?? '',
    disks: disks.sort(),
    graphics: [...text.matchAll(/<graphics\b[^>]*>/g)].map((match) => attribute(match[0], 'type') ?? '').sort(),
  };
}

const mib = (kib: number | undefined) => (kib === undefined ? 'none' : kib % 1024 === 0 ? `${kib / 1024}` : `${(kib / 1024).toFixed(1)}`);
const listed = (items: string[]) => (items.length ? items.join(', ') : 'none');

/** What differs between two definitions, as "memory 512 -> 1024 MiB", ...; empty when the fields agree. */
export function factChanges(from: DomainFacts, to: DomainFacts): string[] {
  const changes: string[] = [];
  if (from.memoryKiB !== to.memoryKiB) changes.push(`memory ${mib(from.memoryKiB)} -> ${mib(to.memoryKiB)} MiB`);
  if (from.vcpus !== to.vcpus) changes.push(`vcpus ${from.vcpus ?? 'none'} -> ${to.vcpus ?? 'none'}`);
  if (from.interface !== to.interface) changes.push(`network ${from.interface || 'none'} -> ${to.interface || 'none'}`);
  if (from.type !== to.type) changes.push(`virtType ${from.type || 'none'} -> ${to.type || 'none'}`);
  if (from.graphics.join() !== to.graphics.join()) changes.push(`graphics ${listed(from.graphics)} -> ${listed(to.graphics)}`);
  if (from.mac !== to.mac) changes.push(`MAC ${from.mac || 'none'} -> ${to.mac || 'none'}`);
  if (from.disks.join('\n') !== to.disks.join('\n')) changes.push(`disks ${listed(from.disks)} -> ${listed(to.disks)}`);
  return changes;
}

/** `virsh dumpxml [--inactive] NAME` (a query): libvirt's persistent definition, or what the VM runs with. */
export async function libvirtXml(runner: Runner, name: string, which: 'persistent' | 'live'): Promise<string> {
  const result = await runner.run(virshCommand(runner, ['dumpxml', ...(which === 'persistent' ? ['--inactive'] : []), name], false));
  return result.stdout;
}

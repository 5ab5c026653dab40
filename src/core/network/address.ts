// ivm ip: a VM's IPv4 address, from the guest agent, then the DHCP leases of its libvirt network,
// then the host's ARP table (through libvirt), polled until found or a timeout. Every source is
// matched by the VM's MAC, which derives from its machine-id (stable across redefinitions).
import fs from 'node:fs';
import path from 'node:path';
import { IvmError, RefusedError } from '../../errors.ts';
import type { Runner } from '../../host/runner.ts';
import { domainState, virshCommand } from '../../host/virsh.ts';
import type { HostContext } from '../host/host-context.ts';
import { requireProject } from '../host/host-context.ts';
import { hasMachineId, machineIdFrom, macAddress } from '../identity/identity.ts';
import { loadMachine, type Machine } from '../machine/machine.ts';
import { ownDomain, sleep } from '../vm/running.ts';

export type AddressSource = 'agent' | 'lease' | 'arp';

export interface FoundAddress {
  address: string;
  source: AddressSource;
  /** Which source answered, in words (shown with --verbose). */
  detail: string;
}

export interface Target {
  machine: Machine;
  mac: string;
}

export async function loadTarget(ctx: HostContext, name: string): Promise<Target> {
  const project = requireProject(ctx);
  const machine = await loadMachine(ctx.runner, project, name);
  if (!hasMachineId(machine.dir)) {
    throw new RefusedError(`${name} has no identity yet (machines/${name}/machine-id), so no MAC address`, `run: ivm create ${name}`);
  }
  const machineId = machineIdFrom(machine.dir);
  // A domain of that name must be this machine's (its uuid): ivm asks nothing of another's.
  await ownDomain({ ...ctx, project }, name, machineId);
  return { machine, mac: macAddress(machineId) };
}

/** Rows of `virsh domifaddr`: the MAC column is "-" on an interface's further addresses. */
export function parseDomifaddr(text: string, mac: string): string[] {
  const found: string[] = [];
  let current = '';
  for (const line of text.split('\n').slice(2)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 4) continue;
    if (cols[1] !== '-') current = cols[1]!.toLowerCase();
    if (current === mac.toLowerCase() && cols[2] === 'ipv4') {
      const address = cols[3]!.split('/')[0]!;
      if (!address.startsWith('127.')) found.push(address);
    }
  }
  return found;
}

export interface Lease {
  expiry: string;
  mac: string;
  address: string;
  hostname: string;
}

/** Rows of `virsh net-dhcp-leases`: Expiry Time (2 words), MAC, Protocol, IP/prefix, Hostname, Client ID. */
export function parseLeases(text: string): Lease[] {
  const leases: Lease[] = [];
  for (const line of text.split('\n').slice(2)) {
    const cols = line.trim().split(/\s+/);
    if (cols.length < 6 || cols[3] !== 'ipv4') continue;
    leases.push({ expiry: `${cols[0]} ${cols[1]}`, mac: cols[2]!.toLowerCase(), address: cols[4]!.split('/')[0]!, hostname: cols[5]! });
  }
  return leases;
}

async function fromDomifaddr(runner: Runner, name: string, mac: string, source: 'agent' | 'arp'): Promise<string | undefined> {
  const r = await runner.run(virshCommand(runner, ['domifaddr', name, '--source', source], false), { allowFailure: true });
  return r.exitCode === 0 ? parseDomifaddr(r.stdout, mac)[0] : undefined;
}

async function fromLeases(runner: Runner, network: string, mac: string): Promise<Lease | undefined> {
  const r = await runner.run(virshCommand(runner, ['net-dhcp-leases', network, '--mac', mac], false), { allowFailure: true });
  if (r.exitCode !== 0) return undefined;
  const leases = parseLeases(r.stdout).filter((l) => l.mac === mac.toLowerCase());
  return leases.sort((a, b) => (a.expiry < b.expiry ? 1 : -1))[0];
}

/** One round over the sources, in order. */
export async function lookupOnce(ctx: HostContext, target: Target, running: boolean): Promise<FoundAddress | undefined> {
  const { runner, settings } = ctx;
  const { machine, mac } = target;
  const userNet = settings.mode === 'session' && machine.meta.bridge === undefined;
  if (running) {
    const agent = await fromDomifaddr(runner, machine.name, mac, 'agent');
    if (agent) return { address: agent, source: 'agent', detail: `the guest agent (virsh domifaddr --source agent), interface ${mac}` };
  }
  if (machine.meta.network && !userNet) {
    const lease = await fromLeases(runner, machine.meta.network, mac);
    if (lease) return { address: lease.address, source: 'lease', detail: `the DHCP leases of network ${machine.meta.network} (${mac}, expires ${lease.expiry})` };
  }
  if (running && !userNet) {
    const arp = await fromDomifaddr(runner, machine.name, mac, 'arp');
    if (arp) return { address: arp, source: 'arp', detail: `the host's ARP table (virsh domifaddr --source arp), ${mac}` };
  }
  return undefined;
}


/** Polls the sources until an address turns up or waitSeconds pass (0: one round). */
export async function findAddress(ctx: HostContext, target: Target, waitSeconds: number): Promise<FoundAddress> {
  const name = target.machine.name;
  const deadline = Date.now() + waitSeconds * 1000;
  for (;;) {
    const state = await domainState(ctx.runner, name);
    if (state === undefined) throw new RefusedError(`${name} is not defined in libvirt (${ctx.settings.libvirtUri})`, `create it: ivm create ${name} --start`);
    const running = state === 'running';
    const found = await lookupOnce(ctx, target, running);
    if (found) return found;
    if (Date.now() >= deadline) {
      const sources = running ? 'the guest agent, the DHCP leases, the ARP table' : 'the DHCP leases (it is not running)';
      if (!running) throw new RefusedError(`${name} is ${state} and has no DHCP lease`, `start it: ivm start ${name}, then: ivm ip --wait 60 ${name}`);
      throw new IvmError(`no address for ${name} (${target.mac}) from ${sources}${waitSeconds > 0 ? ` within ${waitSeconds} s` : ''}`, {
        hint: `it may still be booting: ivm ip --wait 60 ${name}`,
      });
    }
    await sleep(1000);
  }
}

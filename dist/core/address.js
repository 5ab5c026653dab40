import { IvmError, RefusedError } from "../errors.js";
import { domainState, virshCommand } from "../host/virsh.js";
import { requireProject } from "./host-context.js";
import { hasMachineId, machineIdFrom, macAddress } from "./identity.js";
import { loadMachine } from "./machine.js";
import { ownDomain, sleep } from "./running.js";
export async function loadTarget(ctx, name) {
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
export function parseDomifaddr(text, mac) {
    const found = [];
    let current = '';
    for (const line of text.split('\n').slice(2)) {
        const cols = line.trim().split(/\s+/);
        if (cols.length < 4)
            continue;
        if (cols[1] !== '-')
            current = cols[1].toLowerCase();
        if (current === mac.toLowerCase() && cols[2] === 'ipv4') {
            const address = cols[3].split('/')[0];
            if (!address.startsWith('127.'))
                found.push(address);
        }
    }
    return found;
}
/** Rows of `virsh net-dhcp-leases`: Expiry Time (2 words), MAC, Protocol, IP/prefix, Hostname, Client ID. */
export function parseLeases(text) {
    const leases = [];
    for (const line of text.split('\n').slice(2)) {
        const cols = line.trim().split(/\s+/);
        if (cols.length < 6 || cols[3] !== 'ipv4')
            continue;
        leases.push({ expiry: `${cols[0]} ${cols[1]}`, mac: cols[2].toLowerCase(), address: cols[4].split('/')[0], hostname: cols[5] });
    }
    return leases;
}
async function fromDomifaddr(runner, name, mac, source) {
    const r = await runner.run(virshCommand(runner, ['domifaddr', name, '--source', source], false), { allowFailure: true });
    return r.exitCode === 0 ? parseDomifaddr(r.stdout, mac)[0] : undefined;
}
async function fromLeases(runner, network, mac) {
    const r = await runner.run(virshCommand(runner, ['net-dhcp-leases', network, '--mac', mac], false), { allowFailure: true });
    if (r.exitCode !== 0)
        return undefined;
    const leases = parseLeases(r.stdout).filter((l) => l.mac === mac.toLowerCase());
    return leases.sort((a, b) => (a.expiry < b.expiry ? 1 : -1))[0];
}
/** One round over the sources, in order. */
export async function lookupOnce(ctx, target, running) {
    const { runner, settings } = ctx;
    const { machine, mac } = target;
    const userNet = settings.mode === 'session' && machine.meta.bridge === undefined;
    if (running) {
        const agent = await fromDomifaddr(runner, machine.name, mac, 'agent');
        if (agent)
            return { address: agent, source: 'agent', detail: `the guest agent (virsh domifaddr --source agent), interface ${mac}` };
    }
    if (machine.meta.network && !userNet) {
        const lease = await fromLeases(runner, machine.meta.network, mac);
        if (lease)
            return { address: lease.address, source: 'lease', detail: `the DHCP leases of network ${machine.meta.network} (${mac}, expires ${lease.expiry})` };
    }
    if (running && !userNet) {
        const arp = await fromDomifaddr(runner, machine.name, mac, 'arp');
        if (arp)
            return { address: arp, source: 'arp', detail: `the host's ARP table (virsh domifaddr --source arp), ${mac}` };
    }
    return undefined;
}
/** Polls the sources until an address turns up or waitSeconds pass (0: one round). */
export async function findAddress(ctx, target, waitSeconds) {
    const name = target.machine.name;
    const deadline = Date.now() + waitSeconds * 1000;
    for (;;) {
        const state = await domainState(ctx.runner, name);
        if (state === undefined)
            throw new RefusedError(`${name} is not defined in libvirt (${ctx.settings.libvirtUri})`, `create it: ivm create ${name} --start`);
        const running = state === 'running';
        const found = await lookupOnce(ctx, target, running);
        if (found)
            return found;
        if (Date.now() >= deadline) {
            const sources = running ? 'the guest agent, the DHCP leases, the ARP table' : 'the DHCP leases (it is not running)';
            if (!running)
                throw new RefusedError(`${name} is ${state} and has no DHCP lease`, `start it: ivm start ${name}, then: ivm ip --wait 60 ${name}`);
            throw new IvmError(`no address for ${name} (${target.mac}) from ${sources}${waitSeconds > 0 ? ` within ${waitSeconds} s` : ''}`, {
                hint: `it may still be booting: ivm ip --wait 60 ${name}`,
            });
        }
        await sleep(1000);
    }
}

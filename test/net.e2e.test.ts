// ivm net in the test libvirtd's namespace: nat and isolated networks created with the real virsh,
// their XML checked, dnsmasq answering DNS on the gateway; bad CIDRs and overlaps refused; list,
// DHCP reservations from meta.nix, destroy.
import { execa } from 'execa';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirt, TEST_RUN_DIR, virsh } from './support/libvirt.ts';
import { makeTestProject, type TestProject } from './support/ivm.ts';
import { macAddress } from '../src/core/identity/identity.ts';

const NAT = 'ivmt-nat';
const ISO = 'ivmt-iso';
const BR = 'ivmt-br';

async function removeNetwork(name: string): Promise<void> {
  await virsh(['net-destroy', name]).catch(() => undefined);
  await virsh(['net-undefine', name]).catch(() => undefined);
}

/** The pid of the libvirtd the tests talk to (its network namespace holds the bridges). */
async function libvirtdPid(): Promise<string> {
  try {
    return fs.readFileSync(`${TEST_RUN_DIR}/libvirtd.pid`, 'utf8').trim();
  } catch {
    return (await execa('pidof', ['-s', 'libvirtd'])).stdout.trim();
  }
}

/** Sends one DNS query (A ivm-probe.) over UDP to server:53 from libvirtd's namespace; resolves to the reply's rcode. */
async function dnsQuery(server: string): Promise<number> {
  const script = `
const dgram = require('node:dgram');
const s = dgram.createSocket('udp4');
const id = 0x4956;
const name = Buffer.concat([Buffer.from([9]), Buffer.from('ivm-probe'), Buffer.from([0])]);
const q = Buffer.concat([Buffer.from([id >> 8, id & 255, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]), name, Buffer.from([0, 1, 0, 1])]);
const timer = setTimeout(() => { console.log('timeout'); process.exit(2); }, 5000);
s.on('message', (m) => { if (m.readUInt16BE(0) === id) { console.log('rcode=' + (m[3] & 15)); clearTimeout(timer); s.close(); } });
s.send(q, 53, process.argv[1]);`;
  const r = await execa('nsenter', ['-t', await libvirtdPid(), '-n', process.execPath, '-e', script, server], { reject: false });
  const match = /rcode=(\d+)/.exec(r.stdout);
  if (!match) throw new Error(`no DNS answer from ${server}: ${r.stdout} ${r.stderr}`);
  return Number(match[1]);
}

describe('ivm net', () => {
  let project: TestProject;

  beforeAll(async () => {
    await ensureLibvirt();
    for (const n of [NAT, ISO, BR]) await removeNetwork(n);
    project = await makeTestProject('ivm-net-');
  });

  afterAll(async () => {
    for (const n of [NAT, ISO, BR]) await removeNetwork(n);
    await project?.remove();
  });

  it('creates a nat network: gateway .1, DHCP .2 to the last usable address, netmask from the prefix; started and autostarted', async () => {
    const r = await project.ivm(['net', 'create', NAT, '--kind', 'nat', '--cidr', '192.168.213.0/24']);
    expect(r.stderr).not.toMatch(/^ivm: /m);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/created nat network ivmt-nat: 192\.168\.213\.0\/24, gateway 192\.168\.213\.1, DHCP 192\.168\.213\.2-192\.168\.213\.254, netmask 255\.255\.255\.0, bridge virbr\d+/);
    const xml = await virsh(['net-dumpxml', NAT]);
    expect(xml).toContain("<forward mode='nat'>");
    expect(xml).toContain("<ip address='192.168.213.1' netmask='255.255.255.0'>");
    expect(xml).toContain("<range start='192.168.213.2' end='192.168.213.254'");
    const info = await virsh(['net-info', NAT]);
    expect(info).toMatch(/^Active:\s+yes/m);
    expect(info).toMatch(/^Autostart:\s+yes/m);
  });

  it("dnsmasq answers on the nat network's gateway", async () => {
    expect(await dnsQuery('192.168.213.1')).toBeGreaterThanOrEqual(0);
  });

  it('creates an isolated network (no forward) with a /28', async () => {
    const r = await project.ivm(['net', 'create', ISO, '--kind', 'isolated', '--cidr', '192.168.214.16/28', '--bridge', 'ivmtbr-iso']);
    expect(r.exitCode, r.stderr).toBe(0);
    const xml = await virsh(['net-dumpxml', ISO]);
    expect(xml).not.toContain('<forward');
    expect(xml).toContain("<bridge name='ivmtbr-iso'");
    expect(xml).toContain("<ip address='192.168.214.17' netmask='255.255.255.240'>");
    expect(xml).toContain("<range start='192.168.214.18' end='192.168.214.30'");
    expect(await dnsQuery('192.168.214.17')).toBeGreaterThanOrEqual(0);
  });

  it('refuses overlapping CIDRs (exit 3) and bad CIDRs (exit 2), a taken name, and touches nothing', async () => {
    const overlap = await project.ivm(['net', 'create', 'ivmt-x', '--cidr', '192.168.213.128/25']);
    expect(overlap.exitCode).toBe(3);
    expect(overlap.stderr).toContain('ivm: 192.168.213.128/25 overlaps network ivmt-nat (192.168.213.0/24)');
    const wide = await project.ivm(['net', 'create', 'ivmt-x', '--cidr', '192.168.0.0/16']);
    expect(wide.exitCode).toBe(3);
    expect(wide.stderr).toMatch(/overlaps .*network ivmt-nat/);
    for (const [cidr, message] of [
      ['192.168.215.0/33', 'bad CIDR'],
      ['300.1.1.0/24', 'bad CIDR'],
      ['192.168.215.5/24', 'host bits are set'],
      ['192.168.215.0/31', 'the prefix must be 8 to 30'],
      ['fe80::/64', 'bad CIDR'],
      ['banana', 'bad CIDR'],
    ] as const) {
      const r = await project.ivm(['net', 'create', 'ivmt-x', '--cidr', cidr]);
      expect(r.exitCode, cidr).toBe(2);
      expect(r.stderr, cidr).toContain(message);
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    }
    const hint = await project.ivm(['net', 'create', 'ivmt-x', '--cidr', '192.168.215.5/24']);
    expect(hint.stderr).toContain('hint: did you mean 192.168.215.0/24?');
    const taken = await project.ivm(['net', 'create', NAT, '--cidr', '192.168.216.0/24']);
    expect(taken.exitCode).toBe(3);
    expect(taken.stderr).toContain('libvirt network ivmt-nat exists already');
    expect((await project.ivm(['net', 'create', 'ivmt-x', '--kind', 'nat'])).stderr).toContain('--kind nat needs --cidr');
    expect((await project.ivm(['net', 'create', 'ivmt-x', '--kind', 'mesh', '--cidr', '10.9.0.0/24'])).exitCode).toBe(2);
    expect((await project.ivm(['net', 'create', 'bad name', '--cidr', '10.9.0.0/24'])).stderr).toContain('bad network name');
    expect(await virsh(['net-list', '--all', '--name'])).not.toContain('ivmt-x');
  });

  it('bridge kind: attaches to a host bridge; --cidr does not apply', async () => {
    const withCidr = await project.ivm(['net', 'create', BR, '--kind', 'bridge', '--bridge', 'br-ivmt', '--cidr', '10.1.0.0/24']);
    expect(withCidr.exitCode).toBe(2);
    expect(withCidr.stderr).toContain('--cidr does not apply to --kind bridge');
    expect((await project.ivm(['net', 'create', BR, '--kind', 'bridge'])).stderr).toContain('--kind bridge needs --bridge NAME');
    const dry = await project.ivm(['--dry-run', 'net', 'create', BR, '--kind', 'bridge', '--bridge', 'br-ivmt']);
    expect(dry.exitCode).toBe(0);
    expect(dry.stdout).toContain("<forward mode='bridge'/>\n  <bridge name='br-ivmt'/>");
    expect(await virsh(['net-list', '--all', '--name'])).not.toContain(BR);
  });

  it('lists the networks with kind, CIDR, DHCP range and state (text and JSON)', async () => {
    const text = await project.ivm(['net', 'list']);
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toMatch(/^NAME\s+KIND\s+CIDR\s+DHCP\s+BRIDGE\s+STATE\s+AUTOSTART$/m);
    expect(text.stdout).toMatch(/^ivmt-nat\s+nat\s+192\.168\.213\.0\/24\s+192\.168\.213\.2-192\.168\.213\.254\s+virbr\d+\s+active\s+yes$/m);
    expect(text.stdout).toMatch(/^ivmt-iso\s+isolated\s+192\.168\.214\.16\/28\s+192\.168\.214\.18-192\.168\.214\.30\s+ivmtbr-iso\s+active\s+yes$/m);
    const json = JSON.parse((await project.ivm(['net', 'list', '--json'])).stdout) as { name: string; kind: string; cidr: string }[];
    expect(json.find((n) => n.name === ISO)).toMatchObject({ kind: 'isolated', cidr: '192.168.214.16/28', gateway: '192.168.214.17', active: true, autostart: true });
  });

  it("a machine's ipAddress becomes a DHCP host reservation for its MAC; checked against the network", async () => {
    project.addMachine('resv', `{ system = "x86_64-linux"; virtType = "qemu"; network = "${NAT}"; ipAddress = "192.168.213.50"; }\n`);
    expect((await project.ivm(['identity', 'resv'])).exitCode).toBe(0);
    const mac = macAddress(fs.readFileSync(`${project.root}/machines/resv/machine-id`, 'utf8').trim());
    const first = await project.ivm(['net', 'reserve', 'resv']);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stdout).toContain(`${NAT}: DHCP reservation 192.168.213.50 for resv (${mac})`);
    expect(await virsh(['net-dumpxml', NAT])).toContain(`<host mac='${mac}' name='resv' ip='192.168.213.50'/>`);
    const again = await project.ivm(['--verbose', 'net', 'reserve', 'resv']);
    expect(again.exitCode).toBe(0);
    expect(again.stderr).not.toContain('net-update');

    project.addMachine('resv', `{ system = "x86_64-linux"; virtType = "qemu"; network = "${NAT}"; ipAddress = "192.168.213.51"; }\n`);
    expect((await project.ivm(['net', 'reserve', 'resv'])).exitCode).toBe(0);
    const xml = await virsh(['net-dumpxml', NAT]);
    expect(xml).toContain(`<host mac='${mac}' name='resv' ip='192.168.213.51'/>`);
    expect(xml).not.toContain('192.168.213.50');

    project.addMachine('other', `{ system = "x86_64-linux"; network = "${NAT}"; ipAddress = "192.168.213.51"; }\n`);
    await project.ivm(['identity', 'other']);
    const clash = await project.ivm(['net', 'reserve', 'other']);
    expect(clash.exitCode).toBe(3);
    expect(clash.stderr).toContain('192.168.213.51 is reserved on ivmt-nat for resv');

    project.addMachine('other', `{ system = "x86_64-linux"; network = "${NAT}"; ipAddress = "192.168.214.20"; }\n`);
    const outside = await project.ivm(['net', 'reserve', 'other']);
    expect(outside.exitCode).toBe(3);
    expect(outside.stderr).toContain('ipAddress 192.168.214.20 is not a usable address of network ivmt-nat (192.168.213.0/24, gateway 192.168.213.1)');

    project.addMachine('other', `{ system = "x86_64-linux"; network = "${NAT}"; ipAddress = "192.168.213.300"; }\n`);
    const bad = await project.ivm(['net', 'reserve', 'other']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toContain('`ipAddress` must be an IPv4 address like "192.168.100.10", not "192.168.213.300"');
  });

  it('destroys networks; an unknown one is bad input', async () => {
    for (const name of [NAT, ISO]) {
      const r = await project.ivm(['net', 'destroy', name]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain(`destroyed network ${name}`);
    }
    const names = await virsh(['net-list', '--all', '--name']);
    expect(names).not.toContain(NAT);
    expect(names).not.toContain(ISO);
    const unknown = await project.ivm(['net', 'destroy', NAT]);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toContain(`no libvirt network ${NAT}`);
  });
});

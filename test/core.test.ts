// Core logic without processes: meta.nix validation, names, XML rendering and escaping, identity
// derivations. (The XML is also validated with virt-xml-validate here, a real tool.)
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderDomainXml } from '../src/core/domain-xml.ts';
import { domainUuid, macAddress, planIdentity, writeIdentity } from '../src/core/identity.ts';
import { sizeInBytes, validateMeta, type Machine } from '../src/core/machine.ts';
import { MACHINE_NAME, validateMachineName } from '../src/core/names.ts';
import { formatPrivateKey, generateKeyPair, parsePrivateKey } from '../src/core/openssh-key.ts';
import { projectAt } from '../src/core/project.ts';
import { initVarScript } from './support/var-disk.ts';
import { vmPaths } from '../src/core/vm-paths.ts';
import { BadInputError } from '../src/errors.ts';
import { readSettings } from '../src/host/settings.ts';

describe('meta.nix validation', () => {
  it('fills the defaults', () => {
    expect(validateMeta('m.nix', { system: 'x86_64-linux' })).toEqual({
      system: 'x86_64-linux',
      memory: 2048,
      vcpus: 2,
      varSize: '20G',
      network: 'default',
      bridge: undefined,
      virtType: 'kvm',
    });
  });
  it('takes a bridge instead of a network', () => {
    const meta = validateMeta('m.nix', { system: 'x86_64-linux', bridge: 'br0' });
    expect([meta.network, meta.bridge]).toEqual([undefined, 'br0']);
  });
  it.each([
    [{ system: 'x86_64-linux', vcpus: 1.5 }, /`vcpus` must be a positive integer/],
    [{ system: 'riscv64-linux' }, /`system` must be one of/],
    [{ system: 'x86_64-linux', varSize: '10M' }, /at least 64M/],
    [{ system: 'x86_64-linux', network: "de'fault" }, /`network` must be a libvirt network name/],
    [[1, 2], /must evaluate to an attribute set/],
  ])('rejects %j', (value, message) => {
    expect(() => validateMeta('/x/meta.nix', value)).toThrow(message);
  });
  it('computes sizes', () => {
    expect(sizeInBytes('20G')).toBe(20 * 1024 ** 3);
    expect(sizeInBytes('512')).toBe(512);
  });
});

describe('machine names (RFC 1123 labels)', () => {
  it.each(['web', 'a', 'db-1', 'web-1', 'a--b', 'a1', `a${'b'.repeat(62)}`, `a${'-'.repeat(61)}b`])('accepts %s', (name) => expect(MACHINE_NAME.test(name)).toBe(true));
  it.each(['', 'Web', '1a', 'a_b', 'a.b', 'web-', 'a-', '-a', `a${'b'.repeat(63)}`, `a${'-'.repeat(62)}b`, 'a\n', 'web-\n'])('refuses %j', (name) =>
    expect(MACHINE_NAME.test(name)).toBe(false),
  );
  it('says what a name is when it refuses one', () => {
    let error: unknown;
    try {
      validateMachineName('web-');
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(BadInputError);
    expect((error as BadInputError).message).toBe('invalid machine name "web-"');
    expect((error as BadInputError).hint).toMatch(/not ending in a dash, at most 63 characters/);
    expect(validateMachineName('a--b')).toBe('a--b');
  });
});

describe('identity', () => {
  it('derives a stable uuid and MAC from the machine-id', () => {
    const id = '0123456789abcdef0123456789abcdef';
    // Fixed values: a change here would give every existing VM a new uuid and MAC on its next define.
    expect(domainUuid(id)).toBe('18405d89-7e6b-40e9-86cf-6557f7f50c91');
    expect(macAddress(id)).toBe('52:54:00:a9:55:69');
    expect(domainUuid(id)).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(domainUuid(id)).not.toBe(domainUuid(id.replace('0', '1')));
    expect(macAddress(id)).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
  });

  it('writes an OpenSSH private key that ssh-keygen accepts and that parses back', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-key-'));
    const pair = generateKeyPair();
    const text = formatPrivateKey(pair, 'root@t');
    fs.writeFileSync(path.join(dir, 'k'), text, { mode: 0o600 });
    const { stdout } = await execa('ssh-keygen', ['-l', '-f', path.join(dir, 'k')]);
    expect(stdout).toMatch(/^256 SHA256:\S+ root@t \(ED25519\)$/);
    const parsed = parsePrivateKey(text, 'k');
    expect(Buffer.from(parsed.publicKey)).toEqual(Buffer.from(pair.publicKey));
    expect(parsed.comment).toBe('root@t');
    expect(() => parsePrivateKey('garbage', 'k')).toThrow(/not an unencrypted OpenSSH ed25519 private key/);
    fs.rmSync(dir, { recursive: true });
  });

  it('plans only the missing files, and derives .pub and known_hosts from an existing key', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-id-'));
    writeIdentity(planIdentity(dir, 'web').filter((w) => w.name === 'ssh_host_ed25519_key'));
    const plan = planIdentity(dir, 'web');
    expect(plan.map((w) => w.name).sort()).toEqual(['hostname', 'known_hosts', 'machine-id', 'ssh_host_ed25519_key.pub']);
    writeIdentity(plan);
    expect(planIdentity(dir, 'web')).toEqual([]);
    expect(() => writeIdentity(plan)).toThrow(/appeared while ivm was writing the identity/);
    fs.rmSync(dir, { recursive: true });
  });
});

describe('domain XML', () => {
  const settings = readSettings({ IVM_VM_DIR: "/srv/vm's & <images>" });
  const machine: Machine = {
    name: 'web',
    dir: '/x/machines/web',
    metaFile: '/x/machines/web/meta.nix',
    meta: validateMeta('m', { system: 'x86_64-linux', virtType: 'qemu', memory: 1024, vcpus: 1 }),
  };
  const paths = vmPaths(settings, projectAt('/x'), 'web');
  const id = '0123456789abcdef0123456789abcdef';

  it('escapes every value and passes virt-xml-validate', async () => {
    const xml = renderDomainXml(machine, id, paths, settings);
    expect(xml).toContain("<source file='/srv/vm&#x27;s &amp; &lt;images&gt;/web-boot.qcow2'/>");
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-xml-')), 'web.xml');
    fs.writeFileSync(file, xml);
    await execa('virt-xml-validate', [file, 'domain']);
  });

  it('keeps the name out of XML comments: a--b (a legal name) renders XML that passes virt-xml-validate', async () => {
    const dashed: Machine = { ...machine, name: 'a--b', dir: '/x/machines/a--b', metaFile: '/x/machines/a--b/meta.nix' };
    const xml = renderDomainXml(dashed, id, vmPaths(settings, projectAt('/x'), 'a--b'), settings);
    expect(xml).toContain('<name>a--b</name>');
    for (const comment of xml.match(/<!--[\s\S]*?-->/g) ?? []) expect(comment.slice(4, -3)).not.toContain('--');
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-xml-')), 'a--b.xml');
    fs.writeFileSync(file, xml);
    const validated = await execa('virt-xml-validate', [file, 'domain'], { reject: false });
    expect(validated.exitCode, validated.stderr).toBe(0);
  });

  it('has the shape the design asks for', () => {
    const xml = renderDomainXml(machine, id, paths, settings);
    expect(xml).toMatch(/<domain type='qemu'>/);
    expect(xml).toMatch(/machine='q35'/);
    expect(xml).toMatch(/<os firmware='efi'>[\s\S]*name='secure-boot'[\s\S]*<\/os>/);
    expect(xml).toMatch(/<disk type='file' device='disk'>\s*<driver name='qemu' type='qcow2'\/>\s*<source file='[^']*web-boot\.qcow2'\/>\s*<target dev='vda' bus='virtio'\/>\s*<readonly\/>/);
    expect(xml).toMatch(/<source file='[^']*web-var\.qcow2'\/>\s*<target dev='vdb' bus='virtio'\/>\s*<\/disk>/);
    expect(xml).toContain(`<uuid>${domainUuid(id)}</uuid>`);
    expect(xml).toContain(`<mac address='${macAddress(id)}'/>`);
    expect(xml).toContain("<source network='default'/>");
    expect(xml).toContain("name='org.qemu.guest_agent.0'");
    expect(xml).toContain("<rng model='virtio'>");
    expect(xml).not.toContain('host-passthrough');
  });

  it('names explicit OVMF files when OVMF_CODE and OVMF_VARS are set, and a bridge', () => {
    const explicit = readSettings({ OVMF_CODE: '/fw/CODE.fd', OVMF_VARS: '/fw/VARS.fd' });
    const bridged: Machine = { ...machine, meta: validateMeta('m', { system: 'x86_64-linux', bridge: 'br0' }) };
    const xml = renderDomainXml(bridged, id, paths, explicit);
    expect(xml).toContain("<loader readonly='yes' secure='no' type='pflash'>/fw/CODE.fd</loader>");
    expect(xml).toContain("<nvram template='/fw/VARS.fd'>");
    expect(xml).toContain("<interface type='bridge'>\n      <source bridge='br0'/>");
    expect(xml).toContain("<domain type='kvm'>");
    expect(() => readSettings({ OVMF_CODE: '/fw/CODE.fd' })).toThrow(/set together/);
  });
});

describe('the /var guestfish script', () => {
  it('formats the whole disk by label and writes each file at its mode, quoting paths', () => {
    const script = initVarScript('/vm/a b.qcow2', [{ name: 'machine-id', local: '/m/"x"/machine-id', mode: '0444', content: undefined }]);
    expect(script.slice(0, 4)).toEqual(['add-drive "/vm/a b.qcow2" format:qcow2', 'run', 'mkfs ext4 /dev/sda label:ivm-var', 'mount /dev/sda /']);
    expect(script).toContain('upload "/m/\\"x\\"/machine-id" /identity/machine-id');
    expect(script).toContain('chmod 0444 /identity/machine-id');
  });
});

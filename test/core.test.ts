// Core logic without processes: meta.nix validation, names, XML rendering and escaping, identity
// derivations. (The XML is also validated with virt-xml-validate here, a real tool.)
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderDomainXml } from '../src/core/vm/domain-xml.ts';
import { domainUuid, macAddress, planIdentity, writeIdentity } from '../src/core/identity/identity.ts';
import { networkConf, sizeInBytes, validateMeta, type Machine } from '../src/core/machine/machine.ts';
import { MACHINE_NAME, validateMachineName } from '../src/core/machine/names.ts';
import { formatPrivateKey, generateKeyPair, parsePrivateKey } from '../src/core/identity/openssh-key.ts';
import { projectAt } from '../src/core/machine/project.ts';
import { initVarScript } from './support/var-disk.ts';
import { vmPaths } from '../src/core/disks/vm-paths.ts';
import { BadInputError } from '../src/errors.ts';
import { readSettings } from '../src/host/settings.ts';
import { createProgress, formatElapsed, type ProgressOptions } from '../src/core/progress.ts';

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
      autostart: false,
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

describe('the progress reporter (src/core/progress.ts)', () => {
  /** A reporter writing into a string; momentMs and intervalMs short, so that a step of ~100 ms is "long". */
  const reporter = (options: Partial<ProgressOptions> = {}) => {
    let written = '';
    const progress = createProgress({ quiet: false, tty: false, write: (text) => (written += text), momentMs: 30, intervalMs: 10, ...options });
    return { progress, written: () => written };
  };
  const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  /** Every control character but newline and tab. */
  const CONTROL = /[\x00-\x08\x0b-\x1f\x7f-\x9f]/;

  it('without a terminal: one plain line per step as it starts, and no control characters at all', async () => {
    const { progress, written } = reporter({ tty: false });
    progress.plan('create web', 2);
    expect(await progress.step('make the VM folder', async () => 'made', { index: 1, total: 2 })).toBe('made');
    await progress.step('define the domain', async () => {
      await pause(100);
      // A command's log with its own escapes and carriage returns, and a title with a control byte.
      progress.commandOutput('\x1b[31;1merror:\x1b[0m copying\rdone');
      progress.line('+ virsh define x.xml');
    }, { index: 2, total: 2 });
    await progress.step('wait for \x07web', async () => undefined);
    expect(written()).toBe(
      'create web: 2 steps\n[1/2] make the VM folder\n[2/2] define the domain\nerror: copyingdone\n+ virsh define x.xml\nwait for web\n',
    );
    expect(written()).not.toMatch(CONTROL);
  });

  it('on a terminal: the step is redrawn in place with a spinner and its time once it takes a moment, then cleared to its final line', async () => {
    const { progress, written } = reporter({ tty: true });
    await progress.step('copy the image', () => pause(150), { index: 2, total: 4 });
    const out = written();
    expect(out.startsWith('[2/4] copy the image\r\x1b[K[2/4] copy the image ')).toBe(true);
    expect(out).toMatch(/\r\x1b\[K\[2\/4\] copy the image [|\/\\-] \d+\.\ds\r\x1b\[K/);
    expect(out).toMatch(/\r\x1b\[K\[2\/4\] copy the image \((?:\d+\.\d|\d+)s\)\n$/);
    // A quick step: drawn, then its final line, no time and no spinner.
    const quick = reporter({ tty: true, momentMs: 10_000 });
    await quick.progress.step('mode 0600', async () => undefined, { index: 3, total: 4 });
    expect(quick.written()).toBe('[3/4] mode 0600\r\x1b[K[3/4] mode 0600\n');
  });

  it('on a terminal: other output goes above the step line, which is drawn again below it; a failed step says so', async () => {
    const { progress, written } = reporter({ tty: true, momentMs: 10_000 });
    const failure = progress.step('build (nix build)', async () => {
      progress.commandOutput("building '/nix/store/x.drv'...");
      throw new Error('boom');
    });
    await expect(failure).rejects.toThrow('boom');
    expect(written()).toBe("build (nix build)\r\x1b[Kbuilding '/nix/store/x.drv'...\nbuild (nix build)\r\x1b[Kbuild (nix build) failed\n");
  });

  it('keeps the redrawn line within the terminal width', async () => {
    const { progress, written } = reporter({ tty: true, momentMs: 10_000, columns: () => 12 });
    await progress.step('a rather long title', async () => undefined);
    expect(written().split('\r\x1b[K')[0]).toBe('a rather l…');
  });

  it('--quiet: nothing at all, but the work runs and an echoed command (--verbose) still prints', async () => {
    for (const tty of [false, true]) {
      const { progress, written } = reporter({ quiet: true, tty });
      progress.plan('create web', 1);
      expect(await progress.step('slow', async () => (await pause(80), 7), { index: 1, total: 1 })).toBe(7);
      progress.commandOutput('building...');
      expect(written()).toBe('');
      progress.line('+ virsh list');
      expect(written()).toBe('+ virsh list\n');
    }
  });

  it('formats elapsed times', () => {
    expect([400, 3_449, 12_300, 125_000].map(formatElapsed)).toEqual(['0.4s', '3.4s', '12s', '2m05s']);
  });
});

describe('a static address on a bridge (meta.nix)', () => {
  const meta = (extra: Record<string, unknown>) => validateMeta('m.nix', { system: 'x86_64-linux', bridge: 'br0', ...extra });
  it('takes ADDRESS/PREFIX, a gateway inside the prefix and DNS servers, and renders network.conf', () => {
    const m = meta({ ipAddress: '10.1.2.3/16', gateway: '10.1.0.1', dns: ['10.1.0.1'] });
    expect(m.staticNetwork).toEqual({ address: '10.1.2.3', prefix: 16, gateway: '10.1.0.1', dns: ['10.1.0.1'] });
    expect(m.ipAddress).toBeUndefined();
    expect(networkConf(m.staticNetwork!)).toBe('# written by ivm from meta.nix (ipAddress, gateway, dns)\nADDRESS=10.1.2.3/16\nGATEWAY=10.1.0.1\nDNS=10.1.0.1\n');
    expect(networkConf(meta({ ipAddress: '10.1.2.3/16' }).staticNetwork!)).toBe('# written by ivm from meta.nix (ipAddress, gateway, dns)\nADDRESS=10.1.2.3/16\n');
  });
  it.each([
    [{ ipAddress: '10.1.2.3' }, /with `bridge`, `ipAddress` is the VM's static address with its prefix/],
    [{ ipAddress: '10.1.2.3/33' }, /with `bridge`, `ipAddress`/],
    [{ ipAddress: '10.1.0.0/16' }, /is the network's own address/],
    [{ ipAddress: '10.1.255.255/16' }, /is the network's broadcast address/],
    [{ ipAddress: '10.1.2.3/24', gateway: '10.1.3.1' }, /`gateway` 10\.1\.3\.1 is outside 10\.1\.2\.0\/24/],
    [{ ipAddress: '10.1.2.3/24', gateway: '10.1.2.3' }, /`gateway` is the VM's own address/],
    [{ ipAddress: '10.1.2.3/24', dns: '10.1.2.1' }, /`dns` must be a list of IPv4 addresses/],
    [{ gateway: '10.1.2.1' }, /`gateway` and `dns` go with a static `ipAddress/],
  ])('refuses %j', (extra, message) => {
    expect(() => meta(extra)).toThrow(message);
  });
});

describe('fixes from a review of the hardening', () => {
  it('a VM folder named ..something inside the base folder is inside it', async () => {
    const { checkImageFolders } = await import('../src/core/base/base-dir.ts');
    expect(() => checkImageFolders({ baseDir: '/srv/ivm-b', vmDir: '/srv/ivm-b/..vm' }, {})).toThrow(/is inside IVM_BASE_DIR/);
    expect(() => checkImageFolders({ baseDir: '/srv/ivm-b', vmDir: '/srv/ivm-v' }, {})).not.toThrow();
  });
  it('a bridge gateway: not the network or broadcast address; on-link with a /32', () => {
    const meta = (extra: Record<string, unknown>) => validateMeta('m.nix', { system: 'x86_64-linux', bridge: 'br0', ...extra });
    expect(() => meta({ ipAddress: '192.168.1.50/24', gateway: '192.168.1.0' })).toThrow(/is the network's own address/);
    expect(() => meta({ ipAddress: '192.168.1.50/24', gateway: '192.168.1.255' })).toThrow(/is the network's broadcast address/);
    expect(meta({ ipAddress: '203.0.113.7/32', gateway: '203.0.113.1' }).staticNetwork?.gateway).toBe('203.0.113.1');
  });
  it('a pending identity file is made at its owner and mode before its content is uploaded', async () => {
    const { syncScript } = await import('../src/core/identity/identity-sync.ts');
    const source = { name: 'ssh_host_ed25519_key', local: '/stage/key', mode: '0600', content: Buffer.from('k') };
    const script = syncScript([source], { added: [source.name], changed: [], fixed: [], removed: [], fixDir: false, unreadable: [], notRegular: [] });
    const at = (line: string) => script.indexOf(line);
    const pending = '/identity/.ssh_host_ed25519_key.ivm-new';
    expect(at(`touch ${pending}`)).toBeGreaterThan(-1);
    expect(at(`touch ${pending}`)).toBeLessThan(at(`chmod 0600 ${pending}`));
    expect(at(`chmod 0600 ${pending}`)).toBeLessThan(at(`upload /stage/key ${pending}`));
    expect(at(`upload /stage/key ${pending}`)).toBeLessThan(at(`rename ${pending} /identity/ssh_host_ed25519_key`));
    // /identity itself: a link or a file there is removed itself before the folder is made.
    const fixing = syncScript([source], { added: [source.name], changed: [], fixed: [], removed: [], fixDir: true, unreadable: [], notRegular: [] });
    expect(fixing.indexOf('-rm /identity')).toBeLessThan(fixing.indexOf('mkdir-p /identity'));
  });
  it('a name from the disk is shown with every control character escaped: C0, DEL and C1 alike', async () => {
    const { shownName } = await import('../src/core/identity/identity-sync.ts');
    expect(shownName('hosts')).toBe('hosts');
    expect(shownName('a\x1b[2Jb')).toBe('"a\\u001b[2Jb"');
    expect(shownName('a\x7fb\x9bc')).toBe('"a\\u007fb\\u009bc"');
    expect(shownName('a\x7fb\x9bc')).not.toMatch(/[\x00-\x1f\x7f-\x9f]/);
  });
});

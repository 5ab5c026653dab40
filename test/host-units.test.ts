// The host side without processes: CIDR arithmetic, the AppArmor rule text, session-mode settings,
// hidden home folders, meta.nix ipAddress, network XML, and parsing what virsh prints.
import { describe, expect, it } from 'vitest';
import { parseDomifaddr, parseLeases } from '../src/core/network/address.ts';
import { abstractionIncludes, ruleFile, withManagedBlock, BEGIN_MARK, END_MARK } from '../src/core/host/apparmor.ts';
import { hiddenHomeFolder, isInside } from '../src/core/base/base-dir.ts';
import { overlaps, parseCidr } from '../src/core/network/cidr.ts';
import { fileDisksOfDomainXml } from '../src/core/base/gc.ts';
import { validateMeta } from '../src/core/machine/machine.ts';
import { networkXml, parseNetworkXml } from '../src/core/network/net.ts';
import { classifyProbe, sshArgs, sshOptionPath } from '../src/core/network/ssh.ts';
import { BadInputError, IvmError } from '../src/errors.ts';
import { parseImageJson } from '../src/host/qemu-img.ts';
import { parseDomainList } from '../src/host/virsh.ts';
import { readSettings, sessionDirs } from '../src/host/settings.ts';

describe('CIDR', () => {
  it('derives gateway, DHCP range and netmask', () => {
    expect(parseCidr('192.168.100.0/24')).toMatchObject({
      text: '192.168.100.0/24',
      netmask: '255.255.255.0',
      gateway: '192.168.100.1',
      dhcpStart: '192.168.100.2',
      dhcpEnd: '192.168.100.254',
      broadcast: '192.168.100.255',
    });
    expect(parseCidr('10.0.0.0/8')).toMatchObject({ netmask: '255.0.0.0', dhcpEnd: '10.255.255.254' });
    expect(parseCidr('172.16.5.4/30')).toMatchObject({ netmask: '255.255.255.252', gateway: '172.16.5.5', dhcpStart: '172.16.5.6', dhcpEnd: '172.16.5.6' });
  });
  it.each([
    ['192.168.1.0', /bad CIDR/],
    ['192.168.1.0/', /bad CIDR/],
    ['192.168.01.0/24', /bad CIDR/],
    ['256.0.0.0/24', /bad CIDR/],
    ['192.168.1.0/7', /prefix must be 8 to 30/],
    ['192.168.1.0/32', /prefix must be 8 to 30/],
    ['192.168.1.1/24', /host bits are set/],
    ['127.100.0.0/24', /overlaps 127\.0\.0\.0\/8 \(loopback\)/],
    ['169.254.0.0/16', /link-local/],
    ['224.0.0.0/24', /multicast/],
    ['0.0.0.0/8', /"this network"/],
  ])('refuses %s', (cidr, message) => {
    expect(() => parseCidr(cidr)).toThrow(message);
  });
  it('knows overlaps', () => {
    expect(overlaps(parseCidr('10.1.0.0/16'), parseCidr('10.1.200.0/24'))).toBe(true);
    expect(overlaps(parseCidr('10.1.0.0/24'), parseCidr('10.1.1.0/24'))).toBe(false);
    expect(overlaps(parseCidr('192.168.0.0/16'), parseCidr('192.168.122.0/24'))).toBe(true);
  });
});

describe('the AppArmor rule', () => {
  it('is one directory-level rule, read and lock only', () => {
    expect(ruleFile('/var/lib/libvirt/base-images')).toBe(
      '# Written by ivm (`ivm host setup --apply`); rewritten when IVM_BASE_DIR changes.\n' +
        '# QEMU may read the shared base images (backing files of every VM); one rule for the folder.\n' +
        '"/var/lib/libvirt/base-images/" r,\n"/var/lib/libvirt/base-images/**" rk,\n',
    );
  });
  it('refuses a folder with globbing characters', () => {
    expect(() => ruleFile('/srv/images*')).toThrow(/AppArmor rule cannot express/);
  });
  it('manages one block in a shared local file, keeping the rest, replacing its own', () => {
    const once = withManagedBlock('"/srv/isos/**" r,\n', '/a');
    expect(once.startsWith('"/srv/isos/**" r,\n# BEGIN ivm')).toBe(true);
    const moved = withManagedBlock(once, '/b');
    expect(moved).toContain('"/b/**" rk,');
    expect(moved).not.toContain('"/a/');
    expect(moved.split(BEGIN_MARK)).toHaveLength(2);
    expect(moved.split(END_MARK)).toHaveLength(2);
    expect(withManagedBlock(moved, '/b')).toBe(moved);
  });
  it('reads the includes of the abstraction in every spelling', () => {
    expect(abstractionIncludes('  #include <local/abstractions/libvirt-qemu>\n  include if exists <abstractions/libvirt-qemu.d>\n  include <abstractions/base>')).toEqual([
      'local/abstractions/libvirt-qemu',
      'abstractions/libvirt-qemu.d',
      'abstractions/base',
    ]);
  });
});

describe('session mode settings', () => {
  it('qemu:///session: folders under ~/ivm (the XDG default ~/.local/share is hidden), no sudo', () => {
    const s = readSettings({ LIBVIRT_URI: 'qemu:///session', HOME: '/home/ann', SUDO: 'sudo' }, 1000);
    expect(s.mode).toBe('session');
    expect(s.baseDir).toBe('/home/ann/ivm/base-images');
    expect(s.vmDir).toBe('/home/ann/ivm/images');
    expect(s.sudo).toEqual([]);
  });
  it('takes XDG_DATA_HOME when it is not hidden', () => {
    expect(sessionDirs({ HOME: '/home/ann', XDG_DATA_HOME: '/data/ann' })).toEqual({ baseDir: '/data/ann/ivm/base-images', vmDir: '/data/ann/ivm/images' });
    expect(sessionDirs({ HOME: '/home/ann', XDG_DATA_HOME: '/home/ann/.local/share' }).baseDir).toBe('/home/ann/ivm/base-images');
  });
  it('system mode keeps the system folders and sudo', () => {
    const s = readSettings({}, 1000);
    expect([s.mode, s.baseDir, s.vmDir, s.sudo]).toEqual(['system', '/var/lib/libvirt/base-images', '/var/lib/libvirt/images', ['sudo']]);
    expect(readSettings({ LIBVIRT_URI: 'qemu+unix:///session' }).mode).toBe('session');
  });
  it('refuses relative folders', () => {
    expect(() => readSettings({ IVM_BASE_DIR: 'images' })).toThrow(/must be an absolute path/);
  });
});

describe('hidden home folders and the base folder', () => {
  it('finds images in dot-folders under /root, /home/<user> or $HOME', () => {
    expect(hiddenHomeFolder('/home/ann/.local/share/ivm/b.qcow2', {})).toBe('/home/ann');
    expect(hiddenHomeFolder('/root/.cache/b.qcow2', {})).toBe('/root');
    expect(hiddenHomeFolder('/srv/u/.vms/b.qcow2', { HOME: '/srv/u' })).toBe('/srv/u');
    expect(hiddenHomeFolder('/home/ann/ivm/b.qcow2', {})).toBeUndefined();
    expect(hiddenHomeFolder('/var/lib/.x/b.qcow2', { HOME: '/root' })).toBeUndefined();
  });
  it('knows what is inside a folder', () => {
    expect(isInside('/var/lib/libvirt/base-images', '/var/lib/libvirt/base-images/x.qcow2')).toBe(true);
    expect(isInside('/var/lib/libvirt/base-images', '/var/lib/libvirt/base-images-old/x.qcow2')).toBe(false);
    expect(isInside('/var/lib/libvirt/base-images', '/var/lib/libvirt/base-images/../images/x.qcow2')).toBe(false);
  });
});

describe('meta.nix ipAddress', () => {
  it('is an optional IPv4 address on a network', () => {
    expect(validateMeta('m.nix', { system: 'x86_64-linux', network: 'lab', ipAddress: '192.168.100.10' }).ipAddress).toBe('192.168.100.10');
    expect(validateMeta('m.nix', { system: 'x86_64-linux' }).ipAddress).toBeUndefined();
  });
  it.each([
    [{ system: 'x86_64-linux', ipAddress: '192.168.100' }, /`ipAddress` must be an IPv4 address/],
    [{ system: 'x86_64-linux', ipAddress: 10 }, /`ipAddress` must be an IPv4 address/],
    [{ system: 'x86_64-linux', bridge: 'br0', ipAddress: '192.168.1.5' }, /with `bridge`, `ipAddress` is the VM's static address with its prefix/],
  ])('refuses %j', (meta, message) => {
    expect(() => validateMeta('m.nix', meta)).toThrow(message);
  });
});

describe('network XML', () => {
  it('round-trips what ivm defines', () => {
    const xml = networkXml('lab', 'nat', parseCidr('192.168.100.0/24'), undefined);
    expect(xml).toContain("<forward mode='nat'/>");
    const info = parseNetworkXml('lab', xml, 'Active:         yes\nAutostart:      no\nBridge:         virbr3\n');
    expect(info).toMatchObject({ kind: 'nat', active: true, autostart: false, bridge: 'virbr3', gateway: '192.168.100.1', dhcpRange: { start: '192.168.100.2', end: '192.168.100.254' } });
    expect(info.net?.text).toBe('192.168.100.0/24');
    expect(parseNetworkXml('iso', networkXml('iso', 'isolated', parseCidr('10.5.0.0/16'), 'br-iso')).kind).toBe('isolated');
    expect(parseNetworkXml('b', networkXml('b', 'bridge', undefined, 'br0'))).toMatchObject({ kind: 'bridge', bridge: 'br0', net: undefined });
  });
  it('reads prefix= and host reservations, skips IPv6', () => {
    const info = parseNetworkXml(
      'n',
      "<network><name>n</name><ip family='ipv6' address='fd00::1' prefix='64'/><ip address='10.9.8.1' prefix='24'><dhcp><range start='10.9.8.100' end='10.9.8.200'/><host mac='52:54:00:AA:BB:CC' name='web' ip='10.9.8.10'/></dhcp></ip></network>",
    );
    expect(info.net?.text).toBe('10.9.8.0/24');
    expect(info.hosts).toEqual([{ mac: '52:54:00:aa:bb:cc', name: 'web', ip: '10.9.8.10' }]);
  });
});

describe('virsh list --all', () => {
  it('reads a name with blanks (a foreign domain) as one name, its state from the end of the line', () => {
    // As libvirt 9 prints it (vshTable), columns padded to the widest cell.
    const text = [' Id   Name           State', '-------------------------------', ' 3    web            running', ' -    my vm          shut off', ' -    odd shut off   in shutdown', ''].join('\n');
    expect([...parseDomainList(text)]).toEqual([
      ['web', 'running'],
      ['my vm', 'shut off'],
      ['odd shut off', 'in shutdown'],
    ]);
  });
});

describe('what virsh prints about addresses', () => {
  it('domifaddr: the IPv4 of our MAC, continuation rows included, loopback skipped', () => {
    const text = ` Name       MAC address          Protocol     Address
-------------------------------------------------------------------------------
 lo         00:00:00:00:00:00    ipv4         127.0.0.1/8
 eth0       52:54:00:12:34:56    ipv6         fe80::5054:ff:fe12:3456/64
 -          -                    ipv4         192.168.122.44/24
 eth1       52:54:00:ff:ff:ff    ipv4         10.0.0.9/24
`;
    expect(parseDomifaddr(text, '52:54:00:12:34:56')).toEqual(['192.168.122.44']);
  });
  it('net-dhcp-leases', () => {
    const text = ` Expiry Time           MAC address         Protocol   IP address           Hostname   Client ID or DUID
------------------------------------------------------------------------------------------------------------
 2026-11-22 01:01:37   52:54:00:45:13:b0   ipv4       192.168.122.236/24   web        01:52:54:00:45:13:b0
`;
    expect(parseLeases(text)).toEqual([{ expiry: '2026-11-22 01:01:37', mac: '52:54:00:45:13:b0', address: '192.168.122.236', hostname: 'web' }]);
  });
});

describe('ssh', () => {
  it('pins the host key and never accepts a new one', () => {
    const args = sshArgs({ name: 'web', knownHosts: '/p/machines/web/known_hosts', user: 'admin', address: '10.0.0.5' }, ['ls', '-l']);
    expect(args.join(' ')).toBe(
      '-o HostKeyAlias=web -o UserKnownHostsFile="/p/machines/web/known_hosts" -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes ' +
        '-o UpdateHostKeys=no -o CheckHostIP=no -l admin -- 10.0.0.5 ls -l',
    );
  });
  it('quotes the known_hosts path for ssh (blanks), escapes % and backslashes, refuses what ssh cannot take', () => {
    expect(sshOptionPath('/p q/with space %d/known_hosts')).toBe('"/p q/with space %%d/known_hosts"');
    expect(sshOptionPath('/a\\b/$x/known_hosts')).toBe('"/a\\\\b/$x/known_hosts"');
    for (const bad of ['/a"b/known_hosts', '/a\nb/known_hosts', '/a\tb/known_hosts', '/a${HOME}/known_hosts']) {
      expect(() => sshOptionPath(bad), bad).toThrow(BadInputError);
    }
  });
  it('tells a refused login (host key verified) from a changed host key and from no answer', () => {
    expect(classifyProbe(255, 'user@10.0.0.5: Permission denied (publickey).')).toBe('auth-refused');
    expect(classifyProbe(255, '@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.')).toBe('key-mismatch');
    expect(classifyProbe(255, 'No ED25519 host key is known for web and you have requested strict checking.\nHost key verification failed.')).toBe('key-mismatch');
    expect(classifyProbe(255, 'ssh: connect to host 10.0.0.5 port 22: Connection refused')).toBe('unreachable');
    expect(classifyProbe(0, '')).toBe('ok');
  });
});

// (Imported here rather than at the top so that this block stays self-contained; imports are hoisted.)
import { MIN_NIX_VERSION, nixVersionAtLeast, parseNixVersion } from '../src/host/nix.ts';

describe('nix version', () => {
  it('reads the version from the first line of `nix --version`, forks included', () => {
    expect(parseNixVersion('nix (Nix) 2.8.0\n')).toEqual({ major: 2, minor: 8, patch: 0, text: '2.8.0' });
    expect(parseNixVersion('nix (Nix) 2.3.16')).toMatchObject({ major: 2, minor: 3, patch: 16 });
    expect(parseNixVersion('nix (Nix) 2.25.0pre20241101_dirty')).toEqual({ major: 2, minor: 25, patch: 0, text: '2.25.0pre20241101_dirty' });
    expect(parseNixVersion('nix (Nix) 2.4')).toEqual({ major: 2, minor: 4, patch: 0, text: '2.4' });
    expect(parseNixVersion('nix (Lix, like Nix) 2.91.1\nSystem type: x86_64-linux')).toMatchObject({ major: 2, minor: 91, patch: 1 });
    // Determinate Nix prints its own version in the parenthesis: the Nix version follows it.
    expect(parseNixVersion('nix (Determinate Nix 3.6.2) 2.29.0')).toMatchObject({ major: 2, minor: 29, patch: 0 });
  });
  it('finds no version where there is none', () => {
    for (const text of ['', 'nix (Nix)', 'command not found', 'nix (Nix) two.eight']) expect(parseNixVersion(text), text).toBeUndefined();
  });
  it('compares against the minimum, 2.8', () => {
    expect(MIN_NIX_VERSION).toBe('2.8');
    const at = (text: string, min?: string) => nixVersionAtLeast(parseNixVersion(`nix (Nix) ${text}`)!, min);
    for (const ok of ['2.8', '2.8.0', '2.8.1', '2.10.3', '2.18.1', '3.0.0', '2.9pre20220101_abc']) expect(at(ok), ok).toBe(true);
    for (const old of ['2.7.0', '2.6.0', '2.3.16', '1.11.16']) expect(at(old), old).toBe(false);
    expect(at('2.8.0', '2.8.1')).toBe(false);
    expect(at('2.10.0', '2.9')).toBe(true);
  });
});

describe('the disks of a domain XML (gc)', () => {
  it('takes each file disk\'s own source, entities decoded, blanks and all; not its backing chain, not other disks', () => {
    const xml = `<domain type='kvm' id='3'>
  <name>web</name>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/srv/vm images/a &amp; b &apos;c&apos; &lt;d&gt; &quot;e&quot; &#37;f &#x41;.qcow2' index='2'/>
      <backingStore type='file' index='1'>
        <format type='qcow2'/>
        <source file='/var/lib/libvirt/base-images/base.qcow2'/>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <disk type="file" device="disk">
      <source file="/srv/double quoted.qcow2"/>
    </disk>
    <disk type='file' device='cdrom'>
      <target dev='sda' bus='sata'/>
    </disk>
    <disk type='block' device='disk'>
      <source dev='/dev/vg/data'/>
    </disk>
    <disk type='network' device='disk'>
      <source protocol='nbd' name='x'><host name='h' port='10809'/></source>
    </disk>
    <disk type='file' device='floppy'/>
  </devices>
</domain>`;
    expect(fileDisksOfDomainXml(xml)).toEqual([`/srv/vm images/a & b 'c' <d> "e" %f A.qcow2`, '/srv/double quoted.qcow2']);
    expect(fileDisksOfDomainXml('<domain><devices/></domain>')).toEqual([]);
  });
});

describe('what qemu-img info prints (JSON)', () => {
  const image = { filename: '/vm/a.qcow2', format: 'qcow2', 'virtual-size': 1024, 'backing-filename': '/base/b.qcow2' };
  it('reads one image, or a chain of them', () => {
    expect(parseImageJson(JSON.stringify(image), { what: 'qemu-img info', file: '/vm/a.qcow2', chain: false })).toEqual(image);
    const chain = [image, { filename: '/base/b.qcow2', format: 'qcow2', 'virtual-size': 1024 }];
    expect(parseImageJson(`${JSON.stringify(chain)}\n`, { what: 'qemu-img info --backing-chain', file: '/vm/a.qcow2', chain: true })).toEqual(chain);
  });
  it('turns anything else into an error naming the command and the file', () => {
    const error = (stdout: string, chain: boolean) => {
      try {
        const of = { file: '/vm/a b.qcow2', commandLine: 'qemu-img info x' };
        if (chain) parseImageJson(stdout, { ...of, what: 'qemu-img info --backing-chain', chain: true });
        else parseImageJson(stdout, { ...of, what: 'qemu-img info', chain: false });
      } catch (caught) {
        return caught as IvmError;
      }
      throw new Error(`no error for ${stdout}`);
    };
    const garbage = error('qemu-img: warning: something\n{"filename"', false);
    expect(garbage).toBeInstanceOf(IvmError);
    expect(garbage.exitCode).toBe(1);
    expect(garbage.message).toBe('qemu-img info printed no JSON for /vm/a b.qcow2: it printed "qemu-img: warning: something\\n{\\"filename\\""');
    expect(garbage.hint).toContain('the command was: qemu-img info x');
    expect(error('', false).message).toBe('qemu-img info printed no JSON for /vm/a b.qcow2: it printed nothing');
    expect(error(JSON.stringify(image), true).message).toMatch(/^qemu-img info --backing-chain printed JSON that is not a list of images for \/vm\/a b\.qcow2: /);
    expect(error('[]', true).message).toMatch(/not a list of images/);
    expect(error(JSON.stringify([image]), false).message).toMatch(/printed JSON that is not an image for/);
    expect(error('{"format":"qcow2"}', false).message).toMatch(/printed JSON that is not an image for/);
    expect(error('x'.repeat(500), false).message).toMatch(/it printed "x{200}\.\.\."$/);
  });
});

describe('the backing file from the qcow2 header (no qemu-img process per VM)', () => {
  it('reads what qemu-img info reads: absolute, relative (from the overlay\'s folder), none; anything else asks qemu-img', async () => {
    const { execa } = await import('execa');
    const { qcow2Backing } = await import('../src/core/disks/boot-overlay.ts');
    const fsm = await import('node:fs');
    const dir = fsm.mkdtempSync('/tmp/ivm-qcow2-');
    const base = `${dir}/base image.qcow2`;
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', base, '64M']);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', `${dir}/abs.qcow2`]);
    fsm.mkdirSync(`${dir}/sub`);
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', '../base image.qcow2', '-F', 'qcow2', `${dir}/sub/rel.qcow2`]);
    for (const file of [`${dir}/abs.qcow2`, `${dir}/sub/rel.qcow2`]) {
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', file])).stdout);
      expect(qcow2Backing(file)).toBe(info['full-backing-filename']);
    }
    expect(qcow2Backing(base)).toBeUndefined();
    fsm.writeFileSync(`${dir}/raw.img`, Buffer.alloc(4096));
    expect(qcow2Backing(`${dir}/raw.img`)).toBe('unknown');
    fsm.symlinkSync(`${dir}/abs.qcow2`, `${dir}/link.qcow2`);
    expect(qcow2Backing(`${dir}/link.qcow2`)).toBe('unknown');
    fsm.rmSync(dir, { recursive: true });
  });
});

describe('IVM_LOCK_WAIT', () => {
  it('is read once with the other settings: whole seconds, else a clear error', async () => {
    const { readSettings } = await import('../src/host/settings.ts');
    expect(readSettings({}).lockWaitSeconds).toBe(10);
    expect(readSettings({ IVM_LOCK_WAIT: '0' }).lockWaitSeconds).toBe(0);
    expect(readSettings({ IVM_LOCK_WAIT: '25' }).lockWaitSeconds).toBe(25);
    for (const bad of ['-1', '1.5', 'soon']) expect(() => readSettings({ IVM_LOCK_WAIT: bad })).toThrow(/IVM_LOCK_WAIT=.* must be a whole number of seconds/);
  });
});

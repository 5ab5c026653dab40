// Proves the end-to-end test harness works for real: the stand-in base image builds and
// boots under libvirt (UEFI, TCG) with a read-only overlay and a whole-disk ivm-var /var disk,
// the guest's report parses, and standin-nix stands in for `nix build` only.
import { chmod, chown, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, ensureLibvirt, ensureNetwork, makeScratchDir, virsh, waitForState } from './support/libvirt.ts';
import {
  buildStandinImage,
  parseStandinLog,
  sha256File,
  standinNix,
  standinScript,
} from './support/standin.ts';

const DOMAIN = 'ivm-harness-test';
const DOMAIN_UUID = '5e0d7a7c-3b1f-4c52-9a0e-2f6d8b1c4e01';

const identity: Record<string, { content: string; mode: number; uid?: number }> = {
  'machine-id': { content: '0123456789abcdef0123456789abcdef\n', mode: 0o444 },
  hostname: { content: 'harness\n', mode: 0o444 },
  ssh_host_ed25519_key: {
    content: 'placeholder: not a key, only bytes to carry through the harness\n',
    mode: 0o600,
  },
  'resolv.conf': { content: 'nameserver 192.0.2.53\nsearch example.test\n', mode: 0o644 },
  user_authorized_keys: { content: 'ssh-ed25519 AAAAC3Nza test@harness — ünïcode\n', mode: 0o644, uid: 1000 },
};

function domainXml(o: { boot: string; varDisk: string; serialLog: string; network: string | null }): string {
  const nic = o.network
    ? `<interface type='network'><source network='${o.network}'/><model type='virtio'/></interface>`
    : '';
  return `<domain type='qemu'>
  <name>${DOMAIN}</name>
  <uuid>${DOMAIN_UUID}</uuid>
  <memory unit='MiB'>512</memory>
  <vcpu>1</vcpu>
  <os firmware='efi'>
    <type arch='x86_64' machine='q35'>hvm</type>
    <firmware>
      <feature enabled='no' name='secure-boot'/>
      <feature enabled='no' name='enrolled-keys'/>
    </firmware>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${o.boot}'/>
      <target dev='vda' bus='virtio'/>
      <readonly/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${o.varDisk}'/>
      <target dev='vdb' bus='virtio'/>
    </disk>
    ${nic}
    <serial type='pty'>
      <log file='${o.serialLog}' append='off'/>
    </serial>
    <console type='pty'/>
  </devices>
</domain>
`;
}

describe('end-to-end test harness', () => {
  let dir: string;

  beforeAll(async () => {
    await ensureLibvirt();
    await cleanupDomain(DOMAIN);
    dir = await makeScratchDir('ivm-harness-');
  });

  afterAll(async () => {
    await cleanupDomain(DOMAIN);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('parses the stand-in serial log, noise and all', () => {
    const b64 = Buffer.from('a b\nc\n').toString('base64');
    const text = [
      '\x1b[2J\x1b[01;01HBdsDxe: starting Boot0001 "UEFI Misc Device"\r',
      'IVM-STANDIN begin variant=x kernel=6.1.0-1-amd64\r',
      'IVM-MODULE skipped=crc32c-intel.ko\r',
      'IVM-VDA ro=1 writefailed=1\r',
      'IVM-VAR dev=/dev/vdb wholedisk=1\r',
      'IVM-DIR root mode=700 uid=0 gid=0\r',
      `IVM-FILE some.file mode=640 uid=1000 gid=100 size=6 b64=${b64}\r`,
      'IVM-VDB write=ok boots=3\r',
      'IVM-DHCP ip=none\r',
      'IVM-STANDIN end\r',
      '[    5.5] reboot: Power down\r',
    ].join('\n');
    const log = parseStandinLog(text);
    expect(log.complete).toBe(true);
    expect(log.errors).toEqual([]);
    expect(log.variant).toBe('x');
    expect(log.files['some.file']).toMatchObject({ mode: 0o640, modeOctal: '0640', uid: 1000, gid: 100, content: 'a b\nc\n' });
    expect(log.dirs.root).toMatchObject({ mode: 0o700, modeOctal: '0700' });
    expect(log).toMatchObject({
      vdaReadOnly: true,
      vdaWriteFailed: true,
      varDevice: '/dev/vdb',
      varWholeDisk: true,
      vdbWrite: 'ok',
      bootCount: 3,
      dhcpIp: null,
      skippedModules: ['crc32c-intel.ko'],
    });
    const bad = parseStandinLog('IVM-STANDIN begin variant=a\nIVM-STANDIN error mount /dev/vdb on /var\n');
    expect(bad.complete).toBe(false);
    expect(bad.errors).toEqual(['mount /dev/vdb on /var']);
  });

  it('builds stand-in images: the same bytes per variant, different bytes across variants', async () => {
    const a = await buildStandinImage(path.join(dir, 'out-a'), 'a');
    const b = await buildStandinImage(path.join(dir, 'out-b'), 'b');
    expect(path.basename(a)).toBe('standin.qcow2');
    const [shaA, shaB] = [await sha256File(a), await sha256File(b)];
    expect(shaA).not.toBe(shaB);

    // A fresh build of the same variant gives the same bytes as the cached one.
    const t0 = Date.now();
    const r = await execa(standinScript, [path.join(dir, 'fresh-a'), 'a']);
    const buildMs = Date.now() - t0;
    expect(r.stdout.trim()).toBe(path.join(dir, 'fresh-a', 'standin.qcow2'));
    expect(await sha256File(path.join(dir, 'fresh-a', 'standin.qcow2'))).toBe(shaA);
    console.log(`stand-in image build: ${buildMs} ms`);

    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', a])).stdout) as Record<string, unknown>;
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toBeUndefined();
  });

  it('standin-nix fakes `nix build` only', async () => {
    const out = path.join(dir, 'out-a');
    const logFile = path.join(dir, 'standin-nix.log');
    const env = { IVM_STANDIN_OUT: out, IVM_STANDIN_LOG: logFile };
    const r = await execa(standinNix, ['build', '.#image', '--json', '--no-link'], { env, cwd: dir });
    expect(JSON.parse(r.stdout)).toEqual([{ drvPath: `${out}.drv`, outputs: { out } }]);
    const r2 = await execa(
      standinNix,
      ['--extra-experimental-features', 'nix-command flakes', 'build', '.#other', '--json', '--no-link'],
      { env, cwd: dir },
    );
    expect(JSON.parse(r2.stdout)).toEqual([{ drvPath: `${out}.drv`, outputs: { out } }]);
    const calls = (await readFile(logFile, 'utf8')).trim().split('\n');
    expect(calls).toEqual(['build .#image --json --no-link', 'build .#other --json --no-link']);

    // As nix 2.8 (Debian 12's) does: the flag came later.
    const old = await execa(standinNix, ['build', '.#image', '--no-link', '--print-out-paths'], { env, cwd: dir, reject: false });
    expect(old.exitCode).toBe(1);
    expect(old.stderr).toMatch(/^error: unrecognised flag '--print-out-paths'/);

    const unset = await execa(standinNix, ['build', '--json', '--no-link'], {
      env: { IVM_STANDIN_OUT: '' },
      reject: false,
      cwd: dir,
    });
    expect(unset.exitCode).not.toBe(0);
    expect(unset.stderr).toMatch(/IVM_STANDIN_OUT/);

    // Anything else goes to the real nix, even when the stand-in is first on PATH as `nix`.
    const real = await execa('sh', ['-c', 'command -v nix'], { reject: false });
    if (real.exitCode === 0) {
      const bin = path.join(dir, 'bin');
      await mkdir(bin, { recursive: true });
      await execa('ln', ['-sf', standinNix, path.join(bin, 'nix')]);
      const v = await execa('nix', ['--version'], { env: { PATH: `${bin}:${process.env.PATH ?? ''}` } });
      expect(v.stdout).toMatch(/nix \(Nix\) \d/);
    }
  });

  it('boots the stand-in: read-only overlay as vda, whole-disk ivm-var as vdb, DHCP', async () => {
    const base = await buildStandinImage(path.join(dir, 'store'), 'a');
    const baseSha = await sha256File(base);

    // The /var disk: ext4 on the whole disk, labelled ivm-var, with identity files.
    const tree = path.join(dir, 'vartree');
    for (const [d, mode] of [['identity', 0o755], ['home', 0o755], ['root', 0o700]] as const) {
      await mkdir(path.join(tree, d), { recursive: true });
      await chmod(path.join(tree, d), mode);
    }
    for (const [name, f] of Object.entries(identity)) {
      const p = path.join(tree, 'identity', name);
      await writeFile(p, f.content);
      await chmod(p, f.mode);
      if (f.uid !== undefined) await chown(p, f.uid, f.uid);
    }
    const varRaw = path.join(dir, 'var.raw');
    const varDisk = path.join(dir, 'var.qcow2');
    await execa('mkfs.ext4', ['-q', '-F', '-d', tree, '-L', 'ivm-var', '-E', 'root_owner=0:0', varRaw, '64M']);
    await execa('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', varRaw, varDisk]);
    await rm(varRaw);

    const boot = path.join(dir, 'boot.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', boot]);

    await ensureNetwork('default');
    const serialLog = path.join(dir, 'serial.log');
    const xmlFile = path.join(dir, 'domain.xml');
    await writeFile(xmlFile, domainXml({ boot, varDisk, serialLog, network: 'default' }));
    await virsh(['define', '--validate', xmlFile]);

    const t0 = Date.now();
    await virsh(['start', DOMAIN]);
    try {
      await waitForState(DOMAIN, 'shut off', 150_000);
    } catch (e) {
      const tail = await readFile(serialLog, 'utf8').catch(() => '(no serial log)');
      throw new Error(`${String(e)}\nserial log:\n${tail.slice(-3000)}`);
    }
    console.log(`stand-in boot, virsh start to shut off: ${Date.now() - t0} ms`);

    const serial = await readFile(serialLog, 'utf8');
    const log = parseStandinLog(serial);
    const why = `serial log:\n${serial}`;
    expect(log.complete, why).toBe(true);
    expect(log.errors, why).toEqual([]);
    expect(log.variant).toBe('a');

    expect(Object.keys(log.files).sort()).toEqual(Object.keys(identity).sort());
    for (const [name, f] of Object.entries(identity)) {
      expect(log.files[name], name).toMatchObject({ content: f.content, mode: f.mode, uid: f.uid ?? 0 });
    }
    expect(log.dirs).toMatchObject({
      identity: { mode: 0o755, uid: 0 },
      home: { mode: 0o755, uid: 0 },
      root: { mode: 0o700, uid: 0 },
    });

    expect(log.vdaReadOnly, why).toBe(true);
    expect(log.vdaWriteFailed, why).toBe(true);
    expect(log.varDevice).toBe('/dev/vdb');
    expect(log.varWholeDisk).toBe(true);
    expect(log.vdbWrite, why).toBe('ok');
    expect(log.bootCount).toBe(1);
    expect(log.dhcpIp, why).toMatch(/^192\.168\.122\.\d+$/);

    // What the guest wrote to /var is on the disk.
    const back = path.join(dir, 'var-back.raw');
    await execa('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', varDisk, back]);
    const count = await execa('debugfs', ['-R', 'cat /standin-boot-count', back]);
    expect(count.stdout.trim()).toBe('1');
    await rm(back);

    // The overlay holds nothing new and the base image is untouched.
    const cmp = await execa('qemu-img', ['compare', '-f', 'qcow2', '-F', 'qcow2', boot, base], { reject: false });
    expect(cmp.exitCode, cmp.stdout + cmp.stderr).toBe(0);
    expect(await sha256File(base)).toBe(baseSha);
  });
});

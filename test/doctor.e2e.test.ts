// ivm doctor with the real tools: a host in order exits 0; then each failure forced in turn (a tool
// missing on PATH, an unreachable libvirt, a VM backed by a file outside IVM_BASE_DIR, a base in a
// hidden home folder, AppArmor enabled without the rule, no kernel for guestfish) gives that check's
// message, its fix and exit 4. Also: create refuses a base outside IVM_BASE_DIR.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureNetwork } from './support/libvirt.ts';
import { IVM_BIN, makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import type { DoctorReport } from '../src/core/host/doctor.ts';

async function qcow2(file: string, backing?: string): Promise<void> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const args = backing ? ['create', '-q', '-f', 'qcow2', '-b', backing, '-F', 'qcow2', file] : ['create', '-q', '-f', 'qcow2', file, '16M'];
  await execa('qemu-img', args);
}

describe('ivm doctor', () => {
  let project: TestProject;

  async function doctor(env: Record<string, string> = {}): Promise<{ exitCode: number; stdout: string; stderr: string; report: DoctorReport }> {
    const text = await project.ivm(['doctor'], env);
    const json = await project.ivm(['doctor', '--json'], env);
    expect(json.exitCode).toBe(text.exitCode);
    expect(text.stderr + json.stderr).not.toMatch(/internal error|\n\s+at /);
    return { ...text, report: JSON.parse(json.stdout) as DoctorReport };
  }
  const failed = (report: DoctorReport) => report.checks.filter((c) => c.status === 'fail').map((c) => c.id);

  beforeAll(async () => {
    await ensureNetwork('default');
    project = await makeTestProject('ivm-doctor-');
    fs.mkdirSync(project.baseDir, { mode: 0o755 });
    fs.mkdirSync(project.vmDir, { mode: 0o711 });
    const base = path.join(project.baseDir, 'good-base.qcow2');
    await qcow2(base);
    fs.chmodSync(base, 0o444);
    project.addMachine('good', testMeta());
    await qcow2(path.join(project.vmDir, 'good-boot.qcow2'), base);
  });

  afterAll(async () => {
    await project?.remove();
  });

  it('exits 0 when everything needed is there, and says what it found', async () => {
    const { exitCode, stdout, report } = await doctor();
    expect(failed(report)).toEqual([]);
    expect(exitCode).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.mode).toBe('system');
    const ids = report.checks.map((c) => c.id);
    for (const id of ['mode', 'e2fsprogs', 'tool-nix', 'tool-qemu-img', 'tool-guestfish', 'tool-virsh', 'tool-ssh', 'kernel', 'kvm', 'libvirt', 'firmware', 'base-dir', 'apparmor', 'backing-files', 'hidden-home', 'networks', 'disk-type', 'reachable']) {
      expect(ids).toContain(id);
    }
    expect(stdout).toMatch(/^ok\s+qemu-img: qemu-img version \d/m);
    expect(stdout).toMatch(/^ok\s+libvirt: reachable at qemu:\/\/\/system \(libvirt \d/m);
    expect(stdout).toMatch(/^ok\s+VMs' backing files: 1 VM\(s\), every backing file inside /m);
    expect(stdout).toMatch(/^skip\s+AppArmor: not in this kernel/m);
    expect(stdout).toContain('everything ivm needs is here');
  });

  it('a tool missing on PATH', async () => {
    const bin = path.join(project.root, 'bin-without-ssh');
    fs.mkdirSync(bin);
    // Everything of /usr/bin but ssh (the stand-in nix is a script that needs the rest).
    for (const entry of fs.readdirSync('/usr/bin')) if (entry !== 'ssh') fs.symlinkSync(path.join('/usr/bin', entry), path.join(bin, entry));
    const { exitCode, stdout, stderr, report } = await doctor({ PATH: `${bin}:/usr/sbin:/sbin` });
    expect(exitCode).toBe(4);
    expect(failed(report)).toEqual(['tool-ssh']);
    expect(stdout).toMatch(/^FAIL\s+ssh: ssh: not found\n\s+fix: apt install openssh-client$/m);
    expect(stderr).toContain('doctor: 1 check(s) failed: tool-ssh');
  });

  it('libvirt unreachable at LIBVIRT_URI', async () => {
    const uri = 'qemu+unix:///system?socket=/nonexistent/libvirt-sock';
    const { exitCode, stdout, report } = await doctor({ LIBVIRT_URI: uri });
    expect(exitCode).toBe(4);
    expect(failed(report)).toEqual(['libvirt']);
    const check = report.checks.find((c) => c.id === 'libvirt')!;
    expect(check.found).toContain(`libvirt is unreachable at ${uri}`);
    expect(check.fix).toMatch(/libvirtd/);
    expect(stdout).toMatch(/^FAIL\s+libvirt: libvirt is unreachable/m);
  });

  it('a VM whose backing file is outside IVM_BASE_DIR; and create refuses such a base', async () => {
    const elsewhere = path.join(project.root, 'elsewhere', 'stray.qcow2');
    await qcow2(elsewhere);
    project.addMachine('stray', testMeta());
    const overlay = path.join(project.vmDir, 'stray-boot.qcow2');
    await qcow2(overlay, elsewhere);
    try {
      const { exitCode, stdout, report } = await doctor();
      expect(exitCode).toBe(4);
      expect(failed(report)).toEqual(['backing-files']);
      expect(stdout).toContain(`stray: backing file ${elsewhere} is outside IVM_BASE_DIR (${project.baseDir})`);
      expect(stdout).toContain('fix: ivm upgrade stray (builds its base into IVM_BASE_DIR and moves the VM onto it, keeping /var)');
    } finally {
      fs.rmSync(overlay);
    }
    // The overlay `ivm rollback` returns to counts too.
    const previous = path.join(project.vmDir, 'stray-boot-prev.qcow2');
    await qcow2(previous, elsewhere);
    try {
      const { exitCode, stdout } = await doctor();
      expect(exitCode).toBe(4);
      expect(stdout).toContain(`stray (rollback): backing file ${elsewhere} is outside IVM_BASE_DIR`);
      expect(stdout).toContain(`qemu-img rebase -u -F qcow2 -b ${path.join(project.baseDir, 'stray.qcow2')} ${previous}`);
    } finally {
      fs.rmSync(previous);
    }

    // create --no-build with a recorded base outside the folder: refused before any disk is made.
    fs.mkdirSync(path.join(project.root, '.ivm'), { recursive: true });
    fs.writeFileSync(path.join(project.root, '.ivm', 'stray.json'), JSON.stringify({ storePath: '/nix/store/x-stray', base: elsewhere }));
    const create = await project.ivm(['create', 'stray', '--no-build']);
    expect(create.exitCode).toBe(3);
    expect(create.stderr).toContain(`the base image ${elsewhere} is outside IVM_BASE_DIR (${project.baseDir})`);
    expect(fs.existsSync(overlay)).toBe(false);
    expect(fs.existsSync(path.join(project.vmDir, 'stray-var.qcow2'))).toBe(false);
    fs.rmSync(path.join(project.root, 'machines', 'stray'), { recursive: true });
  });

  it('a base in a hidden folder under a home directory', async () => {
    const home = path.join(project.root, 'home');
    const hiddenBaseDir = path.join(home, '.local', 'share', 'ivm', 'base-images');
    fs.mkdirSync(hiddenBaseDir, { recursive: true, mode: 0o755 });
    fs.chmodSync(hiddenBaseDir, 0o755);
    const base = path.join(hiddenBaseDir, 'hidden-base.qcow2');
    await qcow2(base);
    fs.chmodSync(base, 0o444);
    project.addMachine('hidden', testMeta());
    await qcow2(path.join(project.vmDir, 'hidden-boot.qcow2'), base);
    const { exitCode, stdout, report } = await doctor({ HOME: home, IVM_BASE_DIR: hiddenBaseDir });
    expect(exitCode).toBe(4);
    // good-boot.qcow2 is backed by the other folder: that is the backing-files check's business.
    expect(failed(report)).toEqual(['backing-files', 'hidden-home']);
    const check = report.checks.find((c) => c.id === 'hidden-home')!;
    expect(check.found).toContain(`IVM_BASE_DIR: ${hiddenBaseDir}`);
    expect(check.found).toContain(`hidden: ${base}`);
    expect(check.found).toContain(`in a hidden folder under ${home} (AppArmor denies QEMU @{HOME}/.*)`);
    expect(check.fix).toContain(`export IVM_BASE_DIR=${path.join(home, 'ivm', 'base-images')}`);
    expect(stdout).toMatch(/^FAIL\s+images outside hidden home folders: /m);
    fs.rmSync(path.join(project.vmDir, 'hidden-boot.qcow2'));
    fs.rmSync(path.join(project.root, 'machines', 'hidden'), { recursive: true });
  });

  it('AppArmor enabled without the rule, then with the rule in place', async () => {
    const root = path.join(project.root, 'sysroot');
    fs.mkdirSync(path.join(root, 'sys/module/apparmor/parameters'), { recursive: true });
    fs.writeFileSync(path.join(root, 'sys/module/apparmor/parameters/enabled'), 'Y\n');
    fs.mkdirSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d'), { recursive: true });
    fs.writeFileSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu'), 'include if exists <abstractions/libvirt-qemu.d>\n');
    const before = await doctor({ IVM_TEST_SYSROOT: root });
    expect(before.exitCode).toBe(4);
    expect(failed(before.report)).toEqual(['apparmor']);
    expect(before.stdout).toMatch(/^FAIL\s+AppArmor: enabled, and the rule for .* is missing in .*ivm-base-images\n\s+fix: ivm host setup --apply$/m);

    fs.writeFileSync(
      path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d/ivm-base-images'),
      (await import('../src/core/host/apparmor.ts')).ruleFile(project.baseDir),
    );
    const after = await doctor({ IVM_TEST_SYSROOT: root });
    expect(after.exitCode).toBe(0);
    expect(after.stdout).toMatch(/^ok\s+AppArmor: enabled; the rule for /m);
  });

  it('no kernel for guestfish', async () => {
    const { exitCode, stdout, report } = await doctor({ SUPERMIN_KERNEL: '/nonexistent/vmlinuz' });
    expect(exitCode).toBe(4);
    expect(failed(report)).toEqual(['kernel']);
    expect(stdout).toContain('SUPERMIN_KERNEL=/nonexistent/vmlinuz is missing or unreadable');
  });

  it("a machine whose network does not exist", async () => {
    project.addMachine('lost', testMeta('ivmt-no-such-net'));
    try {
      const { exitCode, stdout, report } = await doctor();
      expect(exitCode).toBe(4);
      expect(failed(report)).toEqual(['networks']);
      expect(stdout).toMatch(/^FAIL\s+machines' networks: lost: network ivmt-no-such-net does not exist\n\s+fix: ivm net create ivmt-no-such-net --kind nat --cidr /m);
    } finally {
      fs.rmSync(path.join(project.root, 'machines', 'lost'), { recursive: true });
    }
  });

  it('a VM folder QEMU cannot reach (a parent without o+x)', async () => {
    const vmDir = path.join(project.root, 'private', 'images');
    fs.mkdirSync(vmDir, { recursive: true });
    fs.chmodSync(path.dirname(vmDir), 0o700);
    const { exitCode, stdout, report } = await doctor({ IVM_VM_DIR: vmDir });
    expect(exitCode).toBe(4);
    expect(failed(report)).toEqual(['reachable']);
    expect(stdout).toContain(`FAIL  folders QEMU must reach: ${path.dirname(vmDir)}: no search permission for others`);
    expect(stdout).toContain(`fix: sudo chmod o+x ${path.dirname(vmDir)}`);
    const setup = await project.ivm(['host', 'setup'], { IVM_VM_DIR: vmDir });
    expect(setup.exitCode).toBe(3);
    expect(setup.stdout).toMatch(/PROBLEM folders QEMU must reach: .*private: no search permission for others; ivm leaves them alone/);
  });

  it('a base-image folder that breaks the contract', async () => {
    fs.chmodSync(project.baseDir, 0o775);
    try {
      const { exitCode, stdout, report } = await doctor();
      expect(exitCode).toBe(4);
      expect(failed(report)).toEqual(['base-dir']);
      expect(stdout).toMatch(/^FAIL\s+base-image folder: .*: mode 0775, not 0755\n\s+fix: ivm host setup --apply$/m);
    } finally {
      fs.chmodSync(project.baseDir, 0o755);
    }
  });
  it('a base-image folder this user cannot list is a failed check (doctor) and a plan (host setup), not a crash', async () => {
    // As nobody, with IVM_BASE_DIR root's and 0700: exactly what these two commands are for.
    const closed = path.join(project.root, 'closed-base');
    fs.mkdirSync(closed, { mode: 0o700 });
    const asNobody = (args: string[]) =>
      execa('runuser', ['-u', 'nobody', '--', process.execPath, IVM_BIN, ...args], {
        cwd: project.root,
        // No sudo (it would ask for a password); nobody cannot reach libvirt either, and says so.
        env: { ...project.env, HOME: '/tmp', IVM_BASE_DIR: closed, SUDO: '' },
        reject: false,
      });
    const doc = await asNobody(['doctor', '--json']);
    expect(doc.stderr).not.toMatch(/internal error|\n\s+at /);
    const check = (JSON.parse(doc.stdout) as DoctorReport).checks.find((c) => c.id === 'base-dir');
    expect(check?.status).toBe('fail');
    expect(check?.found).toContain(`${closed}: mode 0700, not 0755; its images cannot be listed by this user (EACCES)`);
    const setup = await asNobody(['host', 'setup']);
    // (libvirt's own message for nobody may say "internal error"; ivm's own never may.)
    expect(setup.stderr).not.toMatch(/ivm: internal error|\n\s+at /);
    expect(setup.stdout).toContain(`skip    base images: ${closed} cannot be listed by this user (EACCES)`);
    expect(setup.stdout).not.toContain('none installed yet');
    expect(setup.stdout).toMatch(new RegExp(`^chmod 0755 ${closed}$`, 'm'));
    expect(setup.exitCode).toBe(4);
  });

  it('a nix older than 2.8, and one whose version does not parse: failed checks with the text, not a crash', async () => {
    const real = (await doctor()).report.checks.find((c) => c.id === 'nix-version')!;
    expect(real.status).toBe('ok');
    expect(real.found).toMatch(/^\d+\.\d+\S* \(ivm needs 2\.8 or newer\)$/);
    // A real process answering --version like an old nix, and passing everything else to the real one.
    const fake = (name: string, version: string): string => {
      const file = path.join(project.root, name);
      fs.writeFileSync(file, `#!/bin/sh\nif [ "$1" = --version ]; then echo '${version}'; exit 0; fi\nexec nix "$@"\n`, { mode: 0o755 });
      return file;
    };
    const old = await doctor({ NIX: fake('nix-2.3', 'nix (Nix) 2.3.16') });
    expect(old.exitCode).toBe(4);
    expect(failed(old.report)).toEqual(['nix-version']);
    expect(old.stdout).toMatch(/^FAIL\s+nix version: 2\.3\.16 is older than 2\.8, the oldest ivm supports \(nix \(Nix\) 2\.3\.16\)\n\s+fix: install Nix 2\.8 or newer: .*https:\/\/nixos\.org\/nix\/install.*; or set NIX to a newer nix$/m);
    expect(old.stderr).toContain('doctor: 1 check(s) failed: nix-version');
    const odd = await doctor({ NIX: fake('nix-odd', 'nix (Nix) unstable') });
    expect(odd.exitCode).toBe(4);
    expect(failed(odd.report)).toEqual(['nix-version']);
    expect(odd.stdout).toContain('FAIL  nix version: no version in `nix --version`: "nix (Nix) unstable"');
  });

  it('an e2fsprogs too old for mkfs.ext4 -d (create builds /var with it) fails its check with the package', async () => {
    const real = (await doctor()).report.checks.find((c) => c.id === 'e2fsprogs')!;
    expect(real.status).toBe('ok');
    expect(real.found).toMatch(/^mkfs\.ext4 1\.\d+\.\d+, debugfs 1\.\d+\.\d+$/);
    // A PATH whose mkfs.ext4 is an old one (a real process printing what mke2fs 1.42 prints).
    const bin = path.join(project.root, 'old-e2fsprogs');
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(path.join(bin, 'mkfs.ext4'), "#!/bin/sh\necho 'mke2fs 1.42.9 (4-Feb-2014)' >&2\n", { mode: 0o755 });
    const old = await doctor({ PATH: `${bin}:${process.env.PATH}` });
    expect(old.exitCode).toBe(4);
    expect(failed(old.report)).toEqual(['e2fsprogs']);
    expect(old.stdout).toMatch(/^FAIL\s+e2fsprogs \(mkfs\.ext4 -d, debugfs\): mkfs\.ext4 1\.42\.9 is older than 1\.43 \(no mkfs\.ext4 -d\)\n\s+fix: .*apt(-get)? install.* e2fsprogs/m);
  });
});

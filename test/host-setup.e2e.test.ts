// ivm host setup on a temporary root: real folders and modes, real pools in the test libvirtd, the
// AppArmor files written under IVM_TEST_SYSROOT (this kernel has no AppArmor, so "enabled" is faked by a
// file there, and the reload by APPARMOR_PARSER=true) and compiled by the real apparmor_parser
// (-Q: no kernel needed) inside libvirt's own profile template; the skip when AppArmor is absent, a
// pool of another path left alone, session mode and a hidden home folder refused.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirt, virsh } from './support/libvirt.ts';
import { makeTestProject, type TestProject } from './support/ivm.ts';
import { END_MARK, BEGIN_MARK } from '../src/core/host/apparmor.ts';

const POOLS = ['basepool', 'vmpool'];

async function removePools(): Promise<void> {
  for (const pool of POOLS) {
    await virsh(['pool-destroy', pool]).catch(() => undefined);
    await virsh(['pool-undefine', pool]).catch(() => undefined);
  }
}

function sysroot(root: string, abstraction: string | undefined, enabled: boolean): string {
  const dir = path.join(root, `sysroot-${Math.random().toString(36).slice(2, 8)}`);
  fs.mkdirSync(path.join(dir, 'etc', 'apparmor.d', 'abstractions', 'libvirt-qemu.d'), { recursive: true });
  if (abstraction !== undefined) fs.writeFileSync(path.join(dir, 'etc', 'apparmor.d', 'abstractions', 'libvirt-qemu'), abstraction);
  if (enabled) {
    fs.mkdirSync(path.join(dir, 'sys', 'module', 'apparmor', 'parameters'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'sys', 'module', 'apparmor', 'parameters', 'enabled'), 'Y\n');
  }
  return dir;
}

const UPSTREAM = '  # libvirt 9 style\n  #include <abstractions/base>\n  include if exists <abstractions/libvirt-qemu.d>\n';
const DEBIAN_OLD = '  #include <abstractions/base>\n  #include <local/abstractions/libvirt-qemu>\n';

const modeOf = (file: string) => (fs.statSync(file).mode & 0o7777).toString(8).padStart(4, '0');

describe('ivm host setup', () => {
  let project: TestProject;
  let image: string;

  beforeAll(async () => {
    await ensureLibvirt();
    await removePools();
    project = await makeTestProject('ivm-host-');
    // A base folder of the wrong mode, holding a writable image.
    fs.mkdirSync(project.baseDir, { mode: 0o700 });
    fs.chmodSync(project.baseDir, 0o700);
    image = path.join(project.baseDir, 'abcd0000000000000000000000000000-image.qcow2');
    fs.writeFileSync(image, 'not really an image');
    fs.chmodSync(image, 0o644);
  });

  afterAll(async () => {
    await removePools();
    await project?.remove();
  });

  it('without --apply prints the plan and changes nothing', async () => {
    const root = sysroot(project.root, UPSTREAM, true);
    const r = await project.ivm(['host', 'setup'], { IVM_TEST_SYSROOT: root });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/todo\s+base-image folder: .*mode 0700; wants root, 0755/);
    expect(r.stdout).toMatch(/todo\s+base images: abcd0000000000000000000000000000-image\.qcow2: wants root, 0444/);
    expect(r.stdout).toMatch(/todo\s+AppArmor: write .*libvirt-qemu\.d\/ivm-base-images/);
    expect(r.stdout).toContain(`chmod 0755 ${project.baseDir}`);
    expect(r.stdout).toContain(`pool-define-as basepool dir --target ${project.baseDir}`);
    expect(r.stdout).toContain('run `ivm host setup --apply`');
    expect(modeOf(project.baseDir)).toBe('0700');
    expect(modeOf(image)).toBe('0644');
    expect(fs.existsSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d/ivm-base-images'))).toBe(false);
    await expect(virsh(['pool-info', 'basepool'])).rejects.toThrow();
  });

  it('--apply does it (upstream libvirt-qemu.d), and a second --apply finds nothing to do', async () => {
    const root = sysroot(project.root, UPSTREAM, true);
    const first = await project.ivm(['host', 'setup', '--apply'], { IVM_TEST_SYSROOT: root });
    expect(first.stderr).not.toMatch(/^ivm: /m);
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toMatch(/done: \d+ step/);

    expect(modeOf(project.baseDir)).toBe('0755');
    expect(fs.statSync(project.baseDir).uid).toBe(0);
    expect(modeOf(image)).toBe('0444');
    expect(fs.statSync(project.vmDir).isDirectory()).toBe(true);

    const rule = path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d/ivm-base-images');
    expect(fs.readFileSync(rule, 'utf8')).toBe(
      [
        '# Written by ivm (`ivm host setup --apply`); rewritten when IVM_BASE_DIR changes.',
        '# QEMU may read the shared base images (backing files of every VM); one rule for the folder.',
        `"${project.baseDir}/" r,`,
        `"${project.baseDir}/**" rk,`,
        '',
      ].join('\n'),
    );
    expect(modeOf(rule)).toBe('0644');
    // Only the rule file: no per-file or per-VM rule, the abstraction itself untouched.
    expect(fs.readdirSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d'))).toEqual(['ivm-base-images']);
    expect(fs.readFileSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu'), 'utf8')).toBe(UPSTREAM);

    for (const [pool, dir] of [['basepool', project.baseDir], ['vmpool', project.vmDir]] as const) {
      expect(await virsh(['pool-dumpxml', pool])).toContain(`<path>${dir}</path>`);
      const info = await virsh(['pool-info', pool]);
      expect(info).toMatch(/^State:\s+running/m);
      expect(info).toMatch(/^Autostart:\s+yes/m);
    }

    const second = await project.ivm(['host', 'setup', '--apply'], { IVM_TEST_SYSROOT: root });
    expect(second.exitCode).toBe(0);
    expect(second.stdout).toContain('nothing to do: the host is set up');
    expect(second.stdout).not.toMatch(/^todo/m);
    expect(second.stdout).toMatch(/ok\s+AppArmor: the rule for/);
  });

  it('older Debian/Ubuntu (local/abstractions/libvirt-qemu): a managed block next to what is there, then a reload', async () => {
    const root = sysroot(project.root, DEBIAN_OLD, true);
    const local = path.join(root, 'etc/apparmor.d/local/abstractions/libvirt-qemu');
    fs.mkdirSync(path.dirname(local), { recursive: true });
    fs.writeFileSync(local, '# site rule\n"/srv/isos/**" r,\n');
    const profile = path.join(root, 'etc/apparmor.d/libvirt/libvirt-0b7c6f4e-1d2a-4c3b-9e8f-7a6b5c4d3e2f');
    fs.mkdirSync(path.dirname(profile), { recursive: true });
    fs.writeFileSync(profile, 'profile libvirt-0b7c6f4e { }\n');
    fs.writeFileSync(`${profile}.files`, '');
    const env = { IVM_TEST_SYSROOT: root, APPARMOR_PARSER: 'true' };

    const first = await project.ivm(['--verbose', 'host', 'setup', '--apply'], env);
    expect(first.exitCode, first.stderr).toBe(0);
    expect(first.stderr.split("\n")).toContain(`+ true -r -T -- ${profile}`);
    const text = fs.readFileSync(local, 'utf8');
    expect(text).toBe(
      `# site rule\n"/srv/isos/**" r,\n${BEGIN_MARK}\n` +
        '# QEMU may read the shared base images (backing files of every VM); one rule for the folder.\n' +
        `"${project.baseDir}/" r,\n"${project.baseDir}/**" rk,\n${END_MARK}\n`,
    );
    expect(fs.existsSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d/ivm-base-images'))).toBe(false);

    const second = await project.ivm(['--verbose', 'host', 'setup', '--apply'], env);
    expect(second.exitCode).toBe(0);
    expect(second.stdout).toContain('nothing to do');
    expect(second.stderr).not.toContain('+ true');
    expect(fs.readFileSync(local, 'utf8')).toBe(text);
  });

  it("the rule compiles with the real apparmor_parser inside the host's own libvirt profile template, in both layouts", async () => {
    // A copy of this host's /etc/apparmor.d (Debian 12: libvirt reads local/abstractions/libvirt-qemu).
    const root = path.join(project.root, 'sysroot-real');
    fs.mkdirSync(path.join(root, 'etc'), { recursive: true });
    await execa('cp', ['-a', '/etc/apparmor.d', path.join(root, 'etc')]);
    fs.mkdirSync(path.join(root, 'sys/module/apparmor/parameters'), { recursive: true });
    fs.writeFileSync(path.join(root, 'sys/module/apparmor/parameters/enabled'), 'Y\n');
    const dir = path.join(root, 'etc', 'apparmor.d');
    const template = path.join(dir, 'libvirt', 'TEMPLATE.qemu');
    const rule = `"${project.baseDir}/**" rk,`;
    const compile = () => execa('apparmor_parser', ['-Q', '-K', '-T', '--base', dir, '-I', dir, template], { reject: false });
    const expand = async () => (await execa('apparmor_parser', ['-p', '--base', dir, '-I', dir, template])).stdout;

    const local = await project.ivm(['host', 'setup', '--apply'], { IVM_TEST_SYSROOT: root });
    expect(local.exitCode, local.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'local/abstractions/libvirt-qemu'), 'utf8')).toContain(rule);
    const first = await compile();
    expect(first.exitCode, first.stderr).toBe(0);
    expect(await expand()).toContain(rule);

    // Upstream libvirt's layout: the abstraction includes libvirt-qemu.d/.
    fs.appendFileSync(path.join(dir, 'abstractions/libvirt-qemu'), '  include if exists <abstractions/libvirt-qemu.d>\n');
    fs.mkdirSync(path.join(dir, 'abstractions/libvirt-qemu.d'), { recursive: true });
    const upstream = await project.ivm(['host', 'setup', '--apply'], { IVM_TEST_SYSROOT: root });
    expect(upstream.exitCode, upstream.stderr).toBe(0);
    expect(fs.readFileSync(path.join(dir, 'abstractions/libvirt-qemu.d/ivm-base-images'), 'utf8')).toContain(rule);
    const second = await compile();
    expect(second.exitCode, second.stderr).toBe(0);

    // The parser is a real check: a broken rule in the same place fails to compile.
    fs.appendFileSync(path.join(dir, 'abstractions/libvirt-qemu.d/ivm-base-images'), '"/x/**" rkz,\n');
    expect((await compile()).exitCode).not.toBe(0);
  });

  it('skips AppArmor cleanly, saying so, where it is not enabled', async () => {
    const root = sysroot(project.root, UPSTREAM, false);
    const r = await project.ivm(['host', 'setup', '--apply'], { IVM_TEST_SYSROOT: root });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/skip\s+AppArmor: not in this kernel \(no .*enabled\): no rule needed, nothing written/);
    expect(fs.readdirSync(path.join(root, 'etc/apparmor.d/abstractions/libvirt-qemu.d'))).toEqual([]);
    // The host's real state here: no AppArmor at all.
    const real = await project.ivm(['host', 'setup']);
    expect(real.stdout).toMatch(/skip\s+AppArmor: /);
  });

  it('reports a pool of the same name with another path and leaves it alone (exit 3)', async () => {
    const other = path.join(project.root, 'other-base');
    const r = await project.ivm(['host', 'setup', '--apply'], { IVM_BASE_DIR: other, IVM_TEST_SYSROOT: sysroot(project.root, UPSTREAM, false) });
    expect(r.exitCode).toBe(3);
    expect(r.stdout).toMatch(new RegExp(`PROBLEM pool basepool: exists with path ${project.baseDir}, not ${other}: left alone`));
    expect(r.stderr).toContain('host setup cannot fix 1 item(s) itself');
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(await virsh(['pool-dumpxml', 'basepool'])).toContain(`<path>${project.baseDir}</path>`);
  });

  it('says libvirt is unreachable (exit 4), after reporting what it could check', async () => {
    const uri = 'qemu+unix:///system?socket=/nonexistent/libvirt-sock';
    const r = await project.ivm(['host', 'setup'], { LIBVIRT_URI: uri, IVM_TEST_SYSROOT: sysroot(project.root, UPSTREAM, false) });
    expect(r.exitCode).toBe(4);
    expect(r.stdout).toMatch(/skip\s+AppArmor: /);
    expect(r.stdout).toContain(`PROBLEM storage pools: not checked: libvirt is unreachable at ${uri}`);
    expect(r.stderr).toContain('host setup cannot fix 1 item(s) itself');
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  });

  it('session mode: folders under the home folder (not hidden), no AppArmor rule, no pools, no sudo', async () => {
    const home = path.join(project.root, 'home');
    fs.mkdirSync(home);
    const env = { LIBVIRT_URI: 'qemu:///session', HOME: home, IVM_BASE_DIR: '', IVM_VM_DIR: '', XDG_DATA_HOME: '', SUDO: 'sudo' };
    const r = await project.ivm(['host', 'setup', '--apply'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('mode: session (qemu:///session)');
    expect(r.stdout).toMatch(/skip\s+AppArmor: session mode/);
    expect(r.stdout).toMatch(/skip\s+storage pools: session mode: no system pools/);
    expect(r.stdout).not.toContain('sudo');
    expect(fs.statSync(path.join(home, 'ivm', 'base-images')).isDirectory()).toBe(true);
    expect(fs.statSync(path.join(home, 'ivm', 'images')).isDirectory()).toBe(true);
  });

  it('refuses folders in a hidden folder of a home directory', async () => {
    const r = await project.ivm(['host', 'setup'], { HOME: '/root', IVM_BASE_DIR: '/root/.local/share/ivm/base-images' });
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('is inside a hidden folder of /root: AppArmor denies QEMU every path under @{HOME}/.*');
    expect(fs.existsSync('/root/.local/share/ivm/base-images')).toBe(false);
  });
});

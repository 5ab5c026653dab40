// Session mode against a real qemu:///session daemon (libvirt starts it on demand for the user; here
// root's, with HOME in a scratch folder): no sudo anywhere, folders under ~/ivm, user-mode
// networking in the domain libvirt accepts, host setup and doctor in session terms. No boot.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeTestProject, type TestProject } from './support/ivm.ts';
import type { DoctorReport } from '../src/core/host/doctor.ts';

const NAME = 'e2e-session';

describe('session mode (qemu:///session)', () => {
  let project: TestProject;
  let env: Record<string, string>;

  async function sessionVirsh(args: string[]) {
    return execa('virsh', ['-c', 'qemu:///session', ...args], { env: { HOME: env.HOME! }, reject: false, timeout: 60_000 });
  }

  beforeAll(async () => {
    project = await makeTestProject('ivm-session-');
    const home = path.join(project.root, 'home');
    fs.mkdirSync(home, { mode: 0o755 });
    // SUDO set on purpose: session mode must not use it. The folders are left to their defaults.
    env = { LIBVIRT_URI: 'qemu:///session', HOME: home, SUDO: 'sudo', IVM_BASE_DIR: '', IVM_VM_DIR: '', XDG_DATA_HOME: '', XDG_RUNTIME_DIR: '' };
    project.addMachine(NAME, '{ system = "x86_64-linux"; virtType = "qemu"; memory = 256; vcpus = 1; network = "default"; ipAddress = "192.168.122.9"; }\n');
  });

  afterAll(async () => {
    if (env) await sessionVirsh(['undefine', '--nvram', NAME]);
    await project?.remove();
  });

  it('host setup makes ~/ivm/base-images and ~/ivm/images, with no sudo, no AppArmor rule, no pools', async () => {
    const r = await project.ivm(['--verbose', 'host', 'setup', '--apply'], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain(`+ mkdir -p -m 0755 ${env.HOME}/ivm/base-images`);
    expect(r.stderr + r.stdout).not.toMatch(/\bsudo\b/);
    expect(fs.statSync(path.join(env.HOME!, 'ivm', 'base-images')).mode & 0o7777).toBe(0o755);
    expect(r.stdout).toMatch(/skip\s+storage pools: session mode/);
  });

  it('define: the domain in the session daemon uses user-mode networking (no libvirt network, no reservation)', async () => {
    expect((await project.ivm(['identity', NAME], env)).exitCode).toBe(0);
    const r = await project.ivm(['--verbose', 'define', NAME], env);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^\+ virsh -c qemu:\/\/\/session define /m);
    expect(r.stderr).not.toMatch(/\bsudo\b/);
    const xml = (await sessionVirsh(['dumpxml', NAME])).stdout;
    expect(xml).toContain("<interface type='user'>");
    expect(xml).not.toContain("<source network='default'/>");
    expect(xml).toContain(`<source file='${env.HOME}/ivm/images/${NAME}-boot.qcow2'/>`);
  });

  it('net create is refused in session mode (exit 3), saying why', async () => {
    const r = await project.ivm(['net', 'create', 'ivmt-sess', '--cidr', '192.168.217.0/24'], env);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('session mode (qemu:///session): ivm does not create libvirt networks');
  });

  it('doctor reports session mode, reaches the session daemon, and skips what session mode does not use', async () => {
    const r = await project.ivm(['doctor', '--json'], env);
    const report = JSON.parse(r.stdout) as DoctorReport;
    const byId = Object.fromEntries(report.checks.map((c) => [c.id, c]));
    expect(report.mode).toBe('session');
    expect(byId.mode!.found).toContain('session (qemu:///session): VMs run as you, no root and no sudo');
    expect(byId.libvirt!.status).toBe('ok');
    expect(byId['base-dir']!.status).toBe('ok');
    expect(byId['base-dir']!.found).toContain(`${env.HOME}/ivm/base-images: yours, 0755`);
    expect(byId.apparmor!.status).toBe('skip');
    expect(byId.networks!.status).toBe('skip');
    expect(byId['disk-type']!.status).toBe('ok');
    expect(report.checks.filter((c) => c.status === 'fail')).toEqual([]);
    expect(r.exitCode).toBe(0);
  });
});

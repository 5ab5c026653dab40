// ivm export: a standalone provisioner (a Makefile and its data) that makes and runs the VM with
// make, virsh, qemu-img and ssh only, run here with a PATH that holds links to just those tools (no
// node, no ivm).
//   - Two boots of one machine named *-agent (the stand-in guest answers the guest agent, then
//     serves SSH with Debian's sshd and the host key from /var/identity): `make up` boots it with
//     its identity, `make ip` asks the guest agent, `make ssh` logs in with the pinned host key
//     (as user, then as admin, which lets the guest power off), `make down` keeps the /var disk,
//     and `make up` again boots on it (the boot count the guest keeps on /var goes up). The
//     provisioner's own folder has blanks, quotes, `$`, `%` and `#` in its path. While it runs,
//     destroy refuses it and a stop that times out says so (this guest ignores the power button).
//   - One boot of a machine named *-hold (the guest waits for the ACPI power button): `make stop`
//     shuts it down gracefully, `make down` then undefines it and keeps the /var disk.
//   - No boot: image folders whose paths hold blanks, quotes, `$`, `#`, `%` and parentheses;
//     `export --all` of two machines, whose top-level Makefile creates, reports and destroys both
//     for real (`make -n up` too); bad input: an unknown machine, no identity, no build (and
//     --build), a file, a folder that is not empty (refused; --force works and keeps other files), a
//     link as the folder or as a file in it, values no Makefile can hold, --dry-run, --help.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, guestNetworkPrefix, virsh, waitForState } from './support/libvirt.ts';
import { freePort, waitForPort } from './support/ports.ts';
import { makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { parseStandinLog, repoRoot, sha256File } from './support/standin.ts';
import { domainUuid } from '../src/core/identity/identity.ts';

/** The programs a provisioner may run (besides /bin/sh, named by its absolute path). */
const TOOLS = ['make', 'id', 'virsh', 'qemu-img', 'ssh', 'cp', 'ln', 'rm', 'mkdir', 'chmod', 'sleep', 'expr'];

/** A folder of links to just these programs, to be the whole PATH. */
async function toolFolder(dir: string, tools: string[]): Promise<string> {
  fs.mkdirSync(dir, { recursive: true });
  for (const tool of tools) {
    const { stdout } = await execa('sh', ['-c', `command -v ${tool}`]);
    fs.symlinkSync(stdout.trim(), path.join(dir, tool));
  }
  return dir;
}

interface MakeRun {
  exitCode: number;
  stdout: string;
  stderr: string;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));


describe('ivm export NAME DIR: the provisioner boots the VM without ivm (two boots)', () => {
  const VM = 'e2e-exp-agent';
  let project: TestProject;
  let machineDir: string;
  let out: string;
  let tools: string;
  let exported: MakeRun;
  let makeEnv: Record<string, string>;

  const make = async (args: string[], env: Record<string, string> = {}): Promise<MakeRun> => {
    const r = await execa(path.join(tools, 'make'), ['-C', out, ...args], { env: { ...makeEnv, ...env }, extendEnv: false, reject: false, stdin: 'ignore', timeout: 300_000 });
    return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const serialLog = () => parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${VM}-serial.log`), 'utf8'));
  /** ssh until it logs in (the address comes by DHCP before sshd listens), up to `seconds`. */
  const sshUntilIn = async (vars: string[], seconds: number): Promise<MakeRun> => {
    const deadline = Date.now() + seconds * 1000;
    for (;;) {
      const r = await make(['ssh', ...vars]);
      if (r.exitCode === 0 || Date.now() > deadline) return r;
      await sleep(3000);
    }
  };

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(VM);
    project = await makeTestProject('ivm-exp-');
    await project.useStandinBase('a');
    const key = path.join(project.root, 'client_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ivm-test-client', '-f', key]);
    const pub = fs.readFileSync(`${key}.pub`, 'utf8');
    machineDir = project.addMachine(VM, testMeta(), { user_authorized_keys: pub, admin_authorized_keys: pub });
    expect((await project.ivm(['identity', VM])).exitCode).toBe(0);
    expect((await project.ivm(['build', VM])).exitCode).toBe(0);
    out = path.join(project.root, `provisioner dir 'q' "d" $x %d #h`);
    exported = await project.ivm(['export', VM, out]);
    tools = await toolFolder(path.join(project.root, 'tools'), TOOLS);
    // ssh from where the network's bridge is (the tests' libvirtd has a namespace of its own),
    // with the client key only, never asking anything. `ip netns exec` finds ssh on the PATH.
    const prefix = await guestNetworkPrefix();
    const ip = prefix.length > 0 ? (await execa('sh', ['-c', 'command -v ip'])).stdout.trim() : undefined;
    const ssh = [...(ip ? [ip, ...prefix.slice(1)] : []), 'ssh', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10'].join(' ');
    makeEnv = { PATH: tools, HOME: project.root, LIBVIRT_URI: 'qemu:///system', SSH: ssh };
  });

  afterAll(async () => {
    await cleanupDomain(VM);
    await project?.remove();
  });

  it('writes the Makefile, the domain XML, the ready /var image (0600, git-ignored), known_hosts and a README', async () => {
    expect(exported.exitCode, exported.stderr).toBe(0);
    expect(exported.stdout).toContain(`exported ${VM} to ${out}`);
    expect(fs.readdirSync(out).sort()).toEqual(['.gitignore', 'Makefile', 'README.md', 'domain.xml', 'known_hosts', 'var.qcow2']);
    expect(fs.statSync(path.join(out, 'var.qcow2')).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(path.join(out, '.gitignore'), 'utf8')).toMatch(/^var\.qcow2$/m);
    expect(fs.readFileSync(path.join(out, 'known_hosts'), 'utf8')).toBe(fs.readFileSync(path.join(machineDir, 'known_hosts'), 'utf8'));
    await execa('virt-xml-validate', [path.join(out, 'domain.xml'), 'domain']);
    const machineId = fs.readFileSync(path.join(machineDir, 'machine-id'), 'utf8').trim();
    const xml = fs.readFileSync(path.join(out, 'domain.xml'), 'utf8');
    expect(xml).toContain(`<uuid>${domainUuid(machineId)}</uuid>`);
    expect(xml).toContain(`<source file='${path.join(project.vmDir, `${VM}-var.qcow2`)}'/>`);
    const base = fs.readdirSync(project.baseDir).map((f) => path.join(project.baseDir, f))[0]!;
    const makefile = fs.readFileSync(path.join(out, 'Makefile'), 'utf8');
    expect(makefile).toContain(`override BASE := ${base}`);
    expect(makefile).toContain(`override VM_DIR := ${project.vmDir}`);
    const { stdout } = await execa('qemu-img', ['info', '--output=json', path.join(out, 'var.qcow2')]);
    expect(JSON.parse(stdout)).toMatchObject({ format: 'qcow2', 'virtual-size': 128 * 1024 * 1024 });
    const readme = fs.readFileSync(path.join(out, 'README.md'), 'utf8');
    for (const target of ['up', 'down', 'create', 'start', 'stop', 'console', 'ssh', 'status', 'destroy']) expect(readme).toContain(`make ${target}`);
    expect(readme).toContain(base);
    // make lists its targets
    const help = await make([]);
    expect(help.exitCode, help.stderr).toBe(0);
    expect(help.stdout).toMatch(/^ {2}up +create, then start$/m);
  });

  it('runs only the tools of its PATH: without virsh there, make up fails saying so and makes nothing', async () => {
    expect(fs.readdirSync(tools).sort()).toEqual([...TOOLS].sort());
    expect(fs.existsSync(path.join(tools, 'node'))).toBe(false);
    const noVirsh = await toolFolder(path.join(project.root, 'tools-no-virsh'), TOOLS.filter((t) => t !== 'virsh'));
    const r = await make(['up'], { PATH: noVirsh });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/virsh: not found/);
    expect(fs.existsSync(project.vmDir) ? fs.readdirSync(project.vmDir) : []).toEqual([]);
    expect(await domainState(VM)).toBeNull();
  });

  it('make up boots the guest with its identity; make ip asks the guest agent; make ssh logs in with the pinned host key', async () => {
    const up = await make(['up']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain(`created ${VM}`);
    expect(up.stdout).toContain(`started ${VM}`);
    expect(up.stderr).toMatch(/^\+ cp \.\/var\.qcow2 \S+-var\.qcow2\.new$/m);
    expect(up.stderr).toMatch(/^\+ qemu-img create -q -f qcow2 -b \S+\.qcow2 -F qcow2 \S+-boot\.qcow2\.new$/m);
    expect(fs.statSync(path.join(project.vmDir, `${VM}-var.qcow2`)).mode & 0o777).toBe(0o600);

    // While the guest answers the agent protocol, it reports an address no lease could give.
    const ip = await make(['ip', 'WAIT=90']);
    expect(ip.exitCode, ip.stderr).toBe(0);
    expect(ip.stdout).toMatch(/^192\.0\.2\.77$/m);

    const user = await sshUntilIn(['CMD=id -un; cat /var/identity/hostname'], 150);
    expect(user.exitCode, user.stderr).toBe(0);
    expect(user.stdout).toMatch(new RegExp(`^user\\n${VM}$`, 'm'));
    const admin = await make(['ssh', 'ADMIN=1', 'CMD=id -un >/tmp/ivm-ssh-done']);
    expect(admin.exitCode, admin.stderr).toBe(0);
    await waitForState(VM, 'shut off', 240_000);

    const log = serialLog();
    expect(log.errors).toEqual([]);
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(machineDir, 'machine-id'), 'utf8'));
    expect(log.files.hostname?.content.trim()).toBe(VM);
    expect(log.sshDoneBy).toBe('admin');
    expect(log.bootCount).toBe(1);
  }, 900_000);

  it('make ssh refuses a host that does not show the pinned key', async () => {
    // The known_hosts of the provisioner pins another key: ssh must refuse the guest's.
    const pinned = fs.readFileSync(path.join(out, 'known_hosts'), 'utf8');
    const other = path.join(project.root, 'other_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const port = await freePort();
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const sshd = execa('/usr/sbin/sshd', ['-D', '-e', '-f', '/dev/null', '-o', `HostKey=${other}`, '-o', 'ListenAddress=127.0.0.1', '-o', `Port=${port}`, '-o', 'PidFile=none', '-o', 'UsePAM=no'], { reject: false, stdin: 'ignore' });
    try {
      await waitForPort(port);
      // Loopback is the host's own: ssh without the network namespace's prefix.
      const r = await make(['ssh', 'ADDRESS=127.0.0.1', `PORT=${port}`, 'CMD=true'], { SSH: makeEnv.SSH!.replace(/^.*?\bssh\b/, 'ssh') });
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toMatch(/Host key verification failed/);
      expect(fs.readFileSync(path.join(out, 'known_hosts'), 'utf8')).toBe(pinned);
    } finally {
      sshd.kill('SIGTERM');
      await sshd;
    }
  });

  it('make down keeps the /var disk; make up again boots on it (its boot count goes up)', async () => {
    const varDisk = path.join(project.vmDir, `${VM}-var.qcow2`);
    const before = await sha256File(varDisk);
    const down = await make(['down']);
    expect(down.exitCode, down.stderr).toBe(0);
    expect(down.stdout).toContain(`kept its /var disk ${varDisk}`);
    expect(await domainState(VM)).toBeNull();
    expect(fs.existsSync(path.join(project.vmDir, `${VM}-boot.qcow2`))).toBe(false);
    expect(await sha256File(varDisk)).toBe(before);

    const up = await make(['up']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain(`reusing its kept /var disk ${varDisk}`);
    expect(up.stderr).not.toMatch(/^\+ cp /m);
    // A running VM: destroy refuses it; this guest ignores the power button, so stop gives up.
    const destroy = await make(['destroy']);
    expect(destroy.exitCode).not.toBe(0);
    expect(destroy.stderr).toContain(`${VM}: it is running`);
    const stop = await make(['stop', 'TIMEOUT=2']);
    expect(stop.exitCode).not.toBe(0);
    expect(stop.stderr).toContain(`${VM}: it did not shut down within 2 s`);
    expect(await domainState(VM)).toBe('running');
    // Ended quickly: the agent asked, then an admin login lets the guest power off.
    expect((await make(['ip', 'WAIT=90'])).exitCode).toBe(0);
    const admin = await sshUntilIn(['ADMIN=1', 'CMD=id -un >/tmp/ivm-ssh-done'], 150);
    expect(admin.exitCode, admin.stderr).toBe(0);
    await waitForState(VM, 'shut off', 240_000);
    const log = serialLog();
    expect(log.errors).toEqual([]);
    expect(log.bootCount).toBe(2);
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(machineDir, 'machine-id'), 'utf8'));
    // status tells the state and the files
    const status = await make(['status']);
    expect(status.exitCode, status.stderr).toBe(0);
    expect(status.stdout).toContain(`${VM}: shut off`);
    expect(status.stdout).toContain(`${varDisk}: present`);
  }, 900_000);

  it('make up with the base missing fails, naming the base, and makes nothing', async () => {
    expect((await make(['down'])).exitCode).toBe(0);
    const base = fs.readdirSync(project.baseDir).map((f) => path.join(project.baseDir, f))[0]!;
    fs.renameSync(base, `${base}.away`);
    try {
      const r = await make(['up']);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toContain(`${VM}: the base image ${base} is missing`);
      expect(await domainState(VM)).toBeNull();
      expect(fs.existsSync(path.join(project.vmDir, `${VM}-boot.qcow2`))).toBe(false);
    } finally {
      fs.renameSync(`${base}.away`, base);
    }
  });

  it('make destroy PURGE=1 deletes the /var disk too (PURGE in the environment does not)', async () => {
    const kept = await make(['destroy'], { PURGE: '1' });
    expect(kept.exitCode, kept.stderr).toBe(0);
    expect(fs.readdirSync(project.vmDir)).toEqual([`${VM}-var.qcow2`]);
    const r = await make(['destroy', 'PURGE=1']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readdirSync(project.vmDir)).toEqual([]);
  });
});

describe('ivm export: make stop shuts a running VM down gracefully (one boot)', () => {
  // A guest named *-hold waits for the ACPI power button (virsh shutdown) after its report.
  const VM = 'e2e-exp-hold';
  let project: TestProject;
  let out: string;
  let tools: string;

  const make = async (args: string[]): Promise<MakeRun> => {
    const r = await execa(path.join(tools, 'make'), ['-C', out, ...args], { env: { PATH: tools, LIBVIRT_URI: 'qemu:///system' }, extendEnv: false, reject: false, stdin: 'ignore' });
    return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
  };

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(VM);
    project = await makeTestProject('ivm-exp-hold-');
    await project.useStandinBase('a');
    project.addMachine(VM, testMeta());
    expect((await project.ivm(['identity', VM])).exitCode).toBe(0);
    expect((await project.ivm(['build', VM])).exitCode).toBe(0);
    out = path.join(project.root, 'out');
    expect((await project.ivm(['export', VM, out])).exitCode).toBe(0);
    tools = await toolFolder(path.join(project.root, 'tools'), TOOLS);
  });

  afterAll(async () => {
    await cleanupDomain(VM);
    await project?.remove();
  });

  it('make stop: virsh shutdown and a wait until it is off; make down then undefines it, keeping the /var disk', async () => {
    const up = await make(['up']);
    expect(up.exitCode, up.stderr).toBe(0);
    const logFile = path.join(project.vmDir, `${VM}-serial.log`);
    const deadline = Date.now() + 180_000;
    while (!(fs.existsSync(logFile) && fs.readFileSync(logFile, 'utf8').includes('IVM-HOLD waiting')) && Date.now() < deadline) await sleep(1000);
    expect(fs.readFileSync(logFile, 'utf8')).toContain('IVM-HOLD waiting');
    expect(await domainState(VM)).toBe('running');
    const stop = await make(['stop']);
    expect(stop.exitCode, stop.stderr).toBe(0);
    expect(stop.stderr).toMatch(/^\+ virsh -c qemu:\/\/\/system shutdown e2e-exp-hold$/m);
    expect(stop.stdout).toContain(`${VM} shut off`);
    expect(await domainState(VM)).toBe('shut off');
    // The guest saw the power button (it did not time out) and ended cleanly.
    const log = parseStandinLog(fs.readFileSync(logFile, 'utf8'));
    expect(fs.readFileSync(logFile, 'utf8')).toContain('IVM-HOLD power-button');
    expect(log.errors).toEqual([]);
    expect(log.complete).toBe(true);
    const down = await make(['down']);
    expect(down.exitCode, down.stderr).toBe(0);
    expect(down.stdout).toContain(`${VM} is not running (shut off)`);
    expect(await domainState(VM)).toBeNull();
    expect(fs.readdirSync(project.vmDir)).toEqual([`${VM}-var.qcow2`]);
    expect((await make(['destroy', 'PURGE=1'])).exitCode).toBe(0);
    expect(fs.readdirSync(project.vmDir)).toEqual([]);
  }, 600_000);
});

describe('ivm export: odd paths, --all, bad input (no boot)', () => {
  const A = 'e2e-exp-a';
  const B = 'e2e-exp-b';
  let project: TestProject;
  let tools: string;

  const make = async (dir: string, args: string[]): Promise<MakeRun> => {
    const r = await execa(path.join(tools, 'make'), ['-C', dir, ...args], { env: { PATH: tools, LIBVIRT_URI: 'qemu:///system' }, extendEnv: false, reject: false, stdin: 'ignore' });
    return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  const expectClean = (r: { exitCode: number; stderr: string }, code: number, text: string | RegExp) => {
    expect(r.stderr).not.toMatch(/internal error|at .*\.ts:\d+/);
    expect(r.stderr).toMatch(text);
    expect(r.exitCode).toBe(code);
  };

  beforeAll(async () => {
    await ensureNetwork('default');
    for (const name of [A, B]) await cleanupDomain(name);
    project = await makeTestProject('ivm-exp-odd-');
    // Image folders whose paths a Makefile must quote: blanks, quotes, $, #, % and parentheses.
    project.env.IVM_BASE_DIR = project.baseDir = path.join(project.root, `base $b #c 'q' %d (p)`);
    project.env.IVM_VM_DIR = project.vmDir = path.join(project.root, `images $v #w 'q' %d (p)`);
    await project.useStandinBase('a');
    for (const name of [A, B]) {
      project.addMachine(name, testMeta());
      expect((await project.ivm(['identity', name])).exitCode).toBe(0);
      expect((await project.ivm(['build', name])).exitCode).toBe(0);
    }
    tools = await toolFolder(path.join(project.root, 'tools'), TOOLS);
  });

  afterAll(async () => {
    for (const name of [A, B]) await cleanupDomain(name);
    await project?.remove();
  });

  it('--all: a provisioner per machine and a Makefile that runs them (make -n up; create, status and destroy for real)', async () => {
    const dir = path.join(project.root, 'fleet');
    const r = await project.ivm(['export', '--all', dir]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(fs.readdirSync(dir).sort()).toEqual(['.gitignore', 'Makefile', 'README.md', A, B]);
    for (const name of [A, B]) expect(fs.statSync(path.join(dir, name, 'var.qcow2')).mode & 0o777).toBe(0o600);

    const plan = await make(dir, ['-n', 'up']);
    expect(plan.exitCode, plan.stderr).toBe(0);
    for (const name of [A, B]) {
      expect(plan.stdout).toContain(`-C ${name} up`);
      expect(plan.stdout).toContain(`virsh -c 'qemu:///system' define ./domain.xml`);
      expect(plan.stdout).toContain(`virsh -c 'qemu:///system' start ${name}`);
    }
    expect(await domainState(A)).toBeNull();

    const created = await make(dir, ['create']);
    expect(created.exitCode, created.stderr).toBe(0);
    for (const name of [A, B]) {
      expect(await domainState(name)).toBe('shut off');
      for (const disk of ['boot', 'var']) expect(fs.existsSync(path.join(project.vmDir, `${name}-${disk}.qcow2`)), `${name} ${disk}`).toBe(true);
      const dumped = await virsh(['dumpxml', name]);
      expect(dumped).toContain(`${name}-var.qcow2`);
    }
    const { stdout } = await execa('qemu-img', ['info', '--output=json', '-U', path.join(project.vmDir, `${A}-boot.qcow2`)]);
    expect(JSON.parse(stdout)['backing-filename']).toBe(fs.readdirSync(project.baseDir).map((f) => path.join(project.baseDir, f))[0]);
    // create again: nothing to do, nothing replaced
    const again = await make(dir, ['create']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout).toContain(`${A} is already defined (shut off): nothing to create`);

    const status = await make(dir, ['status']);
    expect(status.exitCode, status.stderr).toBe(0);
    expect(status.stdout).toContain(`${A}: shut off`);
    expect(status.stdout).toContain(`${B}: shut off`);
    expect(status.stdout).toContain(`${path.join(project.vmDir, `${B}-var.qcow2`)}: present`);

    const one = await make(dir, ['destroy-' + A]);
    expect(one.exitCode, one.stderr).toBe(0);
    expect(await domainState(A)).toBeNull();
    expect(await domainState(B)).toBe('shut off');
    const all = await make(dir, ['destroy', 'PURGE=1']);
    expect(all.exitCode, all.stderr).toBe(0);
    expect(await domainState(B)).toBeNull();
    expect(fs.readdirSync(project.vmDir)).toEqual([]);
  });

  it('a domain of the same name that is not the machine is never touched', async () => {
    const dir = path.join(project.root, 'fleet', A);
    const xml = fs.readFileSync(path.join(dir, 'domain.xml'), 'utf8').replace(/<uuid>[^<]*<\/uuid>/, '<uuid>00000000-0000-4000-8000-000000000001</uuid>');
    const foreign = path.join(project.root, 'foreign.xml');
    fs.writeFileSync(foreign, xml);
    await virsh(['define', foreign]);
    try {
      for (const target of ['create', 'destroy']) {
        const r = await make(dir, [target, 'PURGE=1']);
        expect(r.exitCode).not.toBe(0);
        expect(r.stderr).toContain('not this machine\'s');
      }
      expect(await domainState(A)).toBe('shut off');
    } finally {
      await cleanupDomain(A);
    }
  });

  it('refuses an unknown machine, one without identity, and one without a build (--build builds it)', async () => {
    const dir = path.join(project.root, 'x');
    expectClean(await project.ivm(['export', 'nosuch', dir]), 2, /unknown machine "nosuch"/);
    expectClean(await project.ivm(['export', 'Bad_Name', dir]), 2, /invalid machine name/);
    project.addMachine('e2e-exp-noid', testMeta());
    expectClean(await project.ivm(['export', 'e2e-exp-noid', dir]), 3, /e2e-exp-noid has no identity yet[\s\S]*ivm identity e2e-exp-noid/);
    expect((await project.ivm(['identity', 'e2e-exp-noid'])).exitCode).toBe(0);
    expectClean(await project.ivm(['export', 'e2e-exp-noid', dir]), 3, /no base image has been built for e2e-exp-noid[\s\S]*--build/);
    expect(fs.existsSync(dir)).toBe(false);
    const built = await project.ivm(['export', 'e2e-exp-noid', dir, '--build']);
    expect(built.exitCode, built.stderr).toBe(0);
    expect(fs.readdirSync(dir)).toContain('Makefile');
    fs.rmSync(path.join(project.root, 'machines', 'e2e-exp-noid'), { recursive: true });
  });

  it('refuses a file where the folder should be, a folder that is not empty (--force writes into it), and links', async () => {
    const file = path.join(project.root, 'a-file');
    fs.writeFileSync(file, 'keep\n');
    expectClean(await project.ivm(['export', A, file]), 2, /a-file is a file, not a regular folder/);
    expect(fs.readFileSync(file, 'utf8')).toBe('keep\n');

    const full = path.join(project.root, 'full');
    fs.mkdirSync(full);
    fs.writeFileSync(path.join(full, 'notes.txt'), 'mine\n');
    fs.writeFileSync(path.join(full, 'Makefile'), 'old\n');
    expectClean(await project.ivm(['export', A, full]), 3, /full is not empty: nothing was written[\s\S]*--force/);
    expect(fs.readdirSync(full).sort()).toEqual(['Makefile', 'notes.txt']);
    // What a killed export left (a copy of the /var image under export's temporary name) goes; a
    // file that only looks like one stays.
    fs.writeFileSync(path.join(full, '.var.qcow2.ivm-0123456789ab.tmp'), 'left by a killed export\n', { mode: 0o600 });
    fs.writeFileSync(path.join(full, '.var.qcow2.ivm-mine.tmp'), 'mine\n');
    const forced = await project.ivm(['export', A, full, '--force']);
    expect(forced.exitCode, forced.stderr).toBe(0);
    expect(fs.existsSync(path.join(full, '.var.qcow2.ivm-0123456789ab.tmp'))).toBe(false);
    fs.rmSync(path.join(full, '.var.qcow2.ivm-mine.tmp'));
    expect(fs.readFileSync(path.join(full, 'notes.txt'), 'utf8')).toBe('mine\n');
    expect(fs.readFileSync(path.join(full, 'Makefile'), 'utf8')).toContain(`override NAME := ${A}`);
    expect(fs.readdirSync(full).filter((f) => f.includes('.tmp'))).toEqual([]);

    // A link as the folder: never followed, even with --force.
    const real = path.join(project.root, 'real');
    fs.mkdirSync(real);
    const link = path.join(project.root, 'link');
    fs.symlinkSync(real, link);
    for (const flags of [[], ['--force']]) expectClean(await project.ivm(['export', A, link, ...flags]), 2, /link is a symbolic link, not a regular folder/);
    expect(fs.readdirSync(real)).toEqual([]);

    // A link in the folder where export writes a file: refused before anything is written.
    const victim = path.join(project.root, 'victim');
    fs.writeFileSync(victim, 'untouched\n');
    fs.rmSync(path.join(full, 'README.md'));
    fs.symlinkSync(victim, path.join(full, 'README.md'));
    const makefileBefore = fs.readFileSync(path.join(full, 'Makefile'), 'utf8');
    fs.writeFileSync(path.join(full, 'Makefile'), 'marker\n');
    expectClean(await project.ivm(['export', A, full, '--force']), 2, /README\.md is a symbolic link/);
    expect(fs.readFileSync(victim, 'utf8')).toBe('untouched\n');
    expect(fs.readFileSync(path.join(full, 'Makefile'), 'utf8')).toBe('marker\n');
    expect(makefileBefore).toContain(A);

    // The project folder itself, and its machines/, are not export folders.
    expectClean(await project.ivm(['export', A, project.root, '--force']), 2, /is the project folder/);
    expectClean(await project.ivm(['export', A, path.join(project.root, 'machines', 'x')]), 2, /is in the project's machines\//);
  });

  it('refuses a VM folder a Makefile cannot hold (a trailing backslash, a newline), before writing anything', async () => {
    for (const odd of ['images\\', 'ima\nges']) {
      const dir = path.join(project.root, 'y');
      const r = await project.ivm(['export', A, dir], { IVM_VM_DIR: path.join(project.root, odd) });
      expectClean(r, 2, /IVM_VM_DIR .* cannot be written into a Makefile safely/);
      expect(fs.existsSync(dir)).toBe(false);
    }
  });

  it('the Justfile recipe export-vm runs it, for one machine and with --all', async () => {
    const just = (args: string[]) =>
      execa(path.join(repoRoot, 'node_modules', '.bin', 'just'), ['--justfile', path.join(repoRoot, 'Justfile'), ...args], { cwd: project.root, env: { ...project.env, IVM_ROOT: project.root }, reject: false });
    const one = await just(['export-vm', A, path.join(project.root, 'via-just')]);
    expect(one.exitCode, one.stderr).toBe(0);
    expect(fs.readFileSync(path.join(project.root, 'via-just', 'Makefile'), 'utf8')).toContain(`override NAME := ${A}`);
    const all = await just(['export-vm', '--all', path.join(project.root, 'via-just-all')]);
    expect(all.exitCode, all.stderr).toBe(0);
    expect(fs.readdirSync(path.join(project.root, 'via-just-all')).sort()).toEqual(['.gitignore', 'Makefile', 'README.md', A, B]);
  });

  it('--dry-run prints the plan and writes nothing; the arguments and --help are checked', async () => {
    const dir = path.join(project.root, 'dry');
    const r = await project.ivm(['--dry-run', 'export', A, dir]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^mkfs\.ext4 -q -F -t ext4 -L ivm-var /m);
    expect(r.stdout).toContain(`# (write ${path.join(dir, 'Makefile')})`);
    expect(fs.existsSync(dir)).toBe(false);
    expect(fs.readdirSync(path.join(project.root, '.ivm')).filter((f) => f.startsWith('stage-'))).toEqual([]);

    expectClean(await project.ivm(['export', A]), 2, /needs the machine and the folder/);
    expectClean(await project.ivm(['export', '--all', A, dir]), 2, /--all takes one folder/);
    const help = await project.ivm(['export', '--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toContain('Usage: ivm export [options] NAME DIR | --all DIR');
    for (const option of ['--all', '--force', '--build']) expect(help.stdout).toContain(option);
  });
});

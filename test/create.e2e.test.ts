// The main path, end to end with real tools: ivm create --start on the stand-in base (real qemu-img,
// e2fsprogs for the /var filesystem, real libvirtd under TCG), then what the guest saw, read from its
// serial log. No guestfish launch at all, and one boot for the whole file.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, virsh as virshOut, waitForState } from './support/libvirt.ts';
import { IVM_BIN, makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { parseStandinLog, sha256File } from './support/standin.ts';
import identityData from '../identity-files.json' with { type: 'json' };
import { domainUuid, macAddress } from '../src/core/identity/identity.ts';

const NAME = 'e2e-web';

describe('ivm create --start (real qemu-img, e2fsprogs, libvirt; stand-in nix build)', () => {
  let project: TestProject;
  let machineDir: string;
  let base: string;
  let baseSha: string;
  let createOut: { exitCode: number; stdout: string; stderr: string };

  beforeAll(async () => {
    await ensureNetwork('default');
    await cleanupDomain(NAME);
    project = await makeTestProject();
    await project.useStandinBase('a');
    machineDir = project.addMachine(NAME, testMeta(), {
      'resolv.conf': 'nameserver 192.0.2.53\n',
      tcp_ports: '80\n443\n',
    });
    createOut = await project.ivm(['--verbose', 'create', NAME, '--start']);
    if (createOut.exitCode === 0) await waitForState(NAME, 'shut off', 180_000);
  });

  afterAll(async () => {
    await cleanupDomain(NAME);
    await project?.remove();
  });

  it('creates, defines and starts the VM', () => {
    expect(createOut.stderr + createOut.stdout).not.toMatch(/internal error/);
    expect(createOut.exitCode, createOut.stderr).toBe(0);
    expect(createOut.stdout).toContain(`created ${NAME}`);
    base = fs.readdirSync(project.baseDir).map((f) => path.join(project.baseDir, f)).find((f) => f.endsWith('.qcow2'))!;
    expect(base).toBeDefined();
  });

  it('launched no guestfish appliance: the /var filesystem came from mkfs.ext4 -d', () => {
    const launches = createOut.stderr.split('\n').filter((l) => /guestfish/.test(l));
    expect(launches).toEqual([]);
    expect(createOut.stderr).toMatch(/^\+ mkfs\.ext4 -q -F -t ext4 -L ivm-var -E root_owner=0:0 -d \S+\/\.ivm\/stage-[\w.-]+\/tree /m);
  });

  it('the guest saw the identity ivm generated, vda read-only and vdb writable', () => {
    const log = parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${NAME}-serial.log`), 'utf8'));
    expect(log.errors).toEqual([]);
    expect(log.complete).toBe(true);
    expect(log.files['machine-id']?.content).toBe(fs.readFileSync(path.join(machineDir, 'machine-id'), 'utf8'));
    expect(log.files['machine-id']?.content).toMatch(/^[0-9a-f]{32}\n$/);
    expect(log.files.hostname?.content.trim()).toBe(NAME);
    expect(log.files['resolv.conf']?.content).toBe('nameserver 192.0.2.53\n');
    expect(log.files.tcp_ports?.content).toBe('80\n443\n');
    // every file at the mode the identity table gives, owned by root
    for (const entry of identityData.files) {
      const seen = log.files[entry.name];
      if (!fs.existsSync(path.join(machineDir, entry.name))) {
        expect(seen, entry.name).toBeUndefined();
        continue;
      }
      expect(seen?.modeOctal, entry.name).toBe(entry.mode);
      expect(seen?.uid, entry.name).toBe(0);
    }
    expect(log.files.known_hosts).toBeUndefined();
    expect(log.dirs.identity?.modeOctal).toBe('0755');
    expect(log.dirs.home?.modeOctal).toBe('0755');
    expect(log.dirs.root?.modeOctal).toBe('0700');
    expect(log.varWholeDisk).toBe(true);
    expect(log.vdaReadOnly).toBe(true);
    expect(log.vdaWriteFailed).toBe(true);
    expect(log.vdbWrite).toBe('ok');
    expect(log.bootCount).toBe(1);
  });

  it('made the /var disk (which holds the host key) readable by root only', () => {
    expect(fs.statSync(path.join(project.vmDir, `${NAME}-var.qcow2`)).mode & 0o777).toBe(0o600);
    expect(fs.readdirSync(project.vmDir).filter((f) => f.endsWith('.new'))).toEqual([]);
  });

  it('left the base image unchanged, read-only, and the overlay backed by it', async () => {
    const { stdout } = await execa('qemu-img', ['info', '--output=json', '-U', path.join(project.vmDir, `${NAME}-boot.qcow2`)]);
    expect(JSON.parse(stdout)['backing-filename']).toBe(base);
    expect(fs.statSync(base).mode & 0o777).toBe(0o444);
    const store = fs.readdirSync(project.env.IVM_STANDIN_OUT!).find((f) => f.endsWith('.qcow2'))!;
    baseSha = await sha256File(base);
    expect(baseSha).toBe(await sha256File(path.join(project.env.IVM_STANDIN_OUT!, store)));
  });

  it('installs a build once: a second build copies nothing', async () => {
    const before = fs.statSync(base);
    const again = await project.ivm(['--verbose', 'build', NAME]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(base);
    expect(again.stderr).toContain('already installed');
    expect(again.stderr).not.toMatch(/^\+ cp /m);
    expect(fs.statSync(base).mtimeMs).toBe(before.mtimeMs);
    expect(fs.readdirSync(project.baseDir)).toHaveLength(1);
  });

  it('generated a host key that ssh-keygen reads back to the same public key', async () => {
    const key = path.join(machineDir, 'ssh_host_ed25519_key');
    expect(fs.statSync(key).mode & 0o777).toBe(0o600);
    const { stdout } = await execa('ssh-keygen', ['-y', '-f', key]);
    const pub = fs.readFileSync(`${key}.pub`, 'utf8');
    expect(stdout.trim().split(' ').slice(0, 2)).toEqual(pub.trim().split(' ').slice(0, 2));
    expect(fs.readFileSync(path.join(machineDir, 'known_hosts'), 'utf8')).toBe(`${NAME} ${pub.split(' ').slice(0, 2).join(' ')}\n`);
    expect(createOut.stdout + createOut.stderr).not.toContain('PRIVATE KEY');
  });

  it('wrote XML that passes virt-xml-validate, with the uuid and MAC it defined', async () => {
    const xmlFile = path.join(project.root, 'libvirt', `${NAME}.xml`);
    await execa('virt-xml-validate', [xmlFile, 'domain']);
    const xml = fs.readFileSync(xmlFile, 'utf8');
    expect(xml).toMatch(/<readonly\/>/);
    const machineId = fs.readFileSync(path.join(machineDir, 'machine-id'), 'utf8').trim();
    expect(xml).toContain(`<uuid>${domainUuid(machineId)}</uuid>`);
    expect(xml).toContain(`<mac address='${macAddress(machineId)}'/>`);
    const { stdout: live } = await execa('virsh', ['-c', 'qemu:///system', 'dumpxml', NAME]);
    expect(live).toContain(/<uuid>(.*)<\/uuid>/.exec(xml)![1]);
    expect(live).toContain(/<mac address='(.*)'\/>/.exec(xml)![1]);
    // define again: same uuid, same MAC
    const again = await project.ivm(['define', NAME]);
    expect(again.exitCode, again.stderr).toBe(0);
    expect((await virshOut(['domuuid', NAME])).trim()).toBe(domainUuid(machineId));
  });

  it('refuses to create it again and changes nothing', async () => {
    const disks = ['boot', 'var'].map((d) => path.join(project.vmDir, `${NAME}-${d}.qcow2`));
    const before = disks.map((d) => fs.statSync(d).mtimeMs);
    const again = await project.ivm(['create', NAME, '--no-build']);
    expect(again.exitCode).toBe(3);
    expect(again.stderr).toContain('already exists, nothing was changed');
    expect(again.stderr).toContain(`${NAME}-var.qcow2`);
    expect(disks.map((d) => fs.statSync(d).mtimeMs)).toEqual(before);
  });

  it('lists the machine with its state and autostart from two virsh calls, and its base as the latest build', async () => {
    const list = await project.ivm(['--verbose', 'list', '--json']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(JSON.parse(list.stdout)).toEqual([{ name: NAME, state: 'shut off', base: 'latest', autostart: false }]);
    expect(list.stderr.split('\n').filter((l) => l.includes('virsh'))).toHaveLength(2);
  });

  it('start, then console attaches to the serial console (under a real TTY from script) until the VM powers off', async () => {
    const started = await project.ivm(['start', NAME]);
    expect(started.exitCode, started.stderr).toBe(0);
    expect(started.stdout).toContain(`started ${NAME}`);
    const consoleRun = await execa('script', ['-qfec', `${process.execPath} ${IVM_BIN} console ${NAME}`, '/dev/null'], {
      cwd: project.root,
      env: project.env,
      reject: false,
      timeout: 120_000,
    });
    expect(consoleRun.exitCode, consoleRun.stdout).toBe(0);
    expect(consoleRun.stdout).toMatch(/IVM-VDB write=ok boots=2/);
    expect(consoleRun.stdout).toContain('IVM-STANDIN end');
    await waitForState(NAME, 'shut off', 60_000);
  });

  it('destroy keeps the /var disk; create then refuses because of it; --delete-var removes it', async () => {
    const varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
    const varSha = await sha256File(varDisk);
    const destroyed = await project.ivm(['destroy', NAME]);
    expect(destroyed.exitCode, destroyed.stderr).toBe(0);
    expect(fs.existsSync(path.join(project.vmDir, `${NAME}-boot.qcow2`))).toBe(false);
    expect(await sha256File(varDisk)).toBe(varSha);
    expect((await project.ivm(['list', '--json'])).stdout).toContain('"undefined"');

    const refused = await project.ivm(['create', NAME, '--no-build']);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toContain('survives `ivm destroy`');
    expect(await sha256File(varDisk)).toBe(varSha);

    expect(refused.stderr).toContain(`ivm upgrade ${NAME}`);

    // upgrade brings it back on the same /var: defined again, same uuid, data untouched
    const back = await project.ivm(['upgrade', NAME, '--no-build']);
    expect(back.exitCode, back.stderr).toBe(0);
    expect(back.stdout).toContain('domain: not defined; it will be defined again on this /var disk');
    expect(back.stdout).toContain('identity: in sync');
    expect(await domainState(NAME)).toBe('shut off');
    expect(await sha256File(varDisk)).toBe(varSha);

    const gone = await project.ivm(['destroy', '--delete-var', NAME]);
    expect(gone.exitCode, gone.stderr).toBe(0);
    expect(fs.existsSync(varDisk)).toBe(false);
    expect(await sha256File(base)).toBe(baseSha);
  });
});

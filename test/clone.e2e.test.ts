// ivm clone, end to end with real qemu-img, guestfish, git and libvirt on the stand-in base. The
// source and its clone are *-hold guests (they stay up until the ACPI power button): both run at
// once, and their serial logs (IVM-FILE lines of /var/identity) show different machine-ids,
// hostnames and host keys; the clone's host key is the one its known_hosts pins, its uuid and MAC
// derive from its own machine-id, it took the source's shared identity files and /var data but not
// its address, secrets or snapshots. The source's /var is never written; a clone killed before each
// of its changes leaves nothing of the new machine, or an unfinished one the next run removes; a clone
// that fails rolls everything back; bad input changes nothing.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureNetwork, virsh, waitForState } from './support/libvirt.ts';
import { makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { parseStandinLog, sha256File } from './support/standin.ts';
import { readVarFile, waitUntilUnused, writeVarFile } from './support/var-disk.ts';
import { domainUuid, macAddress } from '../src/core/identity/identity.ts';
import { COPIED_IDENTITY_FILES, IDENTITY_FILE_POLICY } from '../src/core/vm/clone.ts';
import { IDENTITY_FILES } from '../src/core/identity/identity-files.ts';

const SRC = 'e2e-clone-hold';
const NEW = 'e2e-clone-new-hold';
const FOREIGN = 'e2e-clone-foreign';
/** A source on a bridge with a static address (never started), and what the kill test clones it to. */
const ADDR = 'e2e-clone-addr';
const KILLED = 'e2e-clone-k';
const IMPORTS = 'e2e-clone-imp';
const SENTINEL = '/home/user/data';
const PUBLIC = ['default.nix', 'hostname', 'known_hosts', 'machine-id', 'meta.nix', 'ssh_host_ed25519_key.pub'];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const sha = (data: Buffer | undefined) => (data ? crypto.createHash('sha256').update(data).digest('hex') : 'missing');

describe('identity files a clone takes', () => {
  it('every file of identity-files.json is either copied or its own, and only the shared ones are copied', () => {
    expect(IDENTITY_FILES.map((f) => f.name).filter((name) => IDENTITY_FILE_POLICY[name] === undefined)).toEqual([]);
    for (const file of IDENTITY_FILES.filter((f) => f.kind === 'generated')) expect(IDENTITY_FILE_POLICY[file.name], file.name).toBe('own');
    expect(COPIED_IDENTITY_FILES).not.toContain('network.conf');
    expect([...COPIED_IDENTITY_FILES].sort()).toEqual(['admin_authorized_keys', 'admin_password_hash', 'ca-certs.pem', 'hosts', 'resolv.conf', 'tcp_ports', 'udp_ports', 'user_authorized_keys']);
  });
});

describe('ivm clone (real tools)', () => {
  let project: TestProject;
  let srcDir: string;
  let srcVar: string;
  const sentinel = crypto.randomBytes(8192);

  const logOf = (name: string) => parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${name}-serial.log`), 'utf8'));
  const holding = (name: string) => {
    const file = path.join(project.vmDir, `${name}-serial.log`);
    return fs.existsSync(file) && logOf(name).holds.some((h) => h.end === null);
  };
  /** Nothing of a machine exists: no folder, no domain, no file of its name in IVM_VM_DIR, no record. */
  const nothingOf = async (name: string) =>
    !fs.existsSync(path.join(project.root, 'machines', name)) &&
    (await domainState(name)) === null &&
    fs.readdirSync(project.vmDir).filter((f) => f.startsWith(`${name}-`) || f.startsWith(`.${name}-`)).length === 0 &&
    !fs.existsSync(path.join(project.root, '.ivm', 'unfinished', `${name}.json`));
  const tracked = async (name: string) =>
    (await execa('git', ['-C', project.root, 'ls-files', '--', `machines/${name}`])).stdout
      .split('\n')
      .filter(Boolean)
      .map((f) => path.basename(f))
      .sort();

  beforeAll(async () => {
    await ensureNetwork('default');
    for (const name of [SRC, NEW, FOREIGN, ADDR, KILLED, IMPORTS, `${IMPORTS}2`]) await cleanupDomain(name);
    project = await makeTestProject('ivm-clone-');
    await project.useStandinBase('a');
    srcDir = project.addMachine(SRC, testMeta(), {
      tcp_ports: '8443\n',
      'resolv.conf': 'nameserver 192.0.2.53\n',
      admin_authorized_keys: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAdmin admin@host\n',
      user_authorized_keys: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUser user@host\n',
      // One machine's own: a static address, and a secret.
      'network.conf': 'ADDRESS=192.0.2.60/24\n',
    });
    fs.mkdirSync(path.join(srcDir, 'secrets'));
    fs.writeFileSync(path.join(srcDir, 'secrets', 'token'), 'the source\'s own\n');
    const created = await project.ivm(['create', SRC]);
    expect(created.exitCode, created.stderr).toBe(0);
    srcVar = path.join(project.vmDir, `${SRC}-var.qcow2`);
    await writeVarFile(srcVar, SENTINEL, sentinel);
    // An internal snapshot of the source's /var (what ivm snapshot makes): a clone does not take it.
    await execa('qemu-img', ['snapshot', '-c', 'before-clone', srcVar]);
  });

  afterAll(async () => {
    for (const name of [SRC, NEW, FOREIGN, ADDR, KILLED, IMPORTS, `${IMPORTS}2`]) await cleanupDomain(name);
    await project?.remove();
  });

  it('refuses a running source without --stop (exit 3, hint --stop), and bad input, changing nothing', async () => {
    expect((await project.ivm(['start', SRC])).exitCode).toBe(0);
    const running = await project.ivm(['clone', SRC, NEW]);
    expect(running.exitCode).toBe(3);
    expect(running.stderr).toMatch(/e2e-clone-hold is running: clone reads its \/var disk only while it is shut off.*nothing was changed\nhint: .*add --stop/);
    // A machine folder, or a domain of another's, of the new name.
    project.addMachine('e2e-clone-there', testMeta());
    const foreignXml = path.join(project.root, 'foreign.xml');
    fs.writeFileSync(foreignXml, `<domain type='qemu'><name>${FOREIGN}</name><memory unit='MiB'>64</memory><os><type arch='x86_64'>hvm</type></os></domain>`);
    await virsh(['define', foreignXml]);
    for (const [args, code, what] of [
      [['clone', SRC, 'Bad_Name'], 2, 'invalid machine name "Bad_Name"'],
      [['clone', SRC, SRC], 2, 'the new machine needs another name'],
      [['clone', 'e2e-clone-nope', 'e2e-clone-x'], 2, 'unknown machine "e2e-clone-nope"'],
      [['clone', SRC, 'e2e-clone-there', '--stop'], 3, 'machines/e2e-clone-there already exists'],
      [['clone', SRC, FOREIGN, '--stop'], 3, `libvirt domain ${FOREIGN} (shut off)`],
    ] as const) {
      const r = await project.ivm([...args]);
      expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr).toContain(what);
      expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    }
    expect(await domainState(SRC)).toBe('running');
    expect(await nothingOf(NEW)).toBe(true);
    expect(fs.existsSync(path.join(project.root, 'machines', FOREIGN))).toBe(false);
    await cleanupDomain(FOREIGN);
    fs.rmSync(path.join(project.root, 'machines', 'e2e-clone-there'), { recursive: true });
  });

  it('--stop --start: the source is shut down, cloned and started again; both run at once, each with its own identity', async () => {
    // The source waits for the power button: --stop shuts it down gracefully.
    const deadline = Date.now() + 180_000;
    while (!holding(SRC) && Date.now() < deadline) await sleep(1000);
    const srcBoots = logOf(SRC).bootCount!;
    const cloned = await project.ivm(['--verbose', 'clone', SRC, NEW, '--stop', '--start']);
    expect(cloned.exitCode, cloned.stderr).toBe(0);
    expect(cloned.stderr).toMatch(/^\+ virsh -c \S+ shutdown e2e-clone-hold$[\s\S]*qemu-img convert -q -n --target-is-zero -f qcow2 -O qcow2 \S+e2e-clone-hold-var\.qcow2 \S+e2e-clone-new-hold-var\.qcow2\.new$[\s\S]*^\+ virsh -c \S+ start e2e-clone-hold$[\s\S]*^\+ virsh -c \S+ start e2e-clone-new-hold$/m);
    expect(cloned.stdout).toContain(`started ${SRC} again`);
    expect(cloned.stdout).toContain(`cloned ${SRC} as ${NEW}`);
    expect(cloned.stderr).toMatch(/note: machines\/e2e-clone-hold\/secrets\/ is not copied/);
    // Both up at the same time: each waits for its power button after its report.
    const both = Date.now() + 240_000;
    while (!(holding(SRC) && holding(NEW)) && Date.now() < both) await sleep(1000);
    expect([await domainState(SRC), await domainState(NEW)]).toEqual(['running', 'running']);
    expect(holding(SRC) && holding(NEW)).toBe(true);
    const src = logOf(SRC);
    const clone = logOf(NEW);
    const newDir = path.join(project.root, 'machines', NEW);
    const own = (file: string) => fs.readFileSync(path.join(newDir, file), 'utf8');
    expect(clone.errors).toEqual([]);
    expect(clone.files['machine-id']?.content).toBe(own('machine-id'));
    expect(clone.files['machine-id']?.content).not.toBe(src.files['machine-id']?.content);
    expect(src.files['machine-id']?.content).toBe(fs.readFileSync(path.join(srcDir, 'machine-id'), 'utf8'));
    expect(clone.files.hostname?.content).toBe(`${NEW}\n`);
    expect(src.files.hostname?.content).toBe(`${SRC}\n`);
    expect(clone.files['ssh_host_ed25519_key.pub']?.content).toBe(own('ssh_host_ed25519_key.pub'));
    expect(clone.files['ssh_host_ed25519_key.pub']?.content).not.toBe(src.files['ssh_host_ed25519_key.pub']?.content);
    expect(clone.files.ssh_host_ed25519_key?.content).toBe(own('ssh_host_ed25519_key'));
    expect(clone.files.ssh_host_ed25519_key?.modeOctal).toBe('0600');
    // The host key the guest serves is the one its known_hosts pins (ssh-keygen reads both).
    const [, keyType, blob] = /^(\S+) (\S+)/.exec(clone.files['ssh_host_ed25519_key.pub']!.content)!;
    expect(own('known_hosts')).toBe(`${NEW} ${keyType} ${blob}\n`);
    const served = path.join(project.root, 'served.pub');
    fs.writeFileSync(served, clone.files['ssh_host_ed25519_key.pub']!.content);
    const { stdout: found } = await execa('ssh-keygen', ['-F', NEW, '-f', path.join(newDir, 'known_hosts')]);
    expect(found).toContain(blob);
    expect((await execa('ssh-keygen', ['-l', '-f', served])).stdout.split(' ')[1]).toBe((await execa('ssh-keygen', ['-l', '-f', path.join(newDir, 'known_hosts')])).stdout.split(' ')[1]);
    // The shared identity files came along; the address did not.
    for (const file of ['tcp_ports', 'resolv.conf', 'admin_authorized_keys', 'user_authorized_keys']) {
      expect(clone.files[file]?.content, file).toBe(fs.readFileSync(path.join(srcDir, file), 'utf8'));
      expect(own(file)).toBe(fs.readFileSync(path.join(srcDir, file), 'utf8'));
    }
    expect(src.files['network.conf']).toBeDefined();
    expect(clone.files['network.conf']).toBeUndefined();
    expect(fs.existsSync(path.join(newDir, 'network.conf'))).toBe(false);
    expect(fs.existsSync(path.join(newDir, 'secrets'))).toBe(false);
    // The copy's /var went on counting the source's boots.
    expect(clone.bootCount).toBe(srcBoots + 1);
    const newId = own('machine-id').trim();
    expect((await virsh(['domuuid', NEW])).trim()).toBe(domainUuid(newId));
    expect(await virsh(['dumpxml', NEW])).toContain(`<mac address='${macAddress(newId)}'/>`);
    expect(macAddress(newId)).not.toBe(macAddress(fs.readFileSync(path.join(srcDir, 'machine-id'), 'utf8').trim()));
    for (const name of [SRC, NEW]) {
      const stopped = await project.ivm(['stop', name]);
      expect(stopped.exitCode, stopped.stderr).toBe(0);
    }
    const newVar = path.join(project.vmDir, `${NEW}-var.qcow2`);
    expect(fs.statSync(newVar).mode & 0o777).toBe(0o600);
    expect(sha(await readVarFile(newVar, SENTINEL))).toBe(sha(sentinel));
    expect(await readVarFile(newVar, '/identity/secrets/token')).toBeUndefined();
    expect((await readVarFile(srcVar, '/identity/secrets/token'))?.toString()).toBe("the source's own\n");
    const snapshots = async (disk: string) => (JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', disk])).stdout).snapshots ?? []).map((s: { name: string }) => s.name);
    expect(await snapshots(srcVar)).toEqual(['before-clone']);
    expect(await snapshots(newVar)).toEqual([]);
    // Both on the source's base; exactly the public files staged, as ivm new stages them.
    const backing = async (name: string) => JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', path.join(project.vmDir, `${name}-boot.qcow2`)])).stdout)['backing-filename'];
    expect(await backing(NEW)).toBe(await backing(SRC));
    expect(await tracked(NEW)).toEqual(PUBLIC);
    expect(fs.statSync(path.join(newDir, 'ssh_host_ed25519_key')).mode & 0o777).toBe(0o600);
    expect(fs.existsSync(path.join(project.root, '.ivm', 'unfinished', `${NEW}.json`))).toBe(false);
    const again = await project.ivm(['clone', SRC, NEW]);
    expect(again.exitCode).toBe(3);
    expect(again.stderr).toContain(`machines/${NEW} already exists`);
  }, 900_000);

  it("never writes the source's /var; a clone killed before each of its changes leaves nothing of the new machine or an unfinished one the next run removes", async () => {
    // On a bridge with a static address: the clone's meta.nix leaves the address out.
    project.addMachine(ADDR, `{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "128M"; bridge = "br-e2e-clone"; ipAddress = "192.0.2.50/24"; gateway = "192.0.2.1"; }\n`, { tcp_ports: '22\n' });
    const created = await project.ivm(['create', ADDR]);
    expect(created.exitCode, created.stderr).toBe(0);
    const addrVar = path.join(project.vmDir, `${ADDR}-var.qcow2`);
    expect((await readVarFile(addrVar, '/identity/network.conf'))?.toString()).toContain('ADDRESS=192.0.2.50/24');
    const before = await sha256File(addrVar);
    let completed: { stdout: string; stderr: string } | undefined;
    const seen = { nothing: 0, unfinished: 0 };
    for (let step = 1; step <= 30 && !completed; step++) {
      const run = await project.ivm(['clone', ADDR, KILLED], { IVM_TEST_FAULT_KILL_AT: String(step) });
      if (run.exitCode === 0) completed = run;
      else expect(run.signal, `step ${step}: ${run.stderr}`).toBe('SIGKILL');
      await waitUntilUnused(addrVar);
      expect(await sha256File(addrVar), `step ${step}`).toBe(before);
      if (!completed) {
        const unfinished = fs.existsSync(path.join(project.root, '.ivm', 'unfinished', `${KILLED}.json`));
        const nothing = await nothingOf(KILLED);
        expect(unfinished || nothing, `step ${step}: neither nothing of ${KILLED} nor an unfinished one`).toBe(true);
        if (nothing) seen.nothing += 1;
        if (unfinished) seen.unfinished += 1;
      }
    }
    expect(completed).toBeDefined();
    expect(seen.unfinished).toBeGreaterThan(3);
    expect(completed!.stdout).toMatch(/e2e-clone-k is an unfinished clone of e2e-clone-addr .*: removing what it left first/);
    const meta = fs.readFileSync(path.join(project.root, 'machines', KILLED, 'meta.nix'), 'utf8');
    expect(meta).not.toMatch(/^\s*(ipAddress|gateway)\s*=/m);
    expect(meta).toMatch(/^\s*bridge = "br-e2e-clone";/m);
    expect(completed!.stderr).toContain(`is ${ADDR}'s without ipAddress, gateway (an address is one machine's`);
    const killedVar = path.join(project.vmDir, `${KILLED}-var.qcow2`);
    expect(await readVarFile(killedVar, '/identity/network.conf')).toBeUndefined();
    expect((await readVarFile(killedVar, '/identity/tcp_ports'))?.toString()).toBe('22\n');
    expect((await readVarFile(killedVar, '/identity/hostname'))?.toString()).toBe(`${KILLED}\n`);
    expect(await domainState(KILLED)).toBe('shut off');
    expect(await tracked(KILLED)).toEqual(PUBLIC);
    expect(fs.readdirSync(project.vmDir).filter((f) => f.startsWith(`${KILLED}-`)).sort()).toEqual([`${KILLED}-boot.qcow2`, `${KILLED}-var.qcow2`]);
    expect(fs.existsSync(path.join(project.root, '.ivm', 'unfinished', `${KILLED}.json`))).toBe(false);
    // A record left over by an old killed run never removes a machine that is somebody's now: its
    // machine-id is not one that run made.
    const record = path.join(project.root, '.ivm', 'unfinished', `${KILLED}.json`);
    fs.writeFileSync(record, `${JSON.stringify({ verb: 'clone', from: ADDR, pid: 1, since: '2026-01-01T00:00:00.000Z', files: ['meta.nix', 'machine-id'] })}\n`);
    const varBefore = await sha256File(killedVar);
    const stale = await project.ivm(['clone', ADDR, KILLED]);
    expect(stale.exitCode, stale.stderr).toBe(3);
    expect(stale.stderr).toContain(`machines/${KILLED}/machine-id is not the one the unfinished clone of ${KILLED} made: nothing of ${KILLED} was removed`);
    expect(fs.existsSync(path.join(project.root, 'machines', KILLED, 'machine-id'))).toBe(true);
    expect(fs.existsSync(path.join(project.root, 'machines', KILLED, 'meta.nix'))).toBe(true);
    expect(await domainState(KILLED)).toBe('shut off');
    expect(await sha256File(killedVar)).toBe(varBefore);
    fs.rmSync(record);
  }, 1_500_000);

  it('a clone that fails midway is rolled back: nothing of the new machine is left, not even in git', async () => {
    // Its meta.nix imports a file beside it, which a clone does not copy: the copy does not evaluate.
    const dir = project.addMachine(IMPORTS, 'import ./settings.nix\n');
    fs.writeFileSync(path.join(dir, 'settings.nix'), testMeta());
    expect((await project.ivm(['create', IMPORTS])).exitCode).toBe(0);
    const before = await sha256File(path.join(project.vmDir, `${IMPORTS}-var.qcow2`));
    const r = await project.ivm(['clone', IMPORTS, `${IMPORTS}2`]);
    expect(r.exitCode, r.stderr).not.toBe(0);
    expect(r.stderr).toMatch(/settings\.nix/);
    expect(r.stderr).toContain(`nothing of ${IMPORTS}2 is left`);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(await nothingOf(`${IMPORTS}2`)).toBe(true);
    expect(await tracked(`${IMPORTS}2`)).toEqual([]);
    expect(await sha256File(path.join(project.vmDir, `${IMPORTS}-var.qcow2`))).toBe(before);
  });
});

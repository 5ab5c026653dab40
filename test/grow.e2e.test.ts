// Growing /var, meta.nix's autostart and ivm reboot, end to end with the real qemu-img, guestfish
// and libvirt, booting the stand-in guest (which grows its mounted /var with resize2fs at boot, as
// NixOS's systemd-growfs does, and reports the filesystem's size: IVM-VARFS). A second machine,
// named *-hold, boots a stand-in that stays up until the ACPI power button: it is the running VM
// that grow refuses, that ivm reboot (ACPI and --force) restarts and grow --restart shuts down.
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compareVarSize, formatSize, growNeeded, growSteps } from '../src/core/disks/grow.ts';
import { autostartDiffers } from '../src/core/vm/autostart.ts';
import { validateMeta, type Machine } from '../src/core/machine/machine.ts';
import { cleanupDomain, domainState, ensureNetwork, virsh, waitForState } from './support/libvirt.ts';
import { makeTestProject, type TestProject } from './support/ivm.ts';
import { parseStandinLog, sha256File, waitForStandinLog, type StandinLog } from './support/standin.ts';
import { readVarFile, waitUntilUnused, writeVarFile } from './support/var-disk.ts';

const NAME = 'e2e-grow';
const HOLD = 'e2e-grow-hold';
const AUTO = 'e2e-grow-auto';
const SENTINEL = '/home/user/grow-sentinel';
const MiB = 1024 * 1024;

const meta = (varSize: string, extra = '') =>
  `{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "${varSize}"; network = "default";${extra} }\n`;

describe('grow, autostart and reboot: plain functions', () => {
  const machine = (extra: Record<string, unknown>): Machine => ({
    name: 'm',
    dir: '/nonexistent',
    metaFile: '/nonexistent/meta.nix',
    meta: validateMeta('m.nix', { system: 'x86_64-linux', ...extra }),
  });

  it('compares varSize with the disk, rounding varSize up to whole sectors as qemu-img does', () => {
    expect(compareVarSize(machine({ varSize: '256M' }), 128 * MiB)).toEqual({ kind: 'grow', diskBytes: 128 * MiB, wantedBytes: 256 * MiB });
    expect(compareVarSize(machine({ varSize: '64M' }), 128 * MiB).kind).toBe('shrink');
    expect(compareVarSize(machine({ varSize: '128M' }), 128 * MiB).kind).toBe('equal');
    expect(compareVarSize(machine({ varSize: '67109000' }), 67109376).kind).toBe('equal');
    expect(growNeeded(machine({ varSize: '1G' }), 128 * MiB)).toBe(true);
    expect(growNeeded(machine({ varSize: '128M' }), 128 * MiB)).toBe(false);
    expect([formatSize(256 * MiB), formatSize(20 * 1024 * MiB), formatSize(1536 * MiB), formatSize(67109376)]).toEqual(['256M', '20G', '1536M', '67109376']);
    const paths = { var: '/v/m-var.qcow2' } as Parameters<typeof growSteps>[0];
    expect(growSteps(paths, compareVarSize(machine({ varSize: '128M' }), 128 * MiB))).toEqual([]);
    const [step] = growSteps(paths, compareVarSize(machine({ varSize: '256M' }), 128 * MiB));
    expect(step).toMatchObject({ kind: 'run', command: { tool: 'qemu-img', args: ['resize', '-q', '-f', 'qcow2', '/v/m-var.qcow2', '256M'], mutates: true } });
  });

  it('autostart: a boolean in meta.nix (default false), compared with libvirt\'s', () => {
    expect(machine({}).meta.autostart).toBe(false);
    expect(machine({ autostart: true }).meta.autostart).toBe(true);
    expect(() => machine({ autostart: 'yes' })).toThrow(/m\.nix: `autostart` must be true or false .*not "yes"/);
    expect(() => machine({ autostart: 1 })).toThrow(/`autostart` must be true or false/);
    expect(autostartDiffers(machine({ autostart: true }), undefined)).toBe(true);
    expect(autostartDiffers(machine({}), undefined)).toBe(false);
    expect(autostartDiffers(machine({}), { autostart: true })).toBe(true);
    expect(autostartDiffers(machine({ autostart: true }), { autostart: true })).toBe(false);
  });

  it('parses the stand-in\'s new lines: the /var filesystem, the boots of one log, the holds', () => {
    const log = parseStandinLog(
      [
        'IVM-STANDIN begin variant=a kernel=6.1.0-1-amd64',
        'IVM-VARFS size=122683392 blocks=119808 bsize=1024',
        'IVM-VDB write=ok boots=1',
        'IVM-HOLD waiting boots=1',
        'IVM-HOLD power-button',
        'IVM-STANDIN end',
        'IVM-STANDIN begin variant=a kernel=6.1.0-1-amd64',
        'IVM-VARFS size=254803968 blocks=248832 bsize=1024',
        'IVM-VDB write=ok boots=2',
        'IVM-HOLD waiting boots=2',
      ].join('\r\n'),
    );
    expect(log.errors).toEqual([]);
    expect(log).toMatchObject({ begins: 2, bootCounts: [1, 2], bootCount: 2, varFs: { size: 254803968, blocks: 248832, bsize: 1024 } });
    expect(log.holds).toEqual([{ boots: 1, end: 'power-button' }, { boots: 2, end: null }]);
    expect(parseStandinLog('IVM-VARFS size=10 blocks=3 bsize=4\n').errors).toEqual(['unparsed: IVM-VARFS size=10 blocks=3 bsize=4']);
  });
});

describe('grow /var, autostart, reboot (real tools)', () => {
  let project: TestProject;
  let dir: string;
  let holdDir: string;
  let varDisk: string;
  let holdVar: string;
  const sentinel = crypto.randomBytes(8192);

  const virtualSize = async (disk: string) => (JSON.parse((await execa('qemu-img', ['info', '--output=json', '-U', disk])).stdout) as { 'virtual-size': number })['virtual-size'];
  const serial = (name: string) => parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${name}-serial.log`), 'utf8'));
  const bootAndRead = async (name: string) => {
    const started = await project.ivm(['start', name]);
    expect(started.exitCode, started.stderr).toBe(0);
    await waitForState(name, 'shut off', 180_000);
    return serial(name);
  };
  /** Polls the serial log until the guest has said `until`; returns the log then. */
  const waitForLog = (name: string, until: (log: StandinLog) => boolean, timeoutMs = 180_000) => waitForStandinLog(name, () => serial(name), until, timeoutMs);
  const waitingAt = (boots: number) => (log: StandinLog) => log.holds.some((h) => h.boots === boots);

  beforeAll(async () => {
    await ensureNetwork('default');
    for (const name of [NAME, HOLD, AUTO]) await cleanupDomain(name);
    project = await makeTestProject('ivm-grow-');
    await project.useStandinBase('a');
    dir = project.addMachine(NAME, meta('128M'));
    holdDir = project.addMachine(HOLD, meta('128M'));
    varDisk = path.join(project.vmDir, `${NAME}-var.qcow2`);
    holdVar = path.join(project.vmDir, `${HOLD}-var.qcow2`);
    const created = await project.ivm(['create', NAME]);
    expect(created.exitCode, created.stderr).toBe(0);
  });

  afterAll(async () => {
    for (const name of [NAME, HOLD, AUTO]) await cleanupDomain(name);
    await project?.remove();
  });

  let before: StandinLog;

  it('boots on a 128M /var: the guest reports its filesystem, and a sentinel is written', async () => {
    before = await bootAndRead(NAME);
    expect(before.complete, before.lines.join('\n')).toBe(true);
    expect(before.errors).toEqual([]);
    expect(before.bootCount).toBe(1);
    expect(before.varFs!.size).toBeGreaterThan(100 * MiB);
    expect(before.varFs!.size).toBeLessThanOrEqual(128 * MiB);
    await writeVarFile(varDisk, SENTINEL, sentinel);
  });

  it('equal: nothing to do; smaller: refused (exit 3), saying why and what to do, the disk unchanged', async () => {
    const sha = await sha256File(varDisk);
    const same = await project.ivm(['--verbose', 'grow', NAME]);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.stdout).toContain(`the /var disk of ${NAME} is already 128M (varSize 128M): nothing to do`);
    expect(same.stderr).not.toMatch(/qemu-img resize/);
    fs.writeFileSync(path.join(dir, 'meta.nix'), meta('64M'));
    const shrink = await project.ivm(['--verbose', 'grow', NAME]);
    expect(shrink.exitCode).toBe(3);
    expect(shrink.stderr).toMatch(/varSize 64M in machines\/e2e-grow\/meta\.nix is smaller than the \/var disk of e2e-grow \(128M\): ivm never shrinks/);
    expect(shrink.stderr).toMatch(/cannot be shrunk while mounted/);
    expect(shrink.stderr).toMatch(/restoring does not work either/);
    expect(shrink.stderr).toMatch(/hint: keep the disk as it is: set varSize = "128M";.*ivm recreate e2e-grow/);
    expect(shrink.stderr).not.toMatch(/qemu-img resize/);
    expect(await virtualSize(varDisk)).toBe(128 * MiB);
    expect(await sha256File(varDisk)).toBe(sha);
  });

  it('--dry-run prints the qemu-img resize and changes nothing', async () => {
    fs.writeFileSync(path.join(dir, 'meta.nix'), meta('256M'));
    const sha = await sha256File(varDisk);
    const dry = await project.ivm(['--dry-run', 'grow', NAME]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('/var disk: 128M -> 256M');
    expect(dry.stdout).toContain(`qemu-img resize -q -f qcow2 ${varDisk} 256M`);
    expect(await virtualSize(varDisk)).toBe(128 * MiB);
    expect(await sha256File(varDisk)).toBe(sha);
  });

  it('killed before each of its changes, grow leaves a disk of the old or the new size with /var intact', async () => {
    let completed = false;
    const sizes: number[] = [];
    for (let step = 1; step <= 5 && !completed; step++) {
      const run = await project.ivm(['grow', NAME], { IVM_TEST_FAULT_KILL_AT: String(step) });
      completed = run.exitCode === 0;
      if (!completed) expect(run.signal, `step ${step}: ${run.stderr}`).toBe('SIGKILL');
      const size = await virtualSize(varDisk);
      sizes.push(size);
      expect([128 * MiB, 256 * MiB], `step ${step}`).toContain(size);
      await execa('qemu-img', ['check', '-U', varDisk]);
      expect(await readVarFile(varDisk, SENTINEL), `step ${step}`).toEqual(sentinel);
      if (completed) expect(run.stdout).toContain(`grew the /var disk of ${NAME} to 256M; its filesystem grows at its next boot`);
    }
    expect(completed).toBe(true);
    expect(sizes).toEqual([128 * MiB, 256 * MiB]);
    const again = await project.ivm(['grow', NAME]);
    expect(again.stdout).toContain('is already 256M (varSize 256M): nothing to do');
  });

  it('the guest grows its filesystem at the next boot; the data is intact and its boot count goes on', async () => {
    const after = await bootAndRead(NAME);
    expect(after.complete, after.lines.join('\n')).toBe(true);
    expect(after.errors).toEqual([]);
    expect(after.bootCount).toBe(2);
    expect(after.varFs!.bsize).toBe(before.varFs!.bsize);
    // statfs counts the blocks left after the filesystem's own tables, which grow with it: larger
    // than the whole old disk can only be a filesystem grown into the new space.
    expect(after.varFs!.size).toBeGreaterThan(Math.max(before.varFs!.size + 100 * MiB, 128 * MiB));
    expect(after.varFs!.size).toBeLessThanOrEqual(256 * MiB);
    expect(after.files['machine-id']?.content).toBe(fs.readFileSync(path.join(dir, 'machine-id'), 'utf8'));
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);
  });

  it('upgrade grows /var too (after the identity sync) and applies autostart, in one guestfish session', async () => {
    fs.writeFileSync(path.join(dir, 'meta.nix'), meta('320M', ' autostart = true;'));
    const up = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build']);
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain('/var disk: 256M -> 320M (varSize 320M; the guest grows its filesystem at its next boot)');
    expect(up.stdout).toContain('autostart: off -> on');
    expect(up.stderr.split('\n').filter((l) => /guestfish .*\(session\)$/.test(l))).toHaveLength(1);
    // In this order: the identity sync (guestfish), the resize, the define, the autostart.
    const at = (pattern: RegExp) => up.stderr.split('\n').findIndex((l) => pattern.test(l));
    const [sync, resize, define, autostart] = [
      at(/^\+ .*guestfish .*\(session\)$/),
      at(new RegExp(`^\\+ .*qemu-img resize -q -f qcow2 ${varDisk} 320M$`)),
      at(/^\+ .*virsh -c \S+ define /),
      at(new RegExp(`^\\+ .*virsh -c \\S+ autostart ${NAME}$`)),
    ];
    expect(sync).toBeGreaterThanOrEqual(0);
    expect(resize).toBeGreaterThan(sync);
    expect(define).toBeGreaterThan(resize);
    expect(autostart).toBeGreaterThan(define);
    expect(await virtualSize(varDisk)).toBe(320 * MiB);
    expect(await virsh(['dominfo', NAME])).toMatch(/^Autostart:\s+enable$/m);
    expect(await readVarFile(varDisk, SENTINEL)).toEqual(sentinel);

    // A varSize below the disk does not stop an upgrade: it says so and leaves the disk alone; and
    // libvirt's autostart, now meta.nix's, is not set again.
    fs.writeFileSync(path.join(dir, 'meta.nix'), meta('256M', ' autostart = true;'));
    const smaller = await project.ivm(['--verbose', 'upgrade', NAME, '--no-build']);
    expect(smaller.exitCode, smaller.stderr).toBe(0);
    expect(smaller.stdout).toContain('/var disk: 320M, larger than varSize 256M: left as it is');
    expect(smaller.stdout).toContain(`${NAME} is up to date: nothing changed`);
    expect(smaller.stderr).not.toMatch(/qemu-img resize| autostart /);
    expect(await virtualSize(varDisk)).toBe(320 * MiB);
  });

  it('autostart: create and define apply meta.nix\'s, list shows libvirt\'s, a bad value is exit 2', async () => {
    const autoDir = project.addMachine(AUTO, meta('64M', ' autostart = true;'));
    const created = await project.ivm(['create', AUTO]);
    expect(created.exitCode, created.stderr).toBe(0);
    expect(await virsh(['dominfo', AUTO])).toMatch(/^Autostart:\s+enable$/m);
    const list = await project.ivm(['--verbose', 'list']);
    expect(list.exitCode, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^NAME +STATE +AUTOSTART +BASE$/m);
    expect(list.stdout).toMatch(new RegExp(`^${AUTO} +shut off +yes +latest build$`, 'm'));
    expect(list.stdout).toMatch(new RegExp(`^${HOLD} +undefined +- +-$`, 'm'));
    expect(list.stderr.split('\n').filter((l) => l.includes('virsh'))).toHaveLength(2);
    const json = JSON.parse((await project.ivm(['list', '--json'])).stdout) as { name: string; autostart: boolean | null }[];
    expect(json.find((e) => e.name === AUTO)?.autostart).toBe(true);
    expect(json.find((e) => e.name === HOLD)?.autostart).toBe(null);

    fs.writeFileSync(path.join(autoDir, 'meta.nix'), meta('64M', ' autostart = false;'));
    const dry = await project.ivm(['--dry-run', 'define', AUTO]);
    expect(dry.stdout).toContain(`autostart --disable ${AUTO}`);
    expect(await virsh(['dominfo', AUTO])).toMatch(/^Autostart:\s+enable$/m);
    const defined = await project.ivm(['define', AUTO]);
    expect(defined.exitCode, defined.stderr).toBe(0);
    expect(await virsh(['dominfo', AUTO])).toMatch(/^Autostart:\s+disable$/m);
    expect((await project.ivm(['list'])).stdout).toMatch(new RegExp(`^${AUTO} +shut off +no +latest build$`, 'm'));
    // Agreeing already: no autostart command at all; and redefining keeps libvirt's setting.
    const same = await project.ivm(['--dry-run', 'define', AUTO]);
    expect(same.stdout).not.toMatch(/ autostart /);
    fs.writeFileSync(path.join(autoDir, 'meta.nix'), meta('64M', ' autostart = true;'));
    expect((await project.ivm(['define', AUTO])).exitCode).toBe(0);
    expect((await project.ivm(['define', AUTO])).exitCode).toBe(0);
    expect(await virsh(['dominfo', AUTO])).toMatch(/^Autostart:\s+enable$/m);

    fs.writeFileSync(path.join(autoDir, 'meta.nix'), meta('64M', ' autostart = "yes";'));
    const bad = await project.ivm(['define', AUTO]);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/e2e-grow-auto\/meta\.nix: `autostart` must be true or false .*not "yes"/);
    expect(await virsh(['dominfo', AUTO])).toMatch(/^Autostart:\s+enable$/m);
  });

  it('ivm new --autostart writes autostart = true; without it, a commented line', async () => {
    const made = await project.ivm(['new', 'e2e-grow-new', '--autostart', '--virt-type', 'qemu', '--var-size', '64M']);
    expect(made.exitCode, made.stderr).toBe(0);
    const text = fs.readFileSync(path.join(project.root, 'machines', 'e2e-grow-new', 'meta.nix'), 'utf8');
    expect(text).toMatch(/^ {2}autostart = true; +# start the VM when the host boots/m);
    const plain = await project.ivm(['--dry-run', 'new', 'e2e-grow-plain']);
    expect(plain.stdout).toMatch(/^ {2}# autostart = true; +# start the VM when the host boots/m);
  });

  it('a running VM: grow refuses without --restart; reboot asks the guest (ACPI), --force resets it', async () => {
    const started = await project.ivm(['create', HOLD, '--start']);
    expect(started.exitCode, started.stderr).toBe(0);
    const first = await waitForLog(HOLD, waitingAt(1));
    expect(first.errors).toEqual([]);

    fs.writeFileSync(path.join(holdDir, 'meta.nix'), meta('192M'));
    const refused = await project.ivm(['--verbose', 'grow', HOLD]);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/e2e-grow-hold is running: its \/var disk is in use, and qemu-img never resizes a disk in use; nothing was changed\nhint: .*--restart/);
    expect(refused.stderr).not.toMatch(/qemu-img resize/);
    expect(await virtualSize(holdVar)).toBe(128 * MiB);
    expect(await domainState(HOLD)).toBe('running');

    const dry = await project.ivm(['--dry-run', 'reboot', HOLD]);
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout.trim()).toBe(`virsh -c qemu:///system reboot ${HOLD}`);
    const dryForce = await project.ivm(['--dry-run', 'reboot', HOLD, '--force']);
    expect(dryForce.stdout.trim()).toBe(`virsh -c qemu:///system reset ${HOLD}`);

    // The default: ACPI. The guest powers off on the power button, and libvirt starts it again.
    const reboot = await project.ivm(['reboot', HOLD]);
    expect(reboot.exitCode, reboot.stderr).toBe(0);
    expect(reboot.stdout).toContain(`asked ${HOLD} to reboot`);
    const second = await waitForLog(HOLD, waitingAt(2));
    expect(second.holds[0]).toEqual({ boots: 1, end: 'power-button' });
    expect(second.begins).toBe(2);
    expect(await domainState(HOLD)).toBe('running');

    // --force: reset at once, no shutdown (the wait of boot 2 never ends).
    const reset = await project.ivm(['reboot', HOLD, '--force']);
    expect(reset.exitCode, reset.stderr).toBe(0);
    expect(reset.stdout).toContain(`reset ${HOLD}`);
    const third = await waitForLog(HOLD, waitingAt(3));
    expect(third.begins).toBe(3);
    expect(third.bootCounts).toEqual([1, 2, 3]);
    expect(third.holds.map((h) => h.end)).toEqual(['power-button', null, null]);
    expect(third.errors).toEqual([]);
  });

  it('grow --restart shuts the guest down gracefully, grows, starts it again: it boots on the larger /var', async () => {
    const small = serial(HOLD).varFs!.size;
    const grown = await project.ivm(['grow', HOLD, '--restart']);
    expect(grown.exitCode, grown.stderr).toBe(0);
    expect(grown.stdout).toContain(`grew the /var disk of ${HOLD} to 192M; started it again: its filesystem grows as it boots`);
    expect(await virtualSize(holdVar)).toBe(192 * MiB);
    // libvirt's log starts afresh with the new start (append='off').
    const log = await waitForLog(HOLD, waitingAt(4));
    expect(log.errors).toEqual([]);
    expect(log.varFs!.size).toBeGreaterThan(Math.max(small + 50 * MiB, 128 * MiB));
    expect(log.varFs!.size).toBeLessThanOrEqual(192 * MiB);
    const stopped = await project.ivm(['stop', HOLD]);
    expect(stopped.exitCode, stopped.stderr).toBe(0);
    expect(await domainState(HOLD)).toBe('shut off');
    expect(serial(HOLD).holds.at(-1)).toEqual({ boots: 4, end: 'power-button' });
    await waitUntilUnused(holdVar);
  });

  it('reboot of a stopped VM is refused (exit 3), pointing at ivm start', async () => {
    const refused = await project.ivm(['reboot', HOLD]);
    expect(refused.exitCode).toBe(3);
    expect(refused.stderr).toMatch(/e2e-grow-hold is shut off: only a running VM can be rebooted; nothing was changed\nhint: start it: ivm start e2e-grow-hold/);
    const forced = await project.ivm(['reboot', HOLD, '--force']);
    expect(forced.exitCode).toBe(3);
    expect(await domainState(HOLD)).toBe('shut off');
  });
});

// start, stop, reboot, console, destroy, define, list: a VM's life through virsh.
import path from 'node:path';
import { RefusedError } from '../../errors.ts';
import { removeCommand } from '../../host/files.ts';
import { listAutostart, listDomains, virshCommand } from '../../host/virsh.ts';
import type { Context } from '../context.ts';
import { isRunning, ownDefinedVm, ownDomain, ownVm, savedError, shutDown } from './running.ts';
import { readBuildRecord } from '../base/base-image.ts';
import { backingOf } from '../disks/boot-overlay.ts';
import { renderDomainXml } from './domain-xml.ts';
import { autostartSteps } from './autostart.ts';
import { hasMachineId, machineIdFrom } from '../identity/identity.ts';
import { loadMachine, machineDir, type Machine } from '../machine/machine.ts';
import { executePlan, type Plan, type Step } from '../plan.ts';
import { machineNames } from '../machine/project.ts';
import { vmPaths } from '../disks/vm-paths.ts';
import { existingHostFiles, hostFileExists } from '../disks/vm-files.ts';
import { withVmLock } from '../lock.ts';
import { regularFileExists, removeFile } from '../safe-files.ts';

export async function startVm(ctx: Context, name: string): Promise<void> {
  await withVmLock(ctx, name, 'start', async () => {
    const { state } = await ownDefinedVm(ctx, name);
    if (state === 'running') return ctx.say(`${name} is already running`);
    await ctx.runner.progress.step(`start ${name}`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
    if (!ctx.runner.dryRun) ctx.say(`started ${name}`);
  });
}

export async function stopVm(ctx: Context, name: string, options: { force: boolean; timeoutSeconds: number }): Promise<void> {
  await withVmLock(ctx, name, 'stop', () => stopLocked(ctx, name, options));
}

async function stopLocked(ctx: Context, name: string, options: { force: boolean; timeoutSeconds: number }): Promise<void> {
  const { state } = await ownDefinedVm(ctx, name);
  if (state === 'shut off') return ctx.say(`${name} is already shut off`);
  if (options.force) {
    await ctx.runner.progress.step(`power off ${name}`, () => ctx.runner.run(virshCommand(ctx.runner, ['destroy', name], true)));
    if (!ctx.runner.dryRun) ctx.say(`${name} powered off`);
    return;
  }
  await shutDown(ctx, name, options.timeoutSeconds, `wait longer (--timeout), or power it off: ivm stop --force ${name}`, false);
  if (!ctx.runner.dryRun) ctx.say(`${name} shut off`);
}

/**
 * Reboots a running VM: by default asks its OS (`virsh reboot`: the ACPI power button, or the guest
 * agent when one answers; libvirt starts the VM again once the OS has shut down), or with `force`
 * resets it at once (`virsh reset`: no shutdown, like a reset button, so what the guest had not
 * written is lost).
 */
export async function rebootVm(ctx: Context, name: string, options: { force: boolean }): Promise<void> {
  await withVmLock(ctx, name, 'reboot', async () => {
    const { state } = await ownDefinedVm(ctx, name);
    if (state !== 'running') {
      throw new RefusedError(
        `${name} is ${state}: only a running VM can be rebooted; nothing was changed`,
        state === 'shut off' ? `start it: ivm start ${name}` : `wait until it runs, or power it off (ivm stop --force ${name}) and start it (ivm start ${name})`,
      );
    }
    if (options.force) {
      await ctx.runner.progress.step(`reset ${name} (at once, no shutdown)`, () => ctx.runner.run(virshCommand(ctx.runner, ['reset', name], true)));
      if (!ctx.runner.dryRun) ctx.say(`reset ${name}: it boots again now`);
      return;
    }
    await ctx.runner.progress.step(`ask ${name} to reboot`, () => ctx.runner.run(virshCommand(ctx.runner, ['reboot', name], true)));
    if (!ctx.runner.dryRun) ctx.say(`asked ${name} to reboot: it starts again once its OS has shut down (if it ignores the request: ivm reboot --force ${name})`);
  });
}

export async function consoleVm(ctx: Context, name: string): Promise<void> {
  await ownDefinedVm(ctx, name);
  await ctx.runner.run(virshCommand(ctx.runner, ['console', name], false, true));
}

/** Undefines the domain and removes its boot overlay; the /var disk only with deleteVar. */
export async function destroyVm(
  ctx: Context,
  name: string,
  options: { deleteVar: boolean; force: boolean; quietIfAbsent?: boolean },
): Promise<void> {
  await withVmLock(ctx, name, 'destroy', () => destroyLocked(ctx, name, options));
}

async function destroyLocked(ctx: Context, name: string, options: { deleteVar: boolean; force: boolean; quietIfAbsent?: boolean }): Promise<void> {
  // Only this project's machines: a VM of the same name made otherwise is never touched.
  const dir = machineDir(ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  if (!hasMachineId(dir)) {
    if (options.quietIfAbsent) return;
    throw new RefusedError(`machines/${name}/ has no machine-id: no VM was made of it here, so nothing of it is destroyed`);
  }
  const found = await ownDomain(ctx, name, machineIdFrom(dir));
  const state = found?.state;
  if (state !== undefined && isRunning(state) && !options.force) {
    throw new RefusedError(`${name} is ${state}`, `stop it first (ivm stop ${name}), or add --force to power it off`);
  }
  // A saved memory image goes with the domain only when asked for (--force); undefine needs that said.
  const saved = found?.managedSave === true;
  if (saved && !options.force) throw savedError(name);
  const steps: Step[] = [];
  if (state !== undefined && isRunning(state)) {
    steps.push({ kind: 'run', title: 'power off', command: virshCommand(ctx.runner, ['destroy', name], true) });
  }
  if (state !== undefined) {
    steps.push({
      kind: 'run',
      title: saved ? 'undefine (with its NVRAM and its saved memory image)' : 'undefine (with its NVRAM)',
      command: virshCommand(ctx.runner, ['undefine', '--nvram', ...(saved ? ['--managed-save'] : []), name], true),
    });
  }
  // Asked of the host (through HOST_CMD when set): what is there is what gets removed. A link or an
  // odd file in place of one of them is refused, not removed.
  const files = await existingHostFiles(ctx.runner, [paths.boot, paths.bootPrevious, paths.nvram, paths.serialLog, ...(options.deleteVar ? [paths.var] : [])]);
  if (files.length > 0) steps.push({ kind: 'run', title: 'remove files', command: removeCommand(...files) });
  if (steps.length === 0) {
    if (options.quietIfAbsent) return;
    if (!regularFileExists(paths.xml)) throw new RefusedError(`${name} has no domain and no disks: nothing to destroy`);
  }
  const plan: Plan = { title: `destroy ${name}`, steps };
  await executePlan(ctx.runner, plan, ctx.say);
  if (ctx.runner.dryRun) return;
  removeFile(paths.xml);
  ctx.say(`destroyed ${name}`);
  if (!options.deleteVar && (await hostFileExists(ctx.runner, paths.var))) ctx.say(`kept its /var disk: ${paths.var} (remove it with: ivm destroy --delete-var ${name})`);
}

/** Renders the XML, writes libvirt/<name>.xml and (re)defines the domain: uuid and MAC stay the same. */
export async function defineVm(ctx: Context, name: string): Promise<void> {
  await withVmLock(ctx, name, 'define', () => defineLocked(ctx, name));
}

async function defineLocked(ctx: Context, name: string): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const xml = machineXml(ctx, machine);
  // A domain of that name that is not this machine's is left alone (and libvirt would refuse it).
  // Redefining keeps libvirt's autostart; a new domain has none.
  const info = await ownVm(ctx, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  await executePlan(
    ctx.runner,
    {
      title: `define ${name}`,
      steps: [
        { kind: 'write', title: 'domain XML', path: paths.xml, content: xml },
        { kind: 'run', title: 'define the domain', command: virshCommand(ctx.runner, ['define', paths.xml], true) },
        ...autostartSteps(ctx, machine, info),
      ],
    },
    ctx.say,
  );
  if (!ctx.runner.dryRun) ctx.say(`defined ${name} from ${paths.xml}`);
}

export async function renderXml(ctx: Context, name: string): Promise<string> {
  return machineXml(ctx, await loadMachine(ctx.runner, ctx.project, name));
}

function machineXml(ctx: Context, machine: Machine): string {
  const name = machine.name;
  if (!hasMachineId(machine.dir)) {
    throw new RefusedError(`${name} has no identity yet (machines/${name}/machine-id)`, `run: ivm identity ${name}`);
  }
  return renderDomainXml(machine, machineIdFrom(machine.dir), vmPaths(ctx.settings, ctx.project, name), ctx.settings);
}

export interface ListEntry {
  name: string;
  /** libvirt's state ("running", "shut off", ...) or "undefined" when there is no domain. */
  state: string;
  /**
   * The boot overlay's base against the machine's latest build: "latest"; "behind" (an older base:
   * `ivm upgrade NAME --no-build` moves it); "gone" (its base file is missing); "none" (no boot
   * overlay); "unknown" (nothing built here, so nothing to compare with).
   */
  base: 'latest' | 'behind' | 'gone' | 'none' | 'unknown';
  /** libvirt's autostart of the domain (not meta.nix's: list reads no meta.nix); null when there is no domain. */
  autostart: boolean | null;
}

/** Every machine with its domain state and autostart, from two virsh calls (`virsh list --all`, and with --autostart). */
export async function listVms(ctx: Context): Promise<ListEntry[]> {
  const names = machineNames(ctx.project);
  const domains = await listDomains(ctx.runner);
  const autostarted = await listAutostart(ctx.runner);
  const entries: ListEntry[] = [];
  for (const name of names) {
    const state = domains.get(name);
    entries.push({ name, state: state ?? 'undefined', base: await baseAgainstBuild(ctx, name), autostart: state === undefined ? null : autostarted.has(name) });
  }
  return entries;
}

/** One `qemu-img info` of the overlay alone (milliseconds), compared with the build record. */
async function baseAgainstBuild(ctx: Context, name: string): Promise<ListEntry['base']> {
  const current = await backingOf(ctx.runner, vmPaths(ctx.settings, ctx.project, name).boot);
  if (current === undefined) return 'none';
  if (!(await hostFileExists(ctx.runner, current))) return 'gone';
  const record = readBuildRecord(ctx.project, name);
  if (!record) return 'unknown';
  return path.resolve(record.base) === path.resolve(current) ? 'latest' : 'behind';
}


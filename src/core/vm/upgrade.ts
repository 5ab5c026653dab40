// ivm upgrade and ivm rollback: move a stopped VM to another base, resync its identity, redefine it.
// Its /var data is never touched: only /identity on the /var filesystem changes (and the disk grows
// when meta.nix's varSize did: src/core/disks/grow.ts). libvirt's autostart follows meta.nix's.
import { IvmError, RefusedError, fileSystemError } from '../../errors.ts';
import { virshCommand, type DomainInfo } from '../../host/virsh.ts';
import type { Session } from '../../host/runner.ts';
import { requireBaseInBaseDir } from '../base/base-dir.ts';
import { backingOf, finishSwitchSteps, switchBaseSteps } from '../disks/boot-overlay.ts';
import { compareVarSize, describeVarSize, growSteps, varDiskSize } from '../disks/grow.ts';
import { autostartDiffers, autostartSteps, describeAutostart } from './autostart.ts';
import { buildBase, lastBuiltBase } from '../base/build.ts';
import type { Context } from '../context.ts';
import { renderDomainXml } from './domain-xml.ts';
import { machineSources, requireIdentity, stageSources, type IdentitySource } from '../identity/identity.ts';
import { describeDiff, diffIdentity, isInSync, openVarDisk, readDiskIdentity, syncScript } from '../identity/identity-sync.ts';
import { isRunning, ownDefinedVm, ownDomain, ownDomainState, savedError, stopForChange } from './running.ts';
import { loadMachine, type Machine } from '../machine/machine.ts';
import { executePlan, type Step } from '../plan.ts';
import { vmPaths, type VmPaths } from '../disks/vm-paths.ts';
import { hostFileExists } from '../disks/vm-files.ts';
import { readRegularText, regularFileExists } from '../safe-files.ts';
import { withVmLock } from '../lock.ts';
import { forgetSyncedIdentity, recordSyncedIdentity } from '../fleet/fleet-identity.ts';

export interface UpgradeOptions {
  build: boolean;
  restart: boolean;
  timeoutSeconds: number;
  /** A base already built (ivm apply: the one its plan chose); else build or the last build, as `build` says. */
  base?: string;
}

export async function upgradeVm(ctx: Context, name: string, options: UpgradeOptions): Promise<void> {
  await withVmLock(ctx, name, 'upgrade', () => upgradeLocked(ctx, name, options));
}

async function upgradeLocked(ctx: Context, name: string, options: UpgradeOptions): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  // Never generate identity here: the VM's identity is on its /var disk, and a new file would
  // replace it there. Everything local is checked before guestfish opens anything.
  const machineId = requireIdentity(machine.dir, name);
  const sources = machineSources(machine);
  if (!(await hostFileExists(ctx.runner, paths.var))) throw new RefusedError(`${name} has no /var disk (${paths.var})`, `to start afresh: ivm recreate ${name}`);
  const refuseRunning = (state: string) => {
    if (isRunning(state) && !options.restart) {
      throw new RefusedError(`${name} is ${state}: upgrade changes nothing while it runs`, `stop it first (ivm stop ${name}), or add --restart`);
    }
  };
  refuseRunning(await ownDomainState(ctx, name, machineId));
  const base = options.base ?? (options.build ? (await buildBase(ctx, name)).base : await lastBuiltBase(ctx, name));
  requireBaseInBaseDir(ctx.settings, base);
  // Asked again after the build, which may take long: the VM may have been started meanwhile.
  const domain = await ownDomainInfo(ctx, name, machineId);
  const state = domain?.state ?? 'undefined';
  refuseRunning(state);
  const running = isRunning(state);
  if (running) await stopForChange(ctx, name, options.timeoutSeconds);
  await upgradeStopped(ctx, { name, machine, machineId, sources, paths, base, state, domain, wasRunning: running }).catch((error: unknown) => {
    // A failed upgrade never starts the VM (its identity may be half-synced or its domain not the
    // one wanted), and the first error is the one reported.
    throw running ? leftStopped(error, name) : error;
  });
  // --restart: started again only once every step succeeded.
  if (running) await ctx.runner.progress.step(`start ${name} again`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
  if (!ctx.runner.dryRun) ctx.say(`upgraded ${name}${running ? ' and started it again' : ''}`);
}

/** ownDomainState's checks, giving the whole DomainInfo (its autostart too), from the same one virsh call. */
async function ownDomainInfo(ctx: Context, name: string, machineId: string): Promise<DomainInfo | undefined> {
  const info = await ownDomain(ctx, name, machineId);
  if (info?.managedSave) throw savedError(name);
  return info;
}

/** The error of a failed change to a VM that --restart had stopped: it says the VM was left off. */
export function leftStopped(failure: unknown, name: string): unknown {
  const error = failure instanceof IvmError ? failure : fileSystemError(failure);
  if (!error) return failure;
  const hint = [error.hint, `${name} was left shut off; once this is fixed, run the command again, or start it as it is: ivm start ${name}`].filter(Boolean).join('\n');
  return new IvmError(error.message, { exitCode: error.exitCode, hint });
}

/**
 * For the verbs that put a /var disk in place (snapshot restore, backup restore, clone): resync its
 * /identity with machines/NAME, put the boot overlay onto `base` (made if there is none), and
 * (re)define the domain, exactly as upgrade does. The caller holds NAME's lock; a running VM (or one
 * with a saved memory image) is refused. `newMachineId`: the disk may hold another machine's
 * identity (a clone, a backup restored under another name), which is then replaced whole.
 */
export async function resyncVarDisk(ctx: Context, name: string, options: { base: string; verb: string; newMachineId?: boolean }): Promise<void> {
  // The disk holds what it was restored from: the record of the last sync is void until this one succeeds.
  if (!ctx.runner.dryRun) forgetSyncedIdentity(ctx.project, name);
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  const machineId = requireIdentity(machine.dir, name);
  const sources = machineSources(machine);
  if (!(await hostFileExists(ctx.runner, paths.var))) throw new RefusedError(`${name} has no /var disk (${paths.var})`);
  requireBaseInBaseDir(ctx.settings, options.base);
  const domain = await ownDomainInfo(ctx, name, machineId);
  const state = domain?.state ?? 'undefined';
  if (isRunning(state)) throw new RefusedError(`${name} is ${state}: its /var disk cannot change while it runs`, `stop it first: ivm stop ${name}`);
  await upgradeStopped(ctx, { name, machine, machineId, sources, paths, base: options.base, state, domain, wasRunning: false, verb: options.verb, newMachineId: options.newMachineId ?? false });
}

interface UpgradeTarget {
  name: string;
  machine: Machine;
  machineId: string;
  sources: IdentitySource[];
  paths: VmPaths;
  base: string;
  state: string;
  /** The domain as libvirt had it (its autostart), undefined when there is none. */
  domain: DomainInfo | undefined;
  wasRunning: boolean;
  /** What the summary lines call the change ("upgrade", "restore", "clone"). */
  verb?: string;
  /** The disk may hold another machine-id: replace the identity whole instead of refusing. */
  newMachineId?: boolean;
}

async function upgradeStopped(ctx: Context, target: UpgradeTarget): Promise<void> {
  const staged = stageSources(target.sources, ctx.project.stateDir, ctx.runner.dryRun);
  try {
    await upgradeStaged(ctx, { ...target, sources: staged.sources });
    // What /identity now holds, for `ivm plan` (src/core/fleet/fleet-identity.ts).
    if (!ctx.runner.dryRun) recordSyncedIdentity(ctx.project, target.name, target.sources);
  } finally {
    staged.remove();
  }
}

async function upgradeStaged(ctx: Context, target: UpgradeTarget): Promise<void> {
  const { name, machine, machineId, sources, paths, base, state } = target;
  await finishSwitch(ctx, paths);
  const current = await backingOf(ctx.runner, paths.boot);
  const baseChanges = current !== base;
  // varSize grown in meta.nix: the disk grows too (after the identity sync, in the plan below). A
  // smaller varSize is only reported: ivm grow refuses it, and an upgrade does not stop for it.
  const diskBytes = await varDiskSize(ctx, paths);
  if (diskBytes === undefined) throw new RefusedError(`${name} has no /var disk (${paths.var})`);
  const varChange = compareVarSize(machine, diskBytes);
  // A domain defined anew starts without autostart.
  const libvirtAutostart = state === 'undefined' ? undefined : target.domain;
  const autostartChanges = autostartDiffers(machine, libvirtAutostart);
  let session: Session | undefined;
  let sync: string[] = [];
  let identityLine: string;
  try {
    if (target.wasRunning && ctx.runner.dryRun) {
      identityLine = 'not read (the VM is running; it is compared after the shutdown)';
    } else {
      session = await openVarDisk(ctx.runner, paths.var, { write: !ctx.runner.dryRun });
      const opened = session;
      const diff = diffIdentity(sources, await ctx.runner.progress.step('read /identity', () => readDiskIdentity(opened)));
      if (diff.changed.includes('machine-id') && !target.newMachineId) {
        throw new RefusedError(
          `the /var disk ${paths.var} holds another machine-id than machines/${name}/machine-id: it is not this machine's disk, or the file was replaced; nothing was changed`,
          `restore machines/${name}/machine-id from the disk (guestfish --ro -a ${paths.var} -m /dev/sda cat /identity/machine-id), or start afresh with ivm recreate ${name}`,
        );
      }
      identityLine = describeDiff(diff);
      sync = isInSync(diff) ? [] : syncScript(sources, diff);
    }
    const xml = renderDomainXml(machine, machineId, paths, ctx.settings);
    const xmlChanges = state === 'undefined' || !regularFileExists(paths.xml) || readRegularText(paths.xml) !== xml;

    const verb = target.verb ?? 'upgrade';
    ctx.say(`${verb} ${name}:`);
    ctx.say(`  base: ${baseChanges ? `${current ?? '(no boot overlay)'} -> ${base}` : `unchanged (${base})`}`);
    ctx.say(`  identity: ${identityLine}`);
    if (state === 'undefined') ctx.say('  domain: not defined; it will be defined again on this /var disk');
    if (varChange.kind !== 'equal') ctx.say(`  /var disk: ${describeVarSize(machine, varChange)}`);
    if (autostartChanges) ctx.say(`  autostart: ${describeAutostart(machine, libvirtAutostart)}`);
    if (!baseChanges && sync.length === 0 && !xmlChanges && varChange.kind !== 'grow' && !autostartChanges) {
      const opened = session;
      if (opened) await ctx.runner.progress.step('close the /var disk (guestfish exits)', () => opened.close());
      // After a restore the disk did change: only the identity, domain and base needed nothing.
      ctx.say(verb === 'upgrade' ? `${name} is up to date: nothing changed` : `${name}: identity, domain and base already up to date`);
      return;
    }
    if (session) {
      const opened = session;
      if (sync.length > 0) await ctx.runner.progress.step('write the identity changes', () => opened.send(sync, { mutates: true }));
      await ctx.runner.progress.step('close the /var disk (guestfish exits)', () => opened.close());
    }
    // The /var disk grows first (the guestfish session has closed it); then the domain is defined,
    // before any overlay moves: if libvirt refuses the XML, the overlays have not moved yet.
    const steps: Step[] = [
      ...growSteps(paths, varChange),
      ...redefineSteps(ctx, paths.xml, xml, name, state === 'undefined', state === 'undefined' && (await hostFileExists(ctx.runner, paths.nvram))),
      ...autostartSteps(ctx, machine, libvirtAutostart),
    ];
    if (baseChanges) steps.push(...(await switchBaseSteps(ctx.runner, paths, base)));
    await executePlan(ctx.runner, { title: `${verb} ${name}`, steps }, ctx.say);
  } finally {
    session?.abort();
  }
}

/** `nvramKept`: an NVRAM file was there before the domain was defined anew; its undo keeps it. */
function redefineSteps(ctx: Context, xmlPath: string, xml: string, name: string, wasUndefined: boolean, nvramKept = false): Step[] {
  return [
    { kind: 'write', title: 'domain XML', path: xmlPath, content: xml },
    {
      kind: 'run',
      title: 'redefine the domain (same uuid and MAC)',
      command: virshCommand(ctx.runner, ['define', xmlPath], true),
      // A domain defined anew (a VM brought back on its kept /var) goes again if a later step fails.
      ...(wasUndefined ? { undo: virshCommand(ctx.runner, ['undefine', nvramKept ? '--keep-nvram' : '--nvram', name], true) } : {}),
    },
  ];
}

/** Runs finishSwitchSteps, saying what it put right. */
async function finishSwitch(ctx: Context, paths: VmPaths): Promise<void> {
  const steps = await finishSwitchSteps(ctx.runner, paths);
  if (steps.length === 0) return;
  await executePlan(ctx.runner, { title: 'finish an interrupted switch', steps }, ctx.say);
  if (!ctx.runner.dryRun) for (const step of steps) ctx.say(step.title);
}

/** Puts the boot overlay back onto the previous base; the current one becomes the rollback target. */
export async function rollbackVm(ctx: Context, name: string, options: { restart: boolean; timeoutSeconds: number }): Promise<void> {
  await withVmLock(ctx, name, 'rollback', () => rollbackLocked(ctx, name, options));
}

async function rollbackLocked(ctx: Context, name: string, options: { restart: boolean; timeoutSeconds: number }): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  const machineId = requireIdentity(machine.dir, name);
  const info = await ownDefinedVm(ctx, name);
  if (info.managedSave) throw savedError(name);
  const state = info.state;
  await finishSwitch(ctx, paths);
  const previous = await backingOf(ctx.runner, paths.bootPrevious);
  if (previous === undefined) throw new RefusedError(`${name} has no previous base to roll back to (no ${paths.bootPrevious})`);
  if (!(await hostFileExists(ctx.runner, previous))) {
    throw new RefusedError(`the previous base of ${name} is gone: ${previous}`, 'a base removed by hand (or by another tool) cannot be rolled back to');
  }
  requireBaseInBaseDir(ctx.settings, previous);
  const running = isRunning(state);
  if (running && !options.restart) {
    throw new RefusedError(`${name} is ${state}: rollback changes nothing while it runs`, `stop it first (ivm stop ${name}), or add --restart`);
  }
  const current = await backingOf(ctx.runner, paths.boot);
  if (running) await stopForChange(ctx, name, options.timeoutSeconds);
  ctx.say(`rollback ${name}:\n  base: ${current ?? '(no boot overlay)'} -> ${previous}`);
  const xml = renderDomainXml(machine, machineId, paths, ctx.settings);
  const steps = [...redefineSteps(ctx, paths.xml, xml, name, false), ...(await switchBaseSteps(ctx.runner, paths, previous))];
  await executePlan(ctx.runner, { title: `rollback ${name}`, steps }, ctx.say).catch((error: unknown) => {
    throw running ? leftStopped(error, name) : error;
  });
  if (running) await ctx.runner.progress.step(`start ${name} again`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
  if (!ctx.runner.dryRun) ctx.say(`rolled back ${name}`);
}

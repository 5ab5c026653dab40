// A VM's state before a change: guestfish never opens the disks of a running VM, so changes either
// wait for it to be stopped or (--restart) shut it down gracefully first.
import { IvmError, RefusedError } from '../../errors.ts';
import { domainInfo, domainState, virshCommand, type DomainInfo } from '../../host/virsh.ts';
import type { Context } from '../context.ts';
import { domainUuid, hasMachineId, machineIdFrom } from '../identity/identity.ts';
import { machineDir } from '../machine/machine.ts';

/**
 * The domain of one of this project's machines: machines/NAME must exist and hold its machine-id,
 * and a domain of that name must carry the uuid derived from it (ownDomain). ivm acts only on
 * domains it made; undefined when there is no domain.
 */
export async function ownVm(ctx: Context, name: string): Promise<DomainInfo | undefined> {
  const dir = machineDir(ctx.project, name);
  if (!hasMachineId(dir)) {
    throw new RefusedError(
      `machines/${name}/ has no machine-id: no VM was made of it here, so ivm touches no domain named ${name}; nothing was changed`,
      `create it: ivm create ${name}`,
    );
  }
  return ownDomain(ctx, name, machineIdFrom(dir));
}

/** ownVm, for a verb that needs the domain to exist (start, stop, console). */
export async function ownDefinedVm(ctx: Context, name: string): Promise<DomainInfo> {
  const info = await ownVm(ctx, name);
  if (info === undefined) {
    throw new RefusedError(
      `${name} is not defined in libvirt (${ctx.settings.libvirtUri})`,
      `create it (ivm create ${name}), or, if its /var disk was kept by ivm destroy, bring it back: ivm upgrade ${name}`,
    );
  }
  return info;
}

/** Anything but shut off (running, paused, in shutdown, ...) counts as running: its disks are in use. */
export function isRunning(state: string): boolean {
  return state !== 'shut off' && state !== 'undefined';
}

/**
 * The domain's state ("undefined" when there is none), after checking that a domain of this name is
 * this machine's: its uuid derives from the machine-id. A VM of the same name made by other means,
 * or by another project, is never changed.
 */
export async function ownDomainState(ctx: Context, name: string, machineId: string): Promise<string> {
  const info = await ownDomain(ctx, name, machineId);
  if (info === undefined) return 'undefined';
  if (info.managedSave) throw savedError(name);
  return info.state;
}

/** The domain of this name, after checking it is this machine's (see ownDomainState). One virsh call. */
export async function ownDomain(ctx: Context, name: string, machineId: string): Promise<DomainInfo | undefined> {
  const info = await domainInfo(ctx.runner, name);
  if (info === undefined) return undefined;
  if (info.uuid !== domainUuid(machineId)) {
    throw new RefusedError(
      `the libvirt domain ${name} (uuid ${info.uuid}) is not this project's machine ${name} (whose uuid is ${domainUuid(machineId)}): nothing was changed`,
      'a VM of that name was made by other means or from another checkout; rename one of them',
    );
  }
  return info;
}

/**
 * A domain with a managed-save image is "shut off" to libvirt, but its memory, with /var mounted,
 * waits in that image: `start` resumes it on the disks as they are then. Changing them underneath
 * would corrupt /var, so it counts as running.
 */
export function savedError(name: string): RefusedError {
  return new RefusedError(
    `${name} has a saved memory image (virsh managedsave): starting it resumes that memory on its disks, so they must not change; nothing was changed`,
    `resume it and shut it down (ivm start ${name}; ivm stop ${name}), or discard the saved state: virsh managedsave-remove ${name}`,
  );
}

/**
 * Graceful shutdown, waiting up to the timeout. `hint` says what to do when it does not come: for a
 * change (upgrade, rollback) nothing else has been done at that point.
 */
export async function shutDown(ctx: Context, name: string, timeoutSeconds: number, hint: string, forChange = true): Promise<void> {
  await ctx.runner.progress.step(`ask ${name} to shut down`, async () => {
    const command = virshCommand(ctx.runner, ['shutdown', name], true);
    const result = await ctx.runner.run(command, { allowFailure: true });
    if (result.exitCode === 0) return;
    // It may have powered off by itself since its state was read ("domain is not running"): done, then.
    if ((await domainState(ctx.runner, name)) === 'shut off') return;
    throw ctx.runner.failure(command, result.exitCode, result.stderr);
  });
  if (ctx.runner.dryRun) return;
  const shutOff = await ctx.runner.progress.step(`wait for ${name} to shut off (up to ${timeoutSeconds} s)`, () => waitForShutOff(ctx, name, timeoutSeconds));
  if (!shutOff) {
    // The request stays with the guest, which may still power off later: say so, not "nothing changed".
    throw new IvmError(
      `${name} did not shut down within ${timeoutSeconds} s (it was asked to, and may still power off later)${forChange ? '; nothing else was done' : ''}`,
      { hint },
    );
  }
}

/** shutDown before upgrade or rollback. */
export function stopForChange(ctx: Context, name: string, timeoutSeconds: number): Promise<void> {
  return shutDown(ctx, name, timeoutSeconds, `stop it yourself (ivm stop --force ${name}) and run the command again`);
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function waitForShutOff(ctx: Context, name: string, timeoutSeconds: number): Promise<boolean> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  for (;;) {
    const state = await domainState(ctx.runner, name);
    if (state === undefined || state === 'shut off') return true;
    if (Date.now() >= deadline) return false;
    await sleep(1000);
  }
}

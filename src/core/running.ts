// A VM's state before a change: guestfish never opens the disks of a running VM, so changes either
// wait for it to be stopped or (--restart) shut it down gracefully first.
import { IvmError, RefusedError } from '../errors.ts';
import { domainState, virshCommand } from '../host/virsh.ts';
import type { Context } from './context.ts';
import { domainUuid } from './identity.ts';

export async function domainStateOrRefuse(ctx: Context, name: string): Promise<string> {
  const state = await domainState(ctx.runner, name);
  if (state === undefined) {
    throw new RefusedError(
      `${name} is not defined in libvirt (${ctx.settings.libvirtUri})`,
      `create it (ivm create ${name}), or, if its /var disk was kept by ivm destroy, bring it back: ivm upgrade ${name}`,
    );
  }
  return state;
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
  const state = await domainState(ctx.runner, name);
  if (state === undefined) return 'undefined';
  const result = await ctx.runner.run(virshCommand(ctx.runner, ['domuuid', name], false));
  const uuid = result.stdout.trim();
  if (uuid !== domainUuid(machineId)) {
    throw new RefusedError(
      `the libvirt domain ${name} (uuid ${uuid}) is not this project's machine ${name} (whose uuid is ${domainUuid(machineId)}): nothing was changed`,
      'a VM of that name was made by other means or from another checkout; rename one of them',
    );
  }
  return state;
}

/**
 * Graceful shutdown, waiting up to the timeout. `hint` says what to do when it does not come: for a
 * change (upgrade, rollback) nothing else has been done at that point.
 */
export async function shutDown(ctx: Context, name: string, timeoutSeconds: number, hint: string, forChange = true): Promise<void> {
  await ctx.runner.run(virshCommand(ctx.runner, ['shutdown', name], true));
  if (ctx.runner.dryRun) return;
  if (!(await waitForShutOff(ctx, name, timeoutSeconds))) {
    throw new IvmError(`${name} did not shut down within ${timeoutSeconds} s${forChange ? '; nothing was changed' : ''}`, { hint });
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

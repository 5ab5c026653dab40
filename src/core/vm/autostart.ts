// meta.nix's `autostart` against libvirt's: define, create and upgrade (and so resyncVarDisk) set
// libvirt's with `virsh autostart [--disable] NAME` when the two differ, and leave it alone when
// they agree. libvirt's setting is read from the `virsh dominfo` each of them makes anyway
// (DomainInfo.autostart), so applying it costs no query of its own.
import { virshCommand } from '../../host/virsh.ts';
import type { Context } from '../context.ts';
import type { Machine } from '../machine/machine.ts';
import type { Step } from '../plan.ts';

/**
 * Whether libvirt's autostart of the machine's domain differs from meta.nix's. `libvirt`: the
 * domain's DomainInfo (or just its `autostart`); undefined when there is no domain, which, once
 * defined, starts without autostart.
 */
export function autostartDiffers(machine: Machine, libvirt: { autostart: boolean } | undefined): boolean {
  return machine.meta.autostart !== (libvirt?.autostart ?? false);
}

/**
 * The step that makes libvirt's autostart meta.nix's (none when they agree), for a plan that runs
 * after the domain is defined. Its undo puts back libvirt's setting of before.
 */
export function autostartSteps(ctx: Context, machine: Machine, libvirt: { autostart: boolean } | undefined): Step[] {
  if (!autostartDiffers(machine, libvirt)) return [];
  const enable = virshCommand(ctx.runner, ['autostart', machine.name], true);
  const disable = virshCommand(ctx.runner, ['autostart', '--disable', machine.name], true);
  return [
    machine.meta.autostart
      ? { kind: 'run', title: 'autostart it with the host (meta.nix: autostart = true)', command: enable, undo: disable }
      : { kind: 'run', title: 'no autostart with the host (meta.nix: autostart = false)', command: disable, undo: enable },
  ];
}

/** For the summaries: libvirt's setting -> meta.nix's. */
export function describeAutostart(machine: Machine, libvirt: { autostart: boolean } | undefined): string {
  const word = (on: boolean) => (on ? 'on' : 'off');
  const now = libvirt?.autostart ?? false;
  return autostartDiffers(machine, libvirt) ? `${word(now)} -> ${word(machine.meta.autostart)}` : `unchanged (${word(now)})`;
}

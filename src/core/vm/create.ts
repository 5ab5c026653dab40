// ivm create: boot overlay + /var disk + identity + XML + define, as one plan that is either done
// whole or rolled back. It refuses, before touching anything, when any of the VM's files or its
// domain exists.
import { RefusedError } from '../../errors.ts';
import type { Command } from '../../host/runner.ts';
import { createDiskCommand, createOverlayCommand } from '../../host/qemu-img.ts';
import { removeCommand } from '../../host/files.ts';
import { listDomains, virshCommand } from '../../host/virsh.ts';
import { requireBaseInBaseDir } from '../base/base-dir.ts';
import { reservationSteps } from '../network/net.ts';
import { buildBase, lastBuiltBase } from '../base/build.ts';
import type { Context } from '../context.ts';
import { renderDomainXml } from './domain-xml.ts';
import { autostartSteps } from './autostart.ts';
import { ensureIdentity, machineIdFrom, machineSources } from '../identity/identity.ts';
import { loadMachine, type Machine } from '../machine/machine.ts';
import { executePlan, type Plan, type Step } from '../plan.ts';
import { copyIntoDiskCommand, mkfsCommand, ownershipCommand, stageVarTree, type VarStage } from '../disks/var-image.ts';
import { vmPaths, type VmPaths } from '../disks/vm-paths.ts';
import { existingHostFiles, hostFileExists } from '../disks/vm-files.ts';
import { withVmLock } from '../lock.ts';
import { recordSyncedIdentity } from '../fleet/fleet-identity.ts';

export interface CreateOptions {
  build: boolean;
  start: boolean;
  /** A base already built (recreate builds before it destroys anything). */
  base?: string;
  /** recreate under --dry-run: the files it would have deleted are still there. */
  replacing?: boolean;
}

export async function createVm(ctx: Context, name: string, options: CreateOptions): Promise<void> {
  await withVmLock(ctx, name, 'create', () => createLocked(ctx, name, options));
}

async function createLocked(ctx: Context, name: string, options: CreateOptions): Promise<void> {
  const machine = await loadMachine(ctx.runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  if (!(ctx.runner.dryRun && options.replacing)) await refuseExisting(ctx, name, paths);
  const written = ensureIdentity(ctx, machine.dir, name);
  // Under --dry-run the generated files were only planned: the plan must still upload them.
  const pending = ctx.runner.dryRun ? written.map((write) => write.name) : [];
  const base = options.base ?? (options.build ? (await buildBase(ctx, name)).base : await lastBuiltBase(ctx, name));
  requireBaseInBaseDir(ctx.settings, base);
  // The DHCP reservation of a static address comes first, so a later failure takes it back too.
  const reservation = await reservationSteps(ctx, machine);
  // The identity is read now, as this user, into a private /var tree: the tools get only that.
  const stage = stageVarTree(ctx.project.stateDir, machineSources(machine, pending), ctx.runner.dryRun);
  try {
    // The temporary names must not be links: qemu-img and chmod would write through them as root.
    await existingHostFiles(ctx.runner, [`${paths.boot}.new`, `${paths.var}.new`]);
    const plan = createPlan(ctx, machine, base, paths, stage, pending);
    plan.steps.unshift(...reservation);
    await executePlan(ctx.runner, plan, ctx.say);
    // What the new /var holds in /identity, for `ivm plan` (src/core/fleet/fleet-identity.ts).
    if (!ctx.runner.dryRun) recordSyncedIdentity(ctx.project, name, () => machineSources(machine));
  } finally {
    stage.remove();
  }
  if (!ctx.runner.dryRun) {
    for (const step of reservation) ctx.say(step.title);
    ctx.say(`created ${name}: boot ${paths.boot} (backed by ${base}), /var ${paths.var} (${machine.meta.varSize}); domain defined`);
  }
  if (options.start) {
    // Outside the plan: a VM that was made but does not start stays, for `ivm console` and the log.
    await ctx.runner.progress.step(`start ${name}`, () => ctx.runner.run(virshCommand(ctx.runner, ['start', name], true)));
    if (!ctx.runner.dryRun) ctx.say(`started ${name}; serial log: ${paths.serialLog}`);
  }
}

/** What of a VM of this name exists: its disks and NVRAM, and its libvirt domain (one virsh call). */
export async function existingParts(ctx: Context, name: string, paths: VmPaths): Promise<{ parts: string[]; domain: boolean }> {
  const parts = await existingHostFiles(ctx.runner, [paths.boot, paths.bootPrevious, paths.var, paths.nvram]);
  const domains = await listDomains(ctx.runner);
  if (domains.has(name)) parts.push(`libvirt domain ${name} (${domains.get(name)})`);
  return { parts, domain: domains.has(name) };
}

async function refuseExisting(ctx: Context, name: string, paths: VmPaths): Promise<void> {
  const { parts: conflicts, domain } = await existingParts(ctx, name, paths);
  if (conflicts.length > 0) {
    throw new RefusedError(
      `${name} already exists, nothing was changed:\n${conflicts.map((c) => `  ${c}`).join('\n')}`,
      (await hostFileExists(ctx.runner, paths.var)) && !domain
        ? `a /var disk survives \`ivm destroy\`: bring the VM back on it with \`ivm upgrade ${name}\`, or start afresh with \`ivm recreate ${name}\` (its data is lost)`
        : `to remove the VM: ivm destroy ${name} (keeps its /var disk)`,
    );
  }
}

/**
 * Makes a file under a temporary name and links it to its final name without -f: if something
 * appeared there meanwhile (or the existence check could not see it, e.g. through HOST_CMD), the
 * link fails and nothing is overwritten.
 */
function newFileSteps(title: string, file: string, make: (file: string) => Command, mode?: string, fill?: { title: string; command: (file: string) => Command }): Step[] {
  const partial = `${file}.new`;
  return [
    { kind: 'run', title, command: make(partial), undo: removeCommand(partial) },
    ...(mode ? [{ kind: 'run' as const, title: `mode ${mode}`, command: { tool: 'chmod' as const, args: [mode, partial], mutates: true } }] : []),
    ...(fill ? [{ kind: 'run' as const, title: fill.title, command: fill.command(partial) }] : []),
    { kind: 'run', title: 'give it its name, never replacing a file', command: { tool: 'ln', args: ['-T', partial, file], mutates: true }, undo: removeCommand(file) },
    { kind: 'run', title: 'drop the temporary name', command: removeCommand(partial) },
  ];
}

/**
 * `stage`: the /var tree staged from the machine's identity; `pending`: identity files that
 * --dry-run did not write but a real run would have.
 */
export function createPlan(ctx: Context, machine: Machine, base: string, paths: VmPaths, stage: VarStage, pending: string[] = []): Plan {
  const { runner, settings } = ctx;
  const machineId = pending.includes('machine-id') ? '0'.repeat(32) : machineIdFrom(machine.dir);
  return {
    title: `create ${machine.name}`,
    steps: [
      { kind: 'run', title: 'make the VM folder', command: { tool: 'mkdir', args: ['-p', settings.vmDir], mutates: true } },
      ...newFileSteps(`boot overlay backed by ${base}`, paths.boot, (file) => createOverlayCommand(base, file)),
      // The /var filesystem, built from the staged tree without an appliance (src/core/disks/var-image.ts).
      { kind: 'run', title: `the /var filesystem (ext4, label ivm-var, ${machine.meta.varSize}) from the identity`, command: mkfsCommand(stage, machine.meta.varSize) },
      { kind: 'run', title: 'every file on it root\'s', command: ownershipCommand(stage) },
      // 0600 before anything is written: the /var disk will hold the host's private key.
      ...newFileSteps(`/var disk of ${machine.meta.varSize}`, paths.var, (file) => createDiskCommand(file, machine.meta.varSize), '0600', {
        title: 'copy the /var filesystem into it',
        command: (file) => copyIntoDiskCommand(stage, file),
      }),
      { kind: 'write', title: 'domain XML', path: paths.xml, content: renderDomainXml(machine, machineId, paths, settings) },
      {
        kind: 'run',
        title: 'define the domain',
        command: virshCommand(runner, ['define', paths.xml], true),
        undo: virshCommand(runner, ['undefine', '--nvram', machine.name], true),
      },
      // A new domain starts without autostart: only autostart = true has a step.
      ...autostartSteps(ctx, machine, undefined),
    ],
  };
}


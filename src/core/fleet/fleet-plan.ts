// ivm plan: the whole fleet, declaratively. For every machine in machines/ (or those named), what is
// described (meta.nix, the latest build of its module selection, its identity files, autostart)
// against what exists (its domain, disks, base, the identity last synced onto /var, whether it
// runs), as a list of actions per machine: build, create, upgrade, redefine, grow, restart, start.
// It only reads: `nix build` runs (installing nothing: a build nix has cached is a no-op), and
// every other command is a query. `ivm apply` (apply.ts) does what this plan says.
//
// What plan knows, and how (README.md, "The whole fleet"):
// - the latest build: `nix build` of each machine now (each distinct store path is one base, shared
//   by every machine that builds to it), or with --no-build the last build recorded (.ivm/NAME.json);
// - the identity: against the record of what create or upgrade last wrote onto /var
//   (.ivm/synced/NAME.json, fleet-identity.ts); --deep reads each stopped VM's /var disk instead;
// - the definition: the XML rendered now against libvirt/NAME.xml and libvirt's persistent
//   definition, and for a running VM against what it runs with (fleet-domain.ts);
// - orphans: fleet-orphans.ts.
import fs from 'node:fs';
import path from 'node:path';
import { ExitCode, IvmError, RefusedError, fileSystemError } from '../../errors.ts';
import { readlink } from '../../host/files.ts';
import { buildCommand, buildOutPath } from '../../host/nix.ts';
import { listDomains } from '../../host/virsh.ts';
import { basePathFor, findImage, imageInstallable, readBuildRecord } from '../base/base-image.ts';
import type { Runner } from '../../host/runner.ts';
import type { Context } from '../context.ts';
import { backingOf } from '../disks/boot-overlay.ts';
import { compareVarSize, describeVarSize, varDiskSize } from '../disks/grow.ts';
import { existingHostFiles, hostFileExists } from '../disks/vm-files.ts';
import { vmPaths } from '../disks/vm-paths.ts';
import { hasMachineId, machineIdFrom, machineSources, planIdentity, requireIdentity, type IdentitySource } from '../identity/identity.ts';
import { describeDiff, diffIdentity, isInSync, openVarDisk, readDiskIdentity } from '../identity/identity-sync.ts';
import { loadMachine, machineDir, type Machine } from '../machine/machine.ts';
import { machineNames } from '../machine/project.ts';
import { regularFileExists, readRegularText } from '../safe-files.ts';
import { autostartDiffers, describeAutostart } from '../vm/autostart.ts';
import { renderDomainXml } from '../vm/domain-xml.ts';
import { isRunning, ownDomain, savedError } from '../vm/running.ts';
import { domainFacts, factChanges, libvirtXml } from './fleet-domain.ts';
import { describeAgainstRecord, identityAgainstRecord } from './fleet-identity.ts';
import { findOrphans, markForRemoval, orphanBlocked, orphanHasParts, type Orphan } from './fleet-orphans.ts';

/**
 * `ivm plan`'s exit code when something would change (or waits for a restart): like `terraform
 * plan -detailed-exitcode`'s 2, but 2 is ivm's "bad input" and 1, 3, 4 its other errors.
 */
export const PLAN_CHANGES_EXIT = 10;

export type ActionKind = 'build' | 'create' | 'upgrade' | 'redefine' | 'grow' | 'restart' | 'start';

/** The order actions are listed and done in. */
const ORDER: ActionKind[] = ['build', 'create', 'upgrade', 'redefine', 'grow', 'restart', 'start'];

/** Actions that need the VM shut off: a running VM gets them only with --restart. */
export const STOP_ACTIONS: readonly ActionKind[] = ['upgrade', 'grow', 'restart'];

export interface Action {
  action: ActionKind;
  why: string;
}

export interface FleetOptions {
  /** false: --no-build (compare with each machine's last build). */
  build: boolean;
  /** Read each stopped VM's /var disk (guestfish, read-only) instead of the record of the last sync. */
  deep: boolean;
  /** A running VM that needs a stop is shut down, changed and started again. */
  restart: boolean;
  /** Orphans named to be removed (--remove-orphan). */
  removeOrphans: string[];
}

export interface MachinePlan {
  name: string;
  /** libvirt's state, "undefined" (no domain) or "unknown" (not found out: see error). */
  state: string;
  /** What apply does, in order. */
  actions: Action[];
  /** What needs a stop of the running VM: apply leaves it running (needs restart) without --restart. */
  waiting: Action[];
  /** Things worth saying that are not changes (a /var disk larger than varSize). */
  notes: string[];
  base: { current: string | undefined; latest: string; storePath: string; installed: boolean } | undefined;
  /** "new": create writes it; "not checked": an upgrade reads and syncs it anyway. */
  identity: 'in sync' | 'differs' | 'unknown' | 'new' | 'not checked';
  /** Where the identity verdict comes from: the record of the last sync, or the /var disk (--deep). */
  identityFrom: 'record' | 'disk' | undefined;
  /** The machine could not be planned: apply leaves it alone and counts it as failed. */
  error: { message: string; hint: string | undefined; exitCode: number } | undefined;
}

/** One distinct build: a base file, and the machines whose latest build it is. */
export interface BuildPlan {
  storePath: string;
  base: string;
  installed: boolean;
  /** The image in the build output (what apply installs); undefined with --no-build. */
  image: string | undefined;
  machines: string[];
}

export interface FleetPlan {
  options: FleetOptions;
  machines: MachinePlan[];
  builds: BuildPlan[];
  /** Listed when no machine is named, or when named for removal. */
  orphans: Orphan[];
  /** What apply needs beyond the printed plan, by machine name. */
  internal: Map<string, { machine: Machine; base: string; sources: IdentitySource[] | undefined; deepInSync: boolean; deepStamp?: string }>;
}

/** The machines to plan: those named (each must exist: exit 2 otherwise), or all of machines/. */
export function selectMachines(ctx: Context, names: string[]): string[] {
  if (names.length === 0) return machineNames(ctx.project);
  for (const name of names) machineDir(ctx.project, name);
  return [...new Set(names)];
}

export async function planFleet(ctx: Context, names: string[], options: FleetOptions): Promise<FleetPlan> {
  const selected = selectMachines(ctx, names);
  // One `virsh list --all` for the fleet: libvirt unreachable is the fleet's error (exit 4), not each machine's.
  const domains = await listDomains(ctx.runner);
  const orphans = await findOrphans(ctx, domains);
  // Named orphans are checked before anything is built or read (bad input: exit 2).
  markForRemoval(orphans, [...new Set(options.removeOrphans)], ctx);
  const plan: FleetPlan = {
    options,
    machines: [],
    builds: [],
    orphans: names.length === 0 ? orphans : orphans.filter((orphan) => orphan.remove),
    internal: new Map(),
  };
  for (const name of selected) plan.machines.push(await planOne(ctx, plan, name, domains));
  return plan;
}

async function planOne(ctx: Context, plan: FleetPlan, name: string, domains: Map<string, string>): Promise<MachinePlan> {
  const entry: MachinePlan = { name, state: 'unknown', actions: [], waiting: [], notes: [], base: undefined, identity: 'not checked', identityFrom: undefined, error: undefined };
  try {
    await ctx.runner.progress.step(`plan ${name}`, () => planMachine(ctx, plan, entry, domains));
  } catch (error) {
    const known = error instanceof IvmError ? error : fileSystemError(error);
    if (!known) throw error; // a bug: a stack trace, not a line of the plan
    entry.error = { message: known.message, hint: known.hint, exitCode: known.exitCode };
    entry.actions = [];
    entry.waiting = [];
  }
  entry.actions.sort((a, b) => ORDER.indexOf(a.action) - ORDER.indexOf(b.action));
  entry.waiting.sort((a, b) => ORDER.indexOf(a.action) - ORDER.indexOf(b.action));
  return entry;
}

/** The machine's latest base: built now (nix build, as a query: nothing is installed), or the last build. */
async function latestBase(ctx: Context, plan: FleetPlan, name: string): Promise<BuildPlan> {
  let storePath: string;
  let base: string;
  let image: string | undefined;
  if (plan.options.build) {
    // Run even under --dry-run: it installs nothing and changes no file of ivm's (nix adds to its
    // store, a cache), and without it the plan could not know the latest build.
    const result = await ctx.runner.run({ ...buildCommand(imageInstallable(ctx.project, name)), mutates: false });
    storePath = buildOutPath(result.stdout);
    base = basePathFor(ctx.settings, storePath);
  } else {
    const record = readBuildRecord(ctx.project, name);
    if (!record) throw new RefusedError(`no base image has been built for ${name} (--no-build)`, `run: ivm build ${name} (or drop --no-build)`);
    storePath = record.storePath;
    base = record.base;
  }
  let build = plan.builds.find((known) => known.base === base);
  if (!build) {
    const installed = await hostFileExists(ctx.runner, base);
    if (!installed && !plan.options.build) throw new RefusedError(`the base image last built for ${name} is gone: ${base} (--no-build)`, `run: ivm build ${name} (or drop --no-build)`);
    if (!installed) image = await readlink(ctx.runner, findImage(storePath));
    build = { storePath, base, installed, image, machines: [] };
    plan.builds.push(build);
  }
  build.machines.push(name);
  return build;
}

async function planMachine(ctx: Context, plan: FleetPlan, entry: MachinePlan, domains: Map<string, string>): Promise<void> {
  const { name } = entry;
  const { runner } = ctx;
  const machine = await loadMachine(runner, ctx.project, name);
  const paths = vmPaths(ctx.settings, ctx.project, name);
  const build = await latestBase(ctx, plan, name);
  const current = await backingOf(runner, paths.boot);
  entry.base = { current, latest: build.base, storePath: build.storePath, installed: build.installed };
  const internal = { machine, base: build.base, sources: undefined as IdentitySource[] | undefined, deepInSync: false, deepStamp: undefined as string | undefined };
  plan.internal.set(name, internal);
  if (!build.installed) {
    const shared = build.machines.filter((other) => other !== name);
    entry.actions.push({ action: 'build', why: `install ${build.base}${shared.length ? ` (shared with ${shared.join(', ')})` : ''}` });
  }
  const files = await existingHostFiles(runner, [paths.boot, paths.bootPrevious, paths.var, paths.nvram]);
  const [bootPrevious, varDisk, nvram] = [paths.bootPrevious, paths.var, paths.nvram].map((file) => files.includes(file));
  const listed = domains.has(name);
  const parts = [...(listed ? [`the libvirt domain ${name}`] : []), ...files];

  if (!hasMachineId(machine.dir)) {
    if (parts.length > 0) {
      throw new RefusedError(
        `machines/${name}/ has no machine-id, but ${parts.join(', ')} exist: nothing ties them to this machine, so apply neither creates nor changes it`,
        varDisk ? `restore the machine-id from the /var disk: guestfish --ro -a ${paths.var} -m /dev/sda cat /identity/machine-id > machines/${name}/machine-id` : `if they are this machine's: ivm recreate ${name}`,
      );
    }
    planCreate(entry, machine, build);
    return;
  }
  const machineId = machineIdFrom(machine.dir);
  const info = listed ? await ownDomain(ctx, name, machineId) : undefined;
  if (info?.managedSave) throw savedError(name);
  entry.state = info?.state ?? 'undefined';
  if (!varDisk) {
    if (info === undefined && current === undefined && !bootPrevious && !nvram) {
      planCreate(entry, machine, build);
      return;
    }
    throw new RefusedError(
      `${name} has no /var disk (${paths.var}), but ${parts.join(', ')} exist: apply never makes a new /var disk under an existing VM`,
      `start afresh: ivm recreate ${name} (or ivm destroy ${name}, and the next apply creates it)`,
    );
  }

  // An existing VM: its identity is on its /var disk, so nothing of it is generated (upgrade's rule).
  requireIdentity(machine.dir, name);
  const sources = machineSources(machine);
  internal.sources = sources;
  const running = isRunning(entry.state);
  const upgrade: string[] = [];
  if (info === undefined) upgrade.push('not defined: brought back on its kept /var disk');
  if (current === undefined) upgrade.push('no boot overlay');
  else if (path.resolve(current) !== path.resolve(build.base)) upgrade.push(`${(await hostFileExists(runner, current)) ? 'base behind' : 'its base file is gone'}: ${current} -> ${build.base}`);
  const recorded = identityAgainstRecord(ctx.project, name, sources);
  if (plan.options.deep && !running && upgrade.length === 0) {
    // One read-only guestfish launch (~17 s under TCG): only where nothing else calls for an upgrade.
    // The disk's stamp is taken first: apply records "in sync" only if nothing wrote to it since.
    const stamp = await diskStamp(runner, paths.var);
    const diff = await readIdentity(ctx, paths.var, sources);
    if (diff.changed.includes('machine-id')) {
      throw new RefusedError(`the /var disk ${paths.var} holds another machine-id than machines/${name}/machine-id: it is not this machine's disk, or the file was replaced`, `ivm upgrade ${name} says the same; see ivm status ${name}`);
    }
    entry.identityFrom = 'disk';
    entry.identity = isInSync(diff) ? 'in sync' : 'differs';
    internal.deepInSync = isInSync(diff) && recorded.state !== 'in sync';
    internal.deepStamp = stamp;
    if (!isInSync(diff)) upgrade.push(`identity differs on the /var disk: ${describeDiff(diff)}`);
  } else {
    entry.identityFrom = 'record';
    entry.identity = recorded.state;
    if (recorded.state === 'differs') upgrade.push(`identity changed since its last sync: ${describeAgainstRecord(recorded)}`);
    if (recorded.state === 'unknown') {
      upgrade.push(`identity: no record of its last sync; ${plan.options.deep && running ? '--deep reads only a stopped VM\'s disk' : 'the upgrade reads the disk and syncs it'}`);
    }
  }

  // The definition: the XML rendered now against what ivm wrote and libvirt keeps.
  const rendered = renderDomainXml(machine, machineId, paths, ctx.settings);
  const wanted = domainFacts(rendered);
  const redefine: string[] = [];
  if (info !== undefined) {
    if (!regularFileExists(paths.xml)) redefine.push(`libvirt/${name}.xml is missing`);
    else {
      const written = readRegularText(paths.xml);
      if (written !== rendered) {
        const changes = factChanges(domainFacts(written), wanted);
        redefine.push(...(changes.length ? changes : [`libvirt/${name}.xml is not the XML rendered now`]));
      }
    }
    if (redefine.length === 0) {
      // ivm xml --write (or virsh edit) may have left libvirt's definition behind the file.
      const changes = factChanges(domainFacts(await libvirtXml(runner, name, 'persistent')), wanted);
      if (changes.length) redefine.push(`libvirt's definition differs: ${changes.join(', ')}`);
    }
    if (autostartDiffers(machine, info)) redefine.push(`autostart ${describeAutostart(machine, info)}`);
  }
  if (upgrade.length > 0) {
    // upgrade redefines the domain (and sets autostart) itself: its reasons are said with it.
    entry.actions.push({ action: 'upgrade', why: [...upgrade, ...redefine.map((why) => `redefine: ${why}`)].join('; ') });
  } else if (redefine.length > 0) {
    entry.actions.push({ action: 'redefine', why: `${redefine.join(', ')}${running ? ` (${name} runs: it takes effect when it starts again)` : ''}` });
  }

  const diskBytes = await varDiskSize(ctx, paths);
  if (diskBytes !== undefined) {
    const change = compareVarSize(machine, diskBytes);
    // upgrade grows the disk too; a grow of its own only when no upgrade comes.
    if (change.kind === 'grow' && upgrade.length === 0) entry.actions.push({ action: 'grow', why: `/var ${describeVarSize(machine, change)}` });
    else if (change.kind === 'grow') entry.actions[entry.actions.length - 1]!.why += `; grow /var ${describeVarSize(machine, change)}`;
    if (change.kind === 'shrink') entry.notes.push(`/var ${describeVarSize(machine, change)}`);
  }
  if (running) {
    const changes = factChanges(domainFacts(await libvirtXml(runner, name, 'live')), wanted);
    if (changes.length > 0) entry.actions.push({ action: 'restart', why: `runs with an older definition: ${changes.join(', ')}` });
  }
  // A running VM keeps running until --restart: what needs it shut off waits.
  const stops = entry.actions.filter((action) => STOP_ACTIONS.includes(action.action));
  if (running && stops.length > 0) {
    if (!plan.options.restart) {
      entry.waiting = stops;
      entry.actions = entry.actions.filter((action) => !STOP_ACTIONS.includes(action.action));
    } else {
      // One restart does for all: upgrade and grow start it again themselves.
      if (stops.some((action) => action.action !== 'restart')) entry.actions = entry.actions.filter((action) => action.action !== 'restart');
      for (const action of entry.actions) if (STOP_ACTIONS.includes(action.action)) action.why += ' (--restart: shut down gracefully, then started again)';
    }
  }
  if (machine.meta.autostart && !running) entry.actions.push({ action: 'start', why: 'autostart = true, and it is shut off' });
}

function planCreate(entry: MachinePlan, machine: Machine, build: BuildPlan): void {
  planIdentity(machine.dir, machine.name); // a .pub without its private key is refused now, not halfway
  entry.state = 'undefined';
  entry.identity = 'new';
  entry.actions.push({ action: 'create', why: `no VM yet: boot overlay on ${build.base}, a new /var disk of ${machine.meta.varSize}` });
  if (machine.meta.autostart) entry.actions.push({ action: 'start', why: 'autostart = true' });
}

/**
 * What says whether a file was written since: its device, inode, size and change time (ctime, to
 * the nanosecond; any write, a qemu-img snapshot or a replaced file moves it; a read-only open does
 * not). Asked of the host (stat through the runner) when HOST_CMD is set, as the VM files are.
 */
export async function diskStamp(runner: Runner, file: string): Promise<string> {
  if (runner.settings.hostCmd.length === 0) {
    const st = fs.lstatSync(file, { bigint: true });
    return `${st.dev}:${st.ino}:${st.size}:${st.ctimeNs}`;
  }
  const result = await runner.run({ tool: 'stat', args: ['-c', '%d:%i:%s:%z', '--', file], mutates: false });
  return result.stdout.trim();
}

async function readIdentity(ctx: Context, varDisk: string, sources: IdentitySource[]) {
  const session = await openVarDisk(ctx.runner, varDisk, { write: false });
  try {
    const diff = diffIdentity(sources, await ctx.runner.progress.step('read /identity', () => readDiskIdentity(session)));
    await ctx.runner.progress.step('close the /var disk (guestfish exits)', () => session.close());
    return diff;
  } finally {
    session.abort();
  }
}

/** Whether anything would change: orphans count only when named for removal. */
export function hasChanges(plan: FleetPlan): boolean {
  return plan.machines.some((entry) => entry.actions.length > 0 || entry.waiting.length > 0) || plan.orphans.some((orphan) => orphan.remove && orphanHasParts(orphan));
}

/** `ivm plan`'s exit code: 1 when a machine could not be planned, PLAN_CHANGES_EXIT when anything would change, else 0. */
export function planExitCode(plan: FleetPlan, uri: string): number {
  const blocked = plan.orphans.some((orphan) => orphan.remove && orphanBlocked(orphan, uri));
  if (blocked || plan.machines.some((entry) => entry.error)) return ExitCode.failure;
  return hasChanges(plan) ? PLAN_CHANGES_EXIT : 0;
}

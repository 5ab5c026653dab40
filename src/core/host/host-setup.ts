// ivm host setup: the host contract, checked item by item and turned into a plan of the missing
// steps. Printed by default, done with --apply; a second run finds nothing to do.
//   - IVM_BASE_DIR: owned by root (session mode: by you), 0755; the images in it 0444.
//   - IVM_VM_DIR exists.
//   - one AppArmor rule for the whole of IVM_BASE_DIR, where the host's libvirt-qemu abstraction
//     reads it; skipped where AppArmor is not enabled, and in session mode.
//   - storage pools basepool and vmpool (system mode), defined, started, autostarted; a pool with
//     another path is reported, never redefined.
import fs from 'node:fs';
import path from 'node:path';
import { ExitCode, IvmError, LibvirtUnreachableError, RefusedError } from '../../errors.ts';
import type { Command } from '../../host/runner.ts';
import { virshCommand } from '../../host/virsh.ts';
import { appArmorHost, appArmorState, libvirtProfiles, type AppArmorHost } from './apparmor.ts';
import { canonical, hiddenHomeFolder } from '../base/base-dir.ts';
import type { HostContext } from './host-context.ts';
import { unreachableAncestors } from './doctor.ts';
import { describePlan, executePlan, type Plan, type Step } from '../plan.ts';
import { listPools, type PoolInfo } from './pools.ts';
import { octalMode } from '../file-mode.ts';
import { BASE_IMAGE_NAME } from '../base/base-image.ts';

export const BASE_POOL = 'basepool';
export const VM_POOL = 'vmpool';

export type ItemStatus = 'ok' | 'todo' | 'skip' | 'problem';

export interface SetupItem {
  status: ItemStatus;
  what: string;
  detail: string;
  /** A problem of the host's environment (libvirt unreachable), not of its set-up: exit 4. */
  environment?: boolean;
}

export interface SetupReport {
  items: SetupItem[];
  plan: Plan;
}

const run = (title: string, command: Command, undo?: Command): Step => ({ kind: 'run', title, command, ...(undo ? { undo } : {}) });
const mode = (st: fs.Stats) => octalMode(st.mode);

function statOrUndefined(file: string): fs.Stats | undefined {
  try {
    return fs.statSync(file);
  } catch {
    return undefined;
  }
}

export async function planHostSetup(ctx: HostContext, host: AppArmorHost = appArmorHost()): Promise<SetupReport> {
  const { settings, runner } = ctx;
  const session = settings.mode === 'session';
  const owner = session ? (process.getuid?.() ?? 0) : 0;
  const ownerName = session ? 'you' : 'root';
  const items: SetupItem[] = [];
  const steps: Step[] = [];
  const item = (status: ItemStatus, what: string, detail: string) => items.push({ status, what, detail });

  for (const [variable, dir] of [['IVM_BASE_DIR', settings.baseDir], ['IVM_VM_DIR', settings.vmDir]] as const) {
    const home = hiddenHomeFolder(canonical(dir));
    if (home) {
      throw new RefusedError(
        `${variable}=${dir} is inside a hidden folder of ${home}: AppArmor denies QEMU every path under @{HOME}/.*`,
        `choose a folder that is not hidden, e.g. ${variable}=${path.join(home, 'ivm', path.basename(dir))}`,
      );
    }
  }

  // The base-image folder and its images.
  const baseDir = settings.baseDir;
  const base = statOrUndefined(baseDir);
  if (base && !base.isDirectory()) throw new RefusedError(`IVM_BASE_DIR=${baseDir} exists and is not a folder`);
  if (!base) {
    item('todo', 'base-image folder', `${baseDir} is missing: make it (${ownerName}, 0755)`);
    steps.push(run(`make ${baseDir}`, { tool: 'mkdir', args: ['-p', '-m', '0755', baseDir], mutates: true }));
  } else {
    const problems: string[] = [];
    if (base.uid !== owner) {
      if (session) item('problem', 'base-image folder', `${baseDir} is owned by uid ${base.uid}, not by you: fix it as root (chown)`);
      else {
        problems.push(`owned by uid ${base.uid}`);
        steps.push(run(`make ${baseDir} root's`, { tool: 'chown', args: ['root:root', baseDir], mutates: true }));
      }
    }
    if ((base.mode & 0o7777) !== 0o755) {
      problems.push(`mode ${mode(base)}`);
      steps.push(run(`${baseDir} mode 0755`, { tool: 'chmod', args: ['0755', baseDir], mutates: true }));
    }
    if (problems.length > 0) item('todo', 'base-image folder', `${baseDir}: ${problems.join(', ')}; wants ${ownerName}, 0755`);
    else if (base.uid === owner) item('ok', 'base-image folder', `${baseDir}: ${ownerName}, 0755`);

    let entries: fs.Dirent[] | undefined;
    try {
      entries = fs.readdirSync(baseDir, { withFileTypes: true });
    } catch (error) {
      // Closed to this user: the folder's own steps above open it; its images are checked next run.
      item('skip', 'base images', `${baseDir} cannot be listed by this user (${(error as NodeJS.ErrnoException).code}): checked again after the folder is fixed`);
    }
    // Only files named as ivm build names a base (Dirents are not followed: a link is no image). Any
    // other file in the folder is left as it is: host setup never chmods what it did not install.
    const images = (entries ?? []).filter((e) => e.isFile() && BASE_IMAGE_NAME.test(e.name)).map((e) => path.join(baseDir, e.name));
    const writable = images.filter((f) => (fs.lstatSync(f).mode & 0o7777) !== 0o444);
    const foreign = session ? [] : images.filter((f) => fs.lstatSync(f).uid !== 0);
    if (foreign.length > 0) steps.push(run('base images owned by root', { tool: 'chown', args: ['root:root', '--', ...foreign], mutates: true }));
    if (writable.length > 0) steps.push(run('base images read-only (0444)', { tool: 'chmod', args: ['0444', '--', ...writable], mutates: true }));
    if (writable.length + foreign.length > 0) {
      item('todo', 'base images', `${[...new Set([...writable, ...foreign])].map((f) => path.basename(f)).join(', ')}: wants ${ownerName}, 0444`);
    } else if (entries) {
      item('ok', 'base images', images.length === 0 ? 'none installed yet' : `${images.length} image(s), all 0444`);
    }
  }

  // The per-VM folder.
  const vm = statOrUndefined(settings.vmDir);
  if (vm && !vm.isDirectory()) throw new RefusedError(`IVM_VM_DIR=${settings.vmDir} exists and is not a folder`);
  if (vm) item('ok', 'VM folder', `${settings.vmDir} exists`);
  else {
    item('todo', 'VM folder', `${settings.vmDir} is missing: make it (0711)`);
    steps.push(run(`make ${settings.vmDir}`, { tool: 'mkdir', args: ['-p', '-m', '0711', settings.vmDir], mutates: true }));
  }

  // QEMU (an unprivileged user in system mode) must pass through every folder above the images.
  if (!session) {
    const blocked = [...new Set([...unreachableAncestors(baseDir), ...unreachableAncestors(settings.vmDir)])].filter((d) => d !== baseDir);
    if (blocked.length > 0) {
      item('problem', 'folders QEMU must reach', `${blocked.join(', ')}: no search permission for others; ivm leaves them alone (sudo chmod o+x ${blocked.join(' ')}, or other folders)`);
    }
  }

  // AppArmor.
  const aa = appArmorState(host, canonical(baseDir));
  if (session) {
    item('skip', 'AppArmor', 'session mode: libvirt loads no per-VM AppArmor profile for qemu:///session; no rule needed');
  } else if (!aa.enabled) {
    item('skip', 'AppArmor', `${aa.enabledWhy}: no rule needed, nothing written`);
  } else if (aa.problem || !aa.target || aa.wanted === undefined) {
    item('problem', 'AppArmor', aa.problem ?? 'no place for the rule');
  } else if (aa.present) {
    item('ok', 'AppArmor', `the rule for ${baseDir} is in ${aa.target.file}`);
  } else {
    const file = aa.target.file;
    item('todo', 'AppArmor', `${aa.current === undefined ? 'write' : 'update'} ${file} (read access to ${baseDir}/**), then reload libvirt's profiles`);
    if (!fs.existsSync(path.dirname(file))) steps.push(run(`make ${path.dirname(file)}`, { tool: 'mkdir', args: ['-p', path.dirname(file)], mutates: true }));
    const restore: Command =
      aa.current === undefined
        ? { tool: 'rm', args: ['-f', '--', file], mutates: true }
        : { tool: 'tee', args: ['--', file], mutates: true, input: aa.current };
    steps.push(run(`the AppArmor rule (${aa.target.style})`, { tool: 'tee', args: ['--', file], mutates: true, input: aa.wanted }, restore));
    steps.push(run('make the rule readable', { tool: 'chmod', args: ['0644', file], mutates: true }));
    const profiles = libvirtProfiles(host);
    if (profiles.length > 0) {
      steps.push(run("reload libvirt's per-VM AppArmor profiles", { tool: 'apparmor_parser', args: ['-r', '-T', '--', ...profiles], mutates: true }));
    } else {
      item('ok', 'AppArmor reload', 'no per-VM profile is loaded now: every VM started from now on reads the rule');
    }
  }

  // Storage pools.
  if (session) {
    item('skip', 'storage pools', 'session mode: no system pools');
  } else {
    let pools: PoolInfo[] | undefined;
    try {
      pools = await listPools(runner);
    } catch (error) {
      if (!(error instanceof LibvirtUnreachableError)) throw error;
      items.push({ status: 'problem', what: 'storage pools', detail: `not checked: ${error.message}`, environment: true });
    }
    if (pools) {
      for (const [name, dir] of [[BASE_POOL, baseDir], [VM_POOL, settings.vmDir]] as const) {
        const pool = pools.find((p) => p.name === name);
        const samePath = (p: PoolInfo) => p.path !== undefined && canonical(p.path) === canonical(dir);
        if (pool && !samePath(pool)) {
          item('problem', `pool ${name}`, `exists with path ${pool.path ?? '(none)'}, not ${dir}: left alone (remove or rename it yourself)`);
          continue;
        }
        const other = pools.find((p) => p.name !== name && samePath(p));
        if (!pool && other) {
          item('ok', `pool ${name}`, `not defined: pool ${other.name} already serves ${dir} (libvirt allows one pool per folder)`);
          continue;
        }
        const todo: string[] = [];
        if (!pool) {
          todo.push('define');
          steps.push(run(`define pool ${name}`, virshCommand(runner, ['pool-define-as', name, 'dir', '--target', dir], true), virshCommand(runner, ['pool-undefine', name], true)));
        }
        if (!pool?.active) {
          todo.push('start');
          steps.push(run(`start pool ${name}`, virshCommand(runner, ['pool-start', name], true), virshCommand(runner, ['pool-destroy', name], true)));
        }
        if (!pool?.autostart) {
          todo.push('autostart');
          steps.push(run(`autostart pool ${name}`, virshCommand(runner, ['pool-autostart', name], true)));
        }
        if (todo.length > 0) item('todo', `pool ${name}`, `${todo.join(', ')} (${dir})`);
        else item('ok', `pool ${name}`, `${dir}, active, autostart`);
      }
    }
  }
  return { items, plan: { title: 'ivm host setup', steps } };
}

const LABEL: Record<ItemStatus, string> = { ok: 'ok', todo: 'todo', skip: 'skip', problem: 'PROBLEM' };

export async function hostSetup(ctx: HostContext, options: { apply: boolean }, host?: AppArmorHost): Promise<void> {
  const report = await planHostSetup(ctx, host);
  ctx.say(`mode: ${ctx.settings.mode} (${ctx.settings.libvirtUri})`);
  for (const { status, what, detail } of report.items) ctx.say(`${LABEL[status].padEnd(7)} ${what}: ${detail}`);
  const problems = report.items.filter((i) => i.status === 'problem');
  if (report.plan.steps.length === 0) {
    ctx.say('nothing to do: the host is set up');
  } else if (!options.apply) {
    ctx.say('');
    ctx.say('# the plan (run `ivm host setup --apply` to do it):');
    for (const line of describePlan(ctx.runner, report.plan)) ctx.say(line);
  } else {
    await executePlan(ctx.runner, report.plan, ctx.say);
    if (!ctx.runner.dryRun) ctx.say(`done: ${report.plan.steps.length} step(s)`);
  }
  if (problems.length > 0) {
    // Exit 4 when libvirt could not be asked (as every other command does), 3 otherwise.
    throw new IvmError(
      `host setup cannot fix ${problems.length} item(s) itself:\n${problems.map((p) => `  ${p.what}: ${p.detail}`).join('\n')}`,
      {
        exitCode: problems.some((p) => p.environment) ? ExitCode.environment : ExitCode.refused,
        hint: 'fix them as described, then run `ivm host setup` again (`ivm doctor` checks everything)',
      },
    );
  }
}

// One writer at a time. Every verb that changes a VM holds that VM's lock; build and gc hold the
// lock of the base-image folder. The locks are files in the project's .ivm/locks/, made whole under
// a temporary name and linked into place (link(2) fails when the lock exists: only one run can win),
// holding who took them (pid, the process's start time, verb, host). A second run waits a short,
// bounded time, then refuses (exit 3) naming the holder. A lock whose holder is gone (killed, crashed,
// its pid now another process's) is taken over, so a lock never blocks forever.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExitCode, IvmError } from '../errors.ts';
import type { Context } from './context.ts';
import { createFileExclusive, ensureFolder, kindOf, readRegularText, UnsafeFileError } from './safe-files.ts';

export interface LockHolder {
  pid: number;
  /** The holder's start time in clock ticks since boot (/proc/PID/stat field 22): tells a reused pid. */
  startTime: string | undefined;
  verb: string;
  host: string;
  since: string;
}

export class LockedError extends IvmError {
  constructor(what: string, holder: LockHolder | undefined, file: string, waited: number) {
    const who = holder ? `ivm ${holder.verb} (pid ${holder.pid}${holder.host !== os.hostname() ? ` on ${holder.host}` : ''}, since ${holder.since})` : 'another ivm run';
    super(`${what} is locked by ${who}; waited ${waited} s, nothing was changed`, {
      exitCode: ExitCode.refused,
      hint: `wait for it to finish and run the command again (lock: ${file}; it is taken over by itself once its holder is gone)`,
    });
  }
}

/** This process's start time, as the kernel counts it; undefined where /proc is not there. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) is in parentheses and may hold spaces: count fields after it.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return fields[19];
  } catch {
    return undefined;
  }
}

/** False only when the holder is certainly gone: no such pid, or the pid belongs to a newer process. */
export function holderAlive(holder: LockHolder): boolean {
  if (holder.host !== os.hostname()) return true; // another machine's process: cannot tell, so it holds
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ESRCH') return false;
  }
  const now = processStartTime(holder.pid);
  if (now !== undefined && holder.startTime !== undefined && now !== holder.startTime) return false;
  // A zombie is gone too: it holds nothing any more.
  try {
    const state = fs.readFileSync(`/proc/${holder.pid}/stat`, 'utf8');
    if (/\) Z /.test(state)) return false;
  } catch {
    /* no /proc: trust kill(0) */
  }
  return true;
}

function parseHolder(text: string): LockHolder | undefined {
  try {
    const value = JSON.parse(text) as Partial<LockHolder>;
    if (typeof value.pid !== 'number' || typeof value.verb !== 'string') return undefined;
    return {
      pid: value.pid,
      startTime: typeof value.startTime === 'string' ? value.startTime : undefined,
      verb: value.verb,
      host: typeof value.host === 'string' ? value.host : os.hostname(),
      since: typeof value.since === 'string' ? value.since : 'unknown',
    };
  } catch {
    return undefined;
  }
}

/** Locks this process holds, by file: a verb that calls another (recreate: destroy, create) takes each once. */
const held = new Map<string, number>();

export function lockFile(ctx: Context, key: string): string {
  return path.join(ctx.project.stateDir, 'locks', `${key}.lock`);
}


/** Takes the lock (waiting up to IVM_LOCK_WAIT seconds), runs `work`, releases it. */
export async function withLock<T>(ctx: Context, key: string, what: string, verb: string, work: () => Promise<T>): Promise<T> {
  // A dry run changes nothing, so it neither takes nor waits for a lock.
  if (ctx.runner.dryRun) return work();
  const file = lockFile(ctx, key);
  if (held.has(file)) {
    held.set(file, held.get(file)! + 1);
    try {
      return await work();
    } finally {
      held.set(file, held.get(file)! - 1);
    }
  }
  await acquire(file, what, verb, ctx.settings.lockWaitSeconds);
  held.set(file, 1);
  try {
    return await work();
  } finally {
    held.delete(file);
    release(file);
  }
}

/** The lock of one VM: every verb that changes it (create, upgrade, destroy, start, ...). */
export function withVmLock<T>(ctx: Context, name: string, verb: string, work: () => Promise<T>): Promise<T> {
  return withLock(ctx, `vm-${name}`, name, verb, work);
}

/** The lock of the base-image folder: build (install and record) and gc. */
export function withBaseLock<T>(ctx: Context, verb: string, work: () => Promise<T>): Promise<T> {
  return withLock(ctx, 'base-images', `the base-image folder ${ctx.settings.baseDir}`, verb, work);
}

const ownToken = () => JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) });

async function acquire(file: string, what: string, verb: string, wait: number): Promise<void> {
  ensureFolder(path.dirname(file), 0o700);
  const me: LockHolder = { pid: process.pid, startTime: processStartTime(process.pid), verb, host: os.hostname(), since: new Date().toISOString() };
  const content = `${JSON.stringify(me)}\n`;
  const deadline = Date.now() + wait * 1000;
  for (;;) {
    try {
      createFileExclusive(file, content, 0o644);
      return;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    }
    const kind = kindOf(file);
    if (kind !== 'file' && kind !== 'missing') throw new UnsafeFileError(file, kind === 'link' ? 'a symbolic link' : 'not a lock file');
    let holder: LockHolder | undefined;
    let inode: number | undefined;
    let text = '';
    try {
      inode = fs.lstatSync(file).ino;
      text = readRegularText(file);
      holder = parseHolder(text);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue; // released meanwhile
      throw error;
    }
    // A lock file is written whole before it gets its name, so one that does not parse was not
    // made by ivm's lock: it is never taken over, only reported.
    if (holder && !holderAlive(holder)) {
      // Taken over only if it is still the same file with the same holder (pid, start and time make
      // each lock's text its own: a third run's new lock may even reuse the inode number).
      try {
        if (fs.lstatSync(file).ino === inode && readRegularText(file) === text) fs.unlinkSync(file);
      } catch {
        /* gone already */
      }
      continue;
    }
    if (Date.now() >= deadline) throw new LockedError(what, holder, file, wait);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function release(file: string): void {
  try {
    const holder = parseHolder(readRegularText(file));
    if (holder && JSON.stringify({ pid: holder.pid, startTime: holder.startTime }) === ownToken()) fs.unlinkSync(file);
  } catch {
    /* already gone: nothing to release */
  }
}

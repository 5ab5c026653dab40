// ivm ssh and ivm wait: ssh with the VM's host key pinned from the known_hosts `ivm identity` wrote
// (machines/<name>/known_hosts: "<name> ssh-ed25519 ..."): HostKeyAlias=<name>, that file as the only
// known-hosts file, StrictHostKeyChecking=yes. Never "no", never "accept-new": a changed host key is
// an error.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, ExitCode, IvmError, RefusedError } from '../../errors.ts';
import type { Command } from '../../host/runner.ts';
import { findAddress, loadTarget } from './address.ts';
import type { HostContext } from '../host/host-context.ts';
import { requireProject } from '../host/host-context.ts';
import { KNOWN_HOSTS_FILE } from '../identity/identity-files.ts';
import { machineDir } from '../machine/machine.ts';
import { sleep } from '../vm/running.ts';
import { readRegularText, regularFileExists } from '../safe-files.ts';

export interface SshTarget {
  name: string;
  knownHosts: string;
  user: 'user' | 'admin';
  address: string;
  port?: number;
}

export class HostKeyError extends IvmError {
  constructor(name: string, address: string, knownHosts: string) {
    super(`the host key of ${address} is not the one pinned for ${name} in ${knownHosts}: refusing to connect`, {
      exitCode: ExitCode.refused,
      hint: `if ${name} really has a new identity, its machines/${name}/known_hosts must change with it; otherwise something else answers at ${address}`,
    });
  }
}

/** The pinned known_hosts of a machine; refuses when it is missing or pins no key for the name. */
export function pinnedKnownHosts(ctx: HostContext, name: string): string {
  const file = path.join(machineDir(requireProject(ctx), name), KNOWN_HOSTS_FILE);
  if (!regularFileExists(file)) throw new RefusedError(`${file} is missing: there is no pinned host key for ${name}`, `run: ivm identity ${name} (and recreate the VM with that identity)`);
  const pinned = readRegularText(file)
    .split('\n')
    .some((line) => line.trim().split(/\s+/)[0]?.split(',').includes(name));
  if (!pinned) throw new RefusedError(`${file} pins no host key under the name ${name}`, `it should hold one line "${name} ssh-ed25519 ...", as ivm identity writes it`);
  sshOptionPath(file); // refused now, before any wait for an address, if ssh cannot be given it
  return file;
}

/**
 * A path as the value of an `ssh -o` option. ssh splits the value at blanks unless it is in double
 * quotes (where a backslash escapes a backslash), and expands %-tokens in UserKnownHostsFile
 * (`%%` is a literal `%`). A double quote, a control character or `${` cannot be written at all
 * (ssh has no escape for them there, and expands `${VAR}`), so such a path is refused.
 */
export function sshOptionPath(file: string): string {
  if (/["\x00-\x1f\x7f]|\$\{/.test(file)) {
    throw new BadInputError(
      `ssh cannot be given the path ${JSON.stringify(file)}: it holds a double quote, a control character or "\${"`,
      'move the project to a folder whose path has none of them',
    );
  }
  return `"${file.replace(/\\/g, '\\\\').replace(/%/g, '%%')}"`;
}

/** The options that pin the host key: used for every ssh ivm runs. */
export function pinOptions(name: string, knownHosts: string): string[] {
  return [
    '-o', `HostKeyAlias=${name}`,
    '-o', `UserKnownHostsFile=${sshOptionPath(knownHosts)}`,
    '-o', 'GlobalKnownHostsFile=/dev/null',
    '-o', 'StrictHostKeyChecking=yes',
    '-o', 'UpdateHostKeys=no',
    '-o', 'CheckHostIP=no',
  ];
}

/** The ssh argv (without the program): pinned options, port, user, then `--`, the address and the command. */
export function sshArgs(target: SshTarget, command: string[] = [], extra: string[] = []): string[] {
  return [
    ...pinOptions(target.name, target.knownHosts),
    ...extra,
    ...(target.port ? ['-p', String(target.port)] : []),
    '-l', target.user,
    '--', target.address,
    ...command,
  ];
}

export interface SshOptions {
  admin: boolean;
  address?: string;
  port?: number;
  waitSeconds: number;
}

async function resolveTarget(ctx: HostContext, name: string, options: SshOptions): Promise<SshTarget> {
  const knownHosts = pinnedKnownHosts(ctx, name);
  let address = options.address;
  if (address === undefined) {
    const found = await findAddress(ctx, await loadTarget(ctx, name), options.waitSeconds);
    if (ctx.runner.verbose) process.stderr.write(`ivm: ${name} is at ${found.address}, from ${found.detail}\n`);
    address = found.address;
  }
  return { name, knownHosts, user: options.admin ? 'admin' : 'user', address, ...(options.port ? { port: options.port } : {}) };
}

/** ivm ssh: runs ssh on the terminal; the remote command's exit code becomes ivm's. */
export async function sshVm(ctx: HostContext, name: string, options: SshOptions, command: string[]): Promise<void> {
  const target = await resolveTarget(ctx, name, options);
  const ssh: Command = { tool: 'ssh', args: sshArgs(target, command), mutates: true, interactive: true };
  const result = await ctx.runner.run(ssh, { allowFailure: true });
  if (result.skipped || result.exitCode === 0) return;
  if (result.exitCode === 255) {
    throw new IvmError(`ssh to ${name} (${target.user}@${target.address}) failed (exit 255): see ssh's message above`, {
      hint: `"Host key verification failed" means the host key is not the one pinned in ${target.knownHosts}: ivm refuses on purpose. Otherwise: ivm wait ${name}`,
    });
  }
  throw new IvmError(`the command on ${name} exited with ${result.exitCode}`, { exitCode: result.exitCode });
}


/** How one ssh probe ended. */
export type ProbeResult = 'ok' | 'auth-refused' | 'key-mismatch' | 'unreachable';

export function classifyProbe(exitCode: number, stderr: string): ProbeResult {
  if (exitCode === 0) return 'ok';
  if (/Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No \S+ host key is known/i.test(stderr)) return 'key-mismatch';
  // ssh authenticates the host before the user: a refused login proves the pinned key answered.
  if (/Permission denied|Too many authentication failures/i.test(stderr)) return 'auth-refused';
  return 'unreachable';
}

/** ivm wait: until SSH answers with the pinned key (a login refused for lack of a user key counts), or the timeout. */
export async function waitVm(ctx: HostContext, name: string, options: Omit<SshOptions, 'admin' | 'waitSeconds'> & { admin: boolean; timeoutSeconds: number }): Promise<void> {
  const deadline = Date.now() + options.timeoutSeconds * 1000;
  const knownHosts = pinnedKnownHosts(ctx, name);
  const target = options.address === undefined ? await loadTarget(ctx, name) : undefined;
  let last = 'no address yet';
  for (;;) {
    let address = options.address;
    if (target) {
      try {
        address = (await findAddress(ctx, target, 0)).address;
      } catch (error) {
        if (error instanceof RefusedError && /not defined/.test(error.message)) throw error;
        last = (error as Error).message;
      }
    }
    if (address !== undefined) {
      const ssh: SshTarget = { name, knownHosts, user: options.admin ? 'admin' : 'user', address, ...(options.port ? { port: options.port } : {}) };
      const probe = sshArgs(ssh, ['true'], [
        '-o', 'BatchMode=yes',
        '-o', 'ConnectTimeout=5',
        '-o', 'ConnectionAttempts=1',
        '-o', 'PasswordAuthentication=no',
        '-o', 'KbdInteractiveAuthentication=no',
      ]);
      const r = await ctx.runner.run({ tool: 'ssh', args: probe, mutates: false }, { allowFailure: true });
      const outcome = classifyProbe(r.exitCode, r.stderr);
      if (outcome === 'key-mismatch') throw new HostKeyError(name, address, knownHosts);
      if (outcome === 'ok' || outcome === 'auth-refused') {
        ctx.say(`${name} answers on ${address}${options.port ? `:${options.port}` : ''} with its pinned host key`);
        if (outcome === 'auth-refused') {
          process.stderr.write(`ivm: note: the login as ${ssh.user} was refused: put your public key in machines/${name}/${ssh.user}_authorized_keys\n`);
        }
        return;
      }
      last = `ssh ${address}: ${r.stderr.trim().split('\n').pop() ?? `exit ${r.exitCode}`}`;
    }
    if (Date.now() >= deadline) {
      throw new IvmError(`${name} did not answer on SSH within ${options.timeoutSeconds} s (last: ${last})`, { hint: `is it running? ivm start ${name}; or wait longer: ivm wait --timeout 300 ${name}` });
    }
    await sleep(2000);
  }
}

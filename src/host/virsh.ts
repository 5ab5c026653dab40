// virsh: every call names the connection (-c LIBVIRT_URI). The runner turns a connection failure
// into LibvirtUnreachableError, whatever the verb.
import type { Command, Runner } from './runner.ts';

export function virshCommand(runner: Runner, args: string[], mutates: boolean, interactive = false): Command {
  return { tool: 'virsh', args: ['-c', runner.settings.libvirtUri, ...args], mutates, interactive };
}

/** Every domain and its state, from one `virsh list --all` call. */
export async function listDomains(runner: Runner): Promise<Map<string, string>> {
  const result = await runner.run(virshCommand(runner, ['list', '--all'], false));
  return parseDomainList(result.stdout);
}

// libvirt's states as virsh prints them in the C locale (the runner sees to that).
const STATES = /^\s*(\S+)\s+(.+?)\s+(running|idle|paused|in shutdown|shut off|crashed|pmsuspended|no state)\s*$/;

export function parseDomainList(text: string): Map<string, string> {
  const domains = new Map<string, string>();
  for (const line of text.split('\n').slice(2)) {
    // The state is read from the end of the line, so that a (foreign) domain named with blanks is one name.
    const match = STATES.exec(line) ?? /^\s*(\S+)\s+(\S+)\s+(\S.*?)\s*$/.exec(line);
    if (match) domains.set(match[2]!, match[3]!);
  }
  return domains;
}

/** The state of one domain, or undefined when there is none of that name. */
export async function domainState(runner: Runner, name: string): Promise<string | undefined> {
  return (await domainQuery(runner, ['domstate', name]))?.trim();
}

/** A read-only virsh query about one domain: its stdout, or undefined when there is no such domain. */
async function domainQuery(runner: Runner, args: string[]): Promise<string | undefined> {
  const command = virshCommand(runner, args, false);
  const result = await runner.run(command, { allowFailure: true });
  if (result.exitCode !== 0) {
    if (/failed to get domain|Domain not found/i.test(result.stderr)) return undefined;
    throw runner.failure(command, result.exitCode, result.stderr);
  }
  return result.stdout;
}

/** A domain's XML (`virsh dumpxml`, `--inactive` for the one it boots with next), or undefined when it is gone. */
export function domainXml(runner: Runner, name: string, inactive: boolean): Promise<string | undefined> {
  return domainQuery(runner, ['dumpxml', ...(inactive ? ['--inactive'] : []), '--domain', name]);
}

export interface DomainInfo {
  /** As `virsh domstate` prints it: running, shut off, paused, ... */
  state: string;
  uuid: string;
  /** A saved memory image (virsh managedsave, libvirt-guests' suspend) that `start` resumes. */
  managedSave: boolean;
  /** libvirt starts it when libvirtd starts (the host boots): `virsh autostart`. */
  autostart: boolean;
}

/** State, uuid and managed-save image of one domain, from one `virsh dominfo`; undefined when there is none. */
export async function domainInfo(runner: Runner, name: string): Promise<DomainInfo | undefined> {
  const text = await domainQuery(runner, ['dominfo', name]);
  return text === undefined ? undefined : parseDomainInfo(text);
}

export function parseDomainInfo(text: string): DomainInfo {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const match = /^([^:]+):\s*(.*?)\s*$/.exec(line);
    if (match) fields.set(match[1]!.trim().toLowerCase(), match[2]!);
  }
  return {
    state: fields.get('state') ?? 'unknown',
    uuid: fields.get('uuid') ?? '',
    managedSave: fields.get('managed save') === 'yes',
    autostart: fields.get('autostart') === 'enable',
  };
}

/** The names of the domains libvirt autostarts, from one `virsh list --all --autostart --name` call. */
export async function listAutostart(runner: Runner): Promise<Set<string>> {
  const result = await runner.run(virshCommand(runner, ['list', '--all', '--autostart', '--name'], false));
  return new Set(result.stdout.split('\n').map((line) => line.trim()).filter((line) => line !== ''));
}

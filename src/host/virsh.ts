// virsh: every call names the connection (-c LIBVIRT_URI). A connection failure becomes
// LibvirtUnreachableError, whatever the verb.
import { CommandFailedError, LibvirtUnreachableError } from '../errors.ts';
import type { Command, Result, Runner } from './runner.ts';

export function virshCommand(runner: Runner, args: string[], mutates: boolean, interactive = false): Command {
  return { tool: 'virsh', args: ['-c', runner.settings.libvirtUri, ...args], mutates, interactive };
}

const UNREACHABLE = /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|authentication failed/i;

export async function runVirsh(runner: Runner, command: Command, options: { allowFailure?: boolean } = {}): Promise<Result> {
  try {
    const result = await runner.run(command, options);
    if (result.exitCode !== 0 && UNREACHABLE.test(result.stderr)) {
      throw new LibvirtUnreachableError(runner.settings.libvirtUri, lastErrorLine(result.stderr));
    }
    return result;
  } catch (error) {
    if (error instanceof CommandFailedError && UNREACHABLE.test(error.stderrTail)) {
      throw new LibvirtUnreachableError(runner.settings.libvirtUri, lastErrorLine(error.stderrTail));
    }
    throw error;
  }
}

function lastErrorLine(stderr: string): string {
  const lines = stderr.trim().split('\n').map((l) => l.replace(/^error:\s*/, '').trim()).filter(Boolean);
  return lines[lines.length - 1] ?? 'no answer';
}

/** Every domain and its state, from one `virsh list --all` call. */
export async function listDomains(runner: Runner): Promise<Map<string, string>> {
  const result = await runVirsh(runner, virshCommand(runner, ['list', '--all'], false));
  return parseDomainList(result.stdout);
}

export function parseDomainList(text: string): Map<string, string> {
  const domains = new Map<string, string>();
  for (const line of text.split('\n').slice(2)) {
    const match = /^\s*(\S+)\s+(\S+)\s+(\S.*?)\s*$/.exec(line);
    if (match) domains.set(match[2]!, match[3]!);
  }
  return domains;
}

/** The state of one domain, or undefined when there is none of that name. */
export async function domainState(runner: Runner, name: string): Promise<string | undefined> {
  const result = await runVirsh(runner, virshCommand(runner, ['domstate', name], false), { allowFailure: true });
  if (result.exitCode !== 0) {
    if (/failed to get domain|Domain not found/i.test(result.stderr)) return undefined;
    throw new CommandFailedError(`virsh domstate ${name}`, result.exitCode, result.stderr.trim());
  }
  return result.stdout.trim();
}

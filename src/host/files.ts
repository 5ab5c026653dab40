// File operations on the host that go through the runner (they may need HOST_CMD or SUDO).
import type { Runner } from './runner.ts';

/** The canonical path of a file (readlink -f); read-only, so it runs under --dry-run too. */
export async function readlink(runner: Runner, file: string): Promise<string> {
  const result = await runner.run({ tool: 'readlink', args: ['-f', '--', file], mutates: false });
  return result.stdout.trim() || file;
}

export function removeCommand(...files: string[]) {
  return { tool: 'rm' as const, args: ['-f', '--', ...files], mutates: true };
}

// The files of a VM in IVM_VM_DIR (and the base images in IVM_BASE_DIR), as the host sees them.
// ivm decides from these what to make, move or remove, so each is looked at without following a
// link, and a link or an odd file where a disk belongs is refused (exit 2), never used: the tools
// that act on them run as root. With HOST_CMD the tools run in another filesystem view (distrobox),
// so the question goes through the runner to the host (stat), not to ivm's own view.
import fs from 'node:fs';
import type { Runner } from '../../host/runner.ts';
import { kindOf, UnsafeFileError, type FileKind } from '../safe-files.ts';

export interface HostFile {
  kind: FileKind;
  /** device:inode, to tell two names of one file apart from two files. */
  id: string | undefined;
}

/** The file type bits of a raw mode (stat's %f, hex: the same in every language). */
function kindOfMode(mode: number): FileKind {
  const type = mode & 0o170000;
  return type === 0o100000 ? 'file' : type === 0o040000 ? 'folder' : type === 0o120000 ? 'link' : 'other';
}

/** What is at `file` on the host, without following a link there. Read-only: runs under --dry-run too. */
export async function hostFile(runner: Runner, file: string): Promise<HostFile> {
  if (runner.settings.hostCmd.length === 0) {
    const kind = kindOf(file);
    if (kind === 'missing') return { kind, id: undefined };
    const st = fs.lstatSync(file);
    return { kind, id: `${st.dev}:${st.ino}` };
  }
  const command = { tool: 'stat' as const, args: ['-c', '%f|%d:%i', '--', file], mutates: false };
  const result = await runner.run(command, { allowFailure: true });
  if (result.exitCode !== 0) {
    // stat's message is in the host's language: whether the file is there is asked of test(1),
    // whose exit status says it in every language (1: neither a file nor a link).
    const there = await runner.run({ tool: 'test', args: ['-e', file, '-o', '-L', file], mutates: false }, { allowFailure: true });
    if (there.exitCode === 1) return { kind: 'missing', id: undefined };
    throw runner.failure(command, result.exitCode, result.stderr);
  }
  const [mode = '', id] = result.stdout.trim().split('|');
  return { kind: kindOfMode(Number.parseInt(mode, 16)), id };
}

/** True when a regular file is at `file` on the host, false when nothing is; a link or anything else is refused. */
export async function hostFileExists(runner: Runner, file: string): Promise<boolean> {
  const { kind } = await hostFile(runner, file);
  if (kind === 'missing') return false;
  if (kind === 'file') return true;
  throw new UnsafeFileError(file, kind === 'link' ? 'a symbolic link' : kind === 'folder' ? 'a folder' : 'a special file');
}

/** The files of `files` that exist on the host (each a regular file, or refused). */
export async function existingHostFiles(runner: Runner, files: string[]): Promise<string[]> {
  const found: string[] = [];
  for (const file of files) if (await hostFileExists(runner, file)) found.push(file);
  return found;
}

/** True when both names are one file (hard links), as the host sees them. */
export async function sameHostFile(runner: Runner, a: string, b: string): Promise<boolean> {
  const [x, y] = [await hostFile(runner, a), await hostFile(runner, b)];
  return x.id !== undefined && x.id === y.id;
}

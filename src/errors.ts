// Typed errors. Every failure a user can cause or meet is one of these; src/cli.ts catches them
// once, prints the message (and hint) and exits with the error's code. Anything else is a bug.

/** Exit codes, documented in README.md. */
export const ExitCode = {
  failure: 1, // a command ivm ran failed
  badInput: 2, // bad name, unknown machine, malformed meta.nix, bad option
  refused: 3, // the operation would overwrite or lose something, or the VM is in the wrong state
  environment: 4, // a tool is missing or libvirt is unreachable
} as const;

export class IvmError extends Error {
  readonly exitCode: number;
  readonly hint: string | undefined;
  constructor(message: string, options: { exitCode?: number; hint?: string } = {}) {
    super(message);
    this.name = new.target.name;
    this.exitCode = options.exitCode ?? ExitCode.failure;
    this.hint = options.hint;
  }
}

export class BadInputError extends IvmError {
  constructor(message: string, hint?: string) {
    super(message, { exitCode: ExitCode.badInput, hint });
  }
}

export class RefusedError extends IvmError {
  constructor(message: string, hint?: string) {
    super(message, { exitCode: ExitCode.refused, hint });
  }
}

/** An external program exited non-zero. */
export class CommandFailedError extends IvmError {
  constructor(
    readonly commandLine: string,
    readonly code: number | undefined,
    readonly stderrTail: string,
    hint?: string,
  ) {
    const tail = stderrTail ? `\n${indent(stderrTail)}` : '';
    super(`command failed (exit ${code ?? 'signal'}): ${commandLine}${tail}`, { exitCode: ExitCode.failure, hint });
  }
}

/** An external program is not installed (or not on PATH). */
export class ToolMissingError extends IvmError {
  constructor(
    readonly program: string,
    packages: { debian: string; fedora: string; arch: string } | undefined,
  ) {
    const where = packages
      ? `install it: Debian/Ubuntu: apt install ${packages.debian}; Fedora: dnf install ${packages.fedora}; Arch: pacman -S ${packages.arch}`
      : 'install it or fix PATH';
    super(`${program}: command not found`, { exitCode: ExitCode.environment, hint: where });
  }
}

export class LibvirtUnreachableError extends IvmError {
  constructor(uri: string, detail: string) {
    super(`libvirt is unreachable at ${uri}: ${detail}`, {
      exitCode: ExitCode.environment,
      hint: 'start libvirtd (systemctl start libvirtd), check LIBVIRT_URI, and that you may use it (group libvirt, or SUDO)',
    });
  }
}

/** libvirtd answers but cannot start a VM: virtlogd, which takes the VM's console log, is not running. */
export class VirtlogdMissingError extends IvmError {
  constructor(uri: string, detail: string) {
    super(`libvirt at ${uri} cannot start the VM: virtlogd is not running (${detail})`, {
      exitCode: ExitCode.environment,
      hint: 'start it: systemctl start virtlogd.socket (a host without systemd: virtlogd -d)',
    });
  }
}

/**
 * A file ivm reads or writes itself (identity files, XML, build records) that this user may not
 * touch, or a file where a folder belongs: the host's state, said plainly, never a stack trace.
 */
export function fileSystemError(error: unknown): IvmError | undefined {
  const { code, path: file, syscall } = (error ?? {}) as NodeJS.ErrnoException;
  if (typeof file !== 'string' || typeof code !== 'string') return undefined;
  const what = `${syscall ?? 'use'} ${file}`;
  if (code === 'EACCES' || code === 'EPERM') {
    return new IvmError(`permission denied: cannot ${what}`, {
      exitCode: ExitCode.environment,
      hint: 'it belongs to another user (made by a run as root?): run ivm as that user, or give it back: sudo chown -R "$USER" on it',
    });
  }
  if (code === 'EROFS') return new IvmError(`cannot ${what}: the filesystem is read-only`, { exitCode: ExitCode.environment });
  if (code === 'ENOSPC' || code === 'EDQUOT') return new IvmError(`cannot ${what}: no space left on its filesystem`, { exitCode: ExitCode.environment, hint: 'free some space there and run the command again' });
  if (code === 'ENOTDIR' || code === 'EISDIR') {
    return new IvmError(`cannot ${what}: ${code === 'ENOTDIR' ? 'a file stands where a folder belongs' : 'a folder stands where a file belongs'}`, {
      exitCode: ExitCode.badInput,
    });
  }
  return undefined;
}

export function indent(text: string, prefix = '  '): string {
  return text
    .split('\n')
    .map((line) => prefix + line)
    .join('\n');
}

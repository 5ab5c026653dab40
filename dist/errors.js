// Typed errors. Every failure a user can cause or meet is one of these; src/cli.ts catches them
// once, prints the message (and hint) and exits with the error's code. Anything else is a bug.
/** Exit codes, documented in README.md. */
export const ExitCode = {
    failure: 1, // a command ivm ran failed
    badInput: 2, // bad name, unknown machine, malformed meta.nix, bad option
    refused: 3, // the operation would overwrite or lose something, or the VM is in the wrong state
    environment: 4, // a tool is missing or libvirt is unreachable
};
export class IvmError extends Error {
    exitCode;
    hint;
    constructor(message, options = {}) {
        super(message);
        this.name = new.target.name;
        this.exitCode = options.exitCode ?? ExitCode.failure;
        this.hint = options.hint;
    }
}
export class BadInputError extends IvmError {
    constructor(message, hint) {
        super(message, { exitCode: ExitCode.badInput, hint });
    }
}
export class RefusedError extends IvmError {
    constructor(message, hint) {
        super(message, { exitCode: ExitCode.refused, hint });
    }
}
/** An external program exited non-zero. */
export class CommandFailedError extends IvmError {
    commandLine;
    code;
    stderrTail;
    constructor(commandLine, code, stderrTail, hint) {
        const tail = stderrTail ? `\n${indent(stderrTail)}` : '';
        super(`command failed (exit ${code ?? 'signal'}): ${commandLine}${tail}`, { exitCode: ExitCode.failure, hint });
        this.commandLine = commandLine;
        this.code = code;
        this.stderrTail = stderrTail;
    }
}
/** An external program is not installed (or not on PATH). */
export class ToolMissingError extends IvmError {
    program;
    constructor(program, packages) {
        const where = packages
            ? `install it: Debian/Ubuntu: apt install ${packages.debian}; Fedora: dnf install ${packages.fedora}; Arch: pacman -S ${packages.arch}`
            : 'install it or fix PATH';
        super(`${program}: command not found`, { exitCode: ExitCode.environment, hint: where });
        this.program = program;
    }
}
export class LibvirtUnreachableError extends IvmError {
    constructor(uri, detail) {
        super(`libvirt is unreachable at ${uri}: ${detail}`, {
            exitCode: ExitCode.environment,
            hint: 'start libvirtd (systemctl start libvirtd), check LIBVIRT_URI, and that you may use it (group libvirt, or SUDO)',
        });
    }
}
/** libvirtd answers but cannot start a VM: virtlogd, which takes the VM's console log, is not running. */
export class VirtlogdMissingError extends IvmError {
    constructor(uri, detail) {
        super(`libvirt at ${uri} cannot start the VM: virtlogd is not running (${detail})`, {
            exitCode: ExitCode.environment,
            hint: 'start it: systemctl start virtlogd.socket (a host without systemd: virtlogd -d)',
        });
    }
}
export function indent(text, prefix = '  ') {
    return text
        .split('\n')
        .map((line) => prefix + line)
        .join('\n');
}

// The ivm command line: global options, one command per file in src/commands/, and the one place
// where errors become a message and an exit code.
import { Command, CommanderError } from 'commander';
import { ExitCode, IvmError, fileSystemError } from './errors.ts';
import { registerBuild } from './commands/build.ts';
import { registerCreate } from './commands/create.ts';
import { registerIdentity } from './commands/identity.ts';
import { registerLifecycle } from './commands/lifecycle.ts';
import { registerList } from './commands/list.ts';
import { registerXml } from './commands/xml.ts';
import { registerUpgrade } from './commands/upgrade.ts';
import { registerGc } from './commands/gc.ts';
import { registerStatus } from './commands/status.ts';
import { registerHost } from './commands/host.ts';
import { registerDoctor } from './commands/doctor.ts';
import { registerNet } from './commands/net.ts';
import { registerAddress } from './commands/address.ts';
import { registerCompletion } from './commands/completion.ts';
import { registerNew } from './commands/new.ts';
import { registerProfiles } from './commands/profiles.ts';
import { registerGrow } from './commands/grow.ts';
import { registerSnapshot } from './commands/snapshot.ts';
import { registerPlan } from './commands/plan.ts';
import { registerExport } from './commands/export.ts';
import { registerBackup } from './commands/backup.ts';
import { registerClone } from './commands/clone.ts';
import packageJson from '../package.json' with { type: 'json' };
import type { Context } from './core/context.ts';
import { findProject } from './core/machine/project.ts';
import { loadRunnerOf, runnerOf } from './commands/lazy-runner.ts';


/** Builds the context of a command from the global options (read lazily, after parsing). */
export type ContextFactory = () => Context;

const ENVIRONMENT_HELP = `
Environment (README.md, "Environment"):
  HOST_CMD            prefix of every default tool command (e.g. host-spawn in distrobox)
  SUDO                prefix of the commands that need root (default: sudo unless root; "" disables;
                      ignored in session mode)
  NIX VIRSH QEMU_IMG GUESTFISH CP READLINK SSH APPARMOR_PARSER
                      a tool's whole command, used as given (e.g. VIRSH="sudo virsh")
  LIBGUESTFS_BACKEND  guestfish backend (default: direct); every LIBGUESTFS_* and SUPERMIN_* reaches guestfish
  LIBVIRT_URI         libvirt connection (default: qemu:///system; qemu:///session: session mode, no root)
  OVMF_CODE OVMF_VARS UEFI firmware files (default: libvirt picks firmware without Secure Boot)
  IVM_BASE_DIR        shared read-only base images (default: /var/lib/libvirt/base-images;
                      session mode: ~/ivm/base-images)
  IVM_VM_DIR          per-VM disks (default: /var/lib/libvirt/images; session mode: ~/ivm/images)
  IVM_ROOT            the project folder (default: found upward from the working directory)
  IVM_LOCK_WAIT       seconds to wait for a lock another run holds before refusing (default: 10)

Exit codes: 0 ok, 1 a command failed, 2 bad input (also a link or odd file where ivm reads or
writes), 3 refused (would lose or overwrite something, wrong VM state, not this project's domain,
locked by another run), 4 environment (missing tool, libvirt unreachable, virtlogd down, permission denied);
ivm plan also: 10 changes pending (ivm plan --help).`;

export function buildProgram(): Command {
  const program = new Command('ivm')
    .description('Immutable NixOS virtual machines on libvirt: one read-only base image, per-VM identity and /var.')
    .option('-n, --dry-run', 'print the commands that would change anything, run none of them (queries still run)')
    .option('-v, --verbose', 'echo every command to stderr')
    .option('-q, --quiet', 'show no progress (the steps on stderr, and nix build\'s log); errors still print')
    .version(packageJson.version, '-V, --version', 'print the version of ivm')
    .showHelpAfterError('(ivm --help lists the commands; ivm COMMAND --help tells one)')
    .exitOverride()
    .hook('preAction', loadRunnerOf)
    .addHelpText('after', ENVIRONMENT_HELP);
  const makeContext: ContextFactory = () => {
    const runner = runnerOf(program);
    return { project: findProject(), settings: runner.settings, runner, say: (line) => process.stdout.write(`${line}\n`) };
  };
  for (const register of [registerNew, registerProfiles, registerIdentity, registerBuild, registerCreate, registerXml, registerLifecycle, registerList, registerUpgrade, registerGrow, registerSnapshot, registerPlan, registerExport, registerBackup, registerClone, registerStatus, registerGc, registerHost, registerDoctor, registerNet, registerAddress, registerCompletion]) {
    register(program, makeContext);
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) {
      // help and version exit 0; a usage mistake is bad input (commander printed it already).
      return error.exitCode === 0 ? 0 : ExitCode.badInput;
    }
    if (error instanceof IvmError) {
      process.stderr.write(`ivm: ${error.message}\n`);
      if (error.hint) process.stderr.write(`hint: ${error.hint}\n`);
      return error.exitCode;
    }
    const denied = fileSystemError(error);
    if (denied) {
      process.stderr.write(`ivm: ${denied.message}\n`);
      if (denied.hint) process.stderr.write(`hint: ${denied.hint}\n`);
      return denied.exitCode;
    }
    process.stderr.write(`ivm: internal error (please report it):\n${(error as Error).stack ?? String(error)}\n`);
    return 70;
  }
}

// A reader that goes away (`ivm doctor | head`) ends ivm's output, quietly, not ivm with a stack trace.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code !== 'EPIPE') throw error;
  process.exit(process.exitCode ?? 0);
});

process.exitCode = await main(process.argv);

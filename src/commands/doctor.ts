import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { IvmError, ExitCode } from '../errors.ts';
import { hostContextOf } from './host-context.ts';

export function registerDoctor(program: Command, _context: ContextFactory): void {
  const context = hostContextOf(program);
  program
    .command('doctor')
    .description(
      'check the host: the mode, tools and versions, a kernel for guestfish, /dev/kvm, libvirt at LIBVIRT_URI, UEFI firmware, ' +
        'the base-image folder, folders QEMU must pass through, AppArmor and its rule, every VM\'s backing file, no image in a ' +
        "hidden home folder, machines' networks, domains' disk types; each failure names the command that fixes it. " +
        'Only queries. Exit 0 only when everything needed is there (4 otherwise).',
    )
    .option('--json', 'print the report as JSON: {"ok", "mode", "libvirtUri", "checks": [{"id", "title", "status", "found", "fix"}]}')
    .action(async (options: { json?: boolean }) => {
      const { formatDoctor, runDoctor } = await import('../core/host/doctor.ts');
      const report = await runDoctor(context());
      if (options.json) process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
      else for (const line of formatDoctor(report)) process.stdout.write(`${line}\n`);
      if (!report.ok) throw new DoctorFailedError(report.checks.filter((c) => c.status === 'fail').map((c) => c.id));
    });
}

class DoctorFailedError extends IvmError {
  constructor(ids: string[]) {
    super(`doctor: ${ids.length} check(s) failed: ${ids.join(', ')}`, { exitCode: ExitCode.environment });
  }
}

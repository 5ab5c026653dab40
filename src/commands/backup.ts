// `ivm backup create | list | restore`: the options and the printing; the work is in
// src/core/disks/backup.ts.
import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { seconds } from './lifecycle.ts';

const core = () => import('../core/disks/backup.ts');

export function registerBackup(program: Command, context: ContextFactory): void {
  const backup = program
    .command('backup')
    .description("backups of a VM's /var disk, one self-contained file each (0600: it holds the host key): create, list, restore");
  backup
    .command('create')
    .argument('<name>', 'machine name')
    .description('back up the stopped VM\'s /var disk into one file, NAME-<UTC time>.ivm-backup (a tar of manifest.json, the disk compressed, SHA256SUMS); prints the file, its size and its checksum')
    .option('--to <dir>', 'the folder to write it into (default: IVM_VM_DIR/backups/NAME; made if missing)')
    .option('--stop', 'if the VM runs: shut it down gracefully, back it up, start it again (after a failure it stays off)')
    .option('-t, --timeout <seconds>', 'how long --stop waits for the shutdown', seconds, 120)
    .action(async (name: string, options: { to?: string; stop?: boolean; timeout: number }) => {
      await (await core()).createBackup(context(), name, { to: options.to, stop: Boolean(options.stop), timeoutSeconds: options.timeout });
    });
  backup
    .command('list')
    .argument('<name>', 'machine name')
    .description("NAME's backups in the folder, oldest first, each checked byte for byte (sha256): time, size, base, whether it is intact")
    .option('--in <dir>', 'the folder to look in (default: IVM_VM_DIR/backups/NAME)')
    .option('--json', 'print JSON: [{"file", "bytes", "ok", "problem", "machine", "machineId", "createdAt", "base", "varVirtualSize", "imageSha256", "compression", "ivmVersion"}]')
    .action(async (name: string, options: { in?: string; json?: boolean }) => {
      const ctx = context();
      const { dir, entries } = await (await core()).listBackups(ctx, name, { in: options.in });
      if (options.json) return void process.stdout.write(`${JSON.stringify(entries, null, 2)}\n`);
      if (entries.length === 0) return ctx.say(`no backups of ${name} in ${dir}`);
      const { basename } = await import('node:path');
      ctx.say(`backups of ${name} in ${dir}:`);
      const rows = [['FILE', 'TIME', 'BYTES', 'BASE', 'SHA256']];
      for (const e of entries) {
        rows.push([basename(e.file), e.createdAt ?? '-', String(e.bytes), e.base ? basename(e.base) : e.ok ? 'none' : '-', e.ok ? 'ok' : `BAD: ${e.problem ?? 'not intact'}`]);
      }
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const row of rows) ctx.say(row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  '));
    });
  backup
    .command('restore')
    .argument('<name>', 'machine name (the machine the backup is of)')
    .argument('<file>', "the backup file (a bare file name is also looked for in NAME's backup folder)")
    .description(
      'check every byte of the backup, then put its /var onto the stopped (or undefined) VM NAME, keeping the disk it replaces as NAME-var.qcow2.before-restore-<time>; ' +
        'resync /var/identity, boot overlay and domain. The backup must be of NAME (its machine-id); --as NEW makes a new machine of it instead',
    )
    .option('--as <new>', 'restore into a new machine NEW instead: machines/NEW from the backup\'s files, with its own machine-id, hostname and host key')
    .option('--no-build', 'with no boot overlay: use the base last built by `ivm build` instead of building (--as: refuse unless the backup\'s base is installed)')
    .action(async (name: string, file: string, options: { as?: string; build: boolean }) => {
      await (await core()).restoreBackup(context(), name, file, { as: options.as, build: options.build });
    });
}

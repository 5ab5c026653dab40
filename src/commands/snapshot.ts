import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { seconds } from './lifecycle.ts';

import { humanSize } from '../core/human-size.ts';

/** The implementation, loaded when a command runs. */
const core = () => import('../core/disks/snapshot.ts');

const size = (bytes: number | null): string => (bytes === null ? '?' : humanSize(bytes));

export function registerSnapshot(program: Command, context: ContextFactory): void {
  const snapshot = program
    .command('snapshot')
    .description("internal qcow2 snapshots of a VM's /var disk: create, list, restore, delete (made and restored only while the VM is shut off)");
  snapshot
    .command('create')
    .argument('<name>', 'machine name')
    .argument('[snapshot]', 'snapshot name: letters, digits, . _ - (default: snap-YYYYMMDD-HHMMSS, UTC)')
    .description("snapshot the /var disk of a stopped VM (qemu-img snapshot -c); refuses a running VM unless --stop, and a name that is taken")
    .option('--note <text>', 'a one-line note, shown by snapshot list')
    .option('--stop', 'if the VM runs: shut it down gracefully, snapshot, start it again')
    .option('-t, --timeout <seconds>', 'how long --stop waits for the shutdown', seconds, 120)
    .action(async (name: string, snap: string | undefined, options: { note?: string; stop?: boolean; timeout: number }) =>
      (await core()).snapshotCreate(context(), name, { snapshot: snap, note: options.note, stop: Boolean(options.stop), timeoutSeconds: options.timeout }),
    );
  snapshot
    .command('list')
    .argument('<name>', 'machine name')
    .description("the snapshots on the VM's /var disk (as qemu-img lists them), with time, data size and note; read-only, also while it runs")
    .option('--json', 'print JSON: {"machine", "disk", "state", "diskAllocatedBytes", "snapshots": [{"name", "id", "created", "dataBytes", "note"}]}')
    .action(async (name: string, options: { json?: boolean }) => {
      const ctx = context();
      const { snapshotList, shownText } = await core();
      const list = await snapshotList(ctx, name);
      if (options.json) return void process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
      if (list.snapshots.length === 0) return ctx.say(`${name}'s /var disk has no snapshots (${list.disk})`);
      const rows = [['NAME', 'CREATED (UTC)', 'DATA', 'NOTE']];
      // qemu-img keeps any bytes in a name (a snapshot made by hand): a control character is shown escaped.
      for (const s of list.snapshots) rows.push([shownText(s.name), s.created.replace('T', ' ').replace('Z', ''), size(s.dataBytes), s.note ?? '']);
      const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
      for (const row of rows) ctx.say(row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd());
      ctx.say(`DATA: what a standalone copy of the snapshot would take (snapshots share unchanged data, so these do not add up)`);
      ctx.say(`the /var disk file, live state and every snapshot: ${size(list.diskAllocatedBytes)} allocated on the host (${list.disk})`);
    });
  snapshot
    .command('restore')
    .argument('<name>', 'machine name')
    .argument('<snapshot>', 'snapshot name (see snapshot list)')
    .description("put the /var disk back to a snapshot: keeps the current state first as snapshot before-restore-<UTC time>, then qemu-img snapshot -a, then resyncs /var/identity with machines/NAME and redefines the VM, as upgrade does")
    .option('--stop', 'if the VM runs: shut it down gracefully, restore, start it again')
    .option('-t, --timeout <seconds>', 'how long --stop waits for the shutdown', seconds, 120)
    .action(async (name: string, snap: string, options: { stop?: boolean; timeout: number }) =>
      (await import('../core/disks/snapshot-restore.ts')).snapshotRestore(context(), name, snap, { stop: Boolean(options.stop), timeoutSeconds: options.timeout }),
    );
  snapshot
    .command('delete')
    .argument('<name>', 'machine name')
    .argument('<snapshot>', 'snapshot name')
    .description('delete one snapshot of a stopped VM (qemu-img snapshot -d) and its note')
    .action(async (name: string, snap: string) => (await core()).snapshotDelete(context(), name, snap));
}

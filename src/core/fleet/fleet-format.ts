// The plan and apply's summary as lines (one per machine) and as data (`ivm plan --json`). The JSON
// is the interface scripts and CI read: its fields are documented in README.md ("The whole fleet")
// and only ever added to (`version` says which set a reader gets).
import type { Outcome } from './apply.ts';
import { orphanBlocked, orphanHasParts, type Orphan } from './fleet-orphans.ts';
import { hasChanges, planExitCode, type Action, type FleetPlan, type MachinePlan } from './fleet-plan.ts';

const listActions = (actions: Action[]) => actions.map((action) => `${action.action} (${action.why})`).join(', ');

/** One line for a machine (a second with the hint when it could not be planned). */
export function machineLine(entry: MachinePlan, restartFlag: boolean): string[] {
  if (entry.error) return [`${entry.name}: error: ${entry.error.message}`, ...(entry.error.hint ? [`  hint: ${entry.error.hint}`] : [])];
  const parts: string[] = [];
  if (entry.actions.length > 0) parts.push(listActions(entry.actions));
  if (entry.waiting.length > 0) {
    parts.push(`needs restart: ${listActions(entry.waiting)}; ${entry.name} is ${entry.state}, so it is left running${restartFlag ? '' : ' (--restart shuts it down gracefully, changes it and starts it again)'}`);
  }
  if (parts.length === 0) parts.push('nothing to do');
  const notes = entry.notes.length > 0 ? ` [${entry.notes.join('; ')}]` : '';
  return [`${entry.name}: ${parts.join('; ')}${notes}`];
}

function orphanLine(orphan: Orphan, uri: string): string {
  const what = orphan.state === 'undefined' ? 'no domain' : `domain ${orphan.state}`;
  const kept = orphan.varDisk ? `, its /var disk ${orphan.varDisk} (always kept)` : '';
  const head = `orphan ${orphan.name}: machines/${orphan.name} is gone; ${what}${kept}`;
  if (!orphan.remove) {
    return orphanHasParts(orphan) ? `${head}; left alone (--remove-orphan ${orphan.name} undefines it and removes its boot overlays)` : `${head}; nothing of it for ivm to remove`;
  }
  const blocked = orphanBlocked(orphan, uri);
  if (blocked) return `${head}; error: ${blocked.message} (${blocked.hint})`;
  return orphanHasParts(orphan) ? `${head}; remove (undefine it with its NVRAM, remove ${orphan.files.length ? orphan.files.join(', ') : 'no files'})` : `${head}; nothing of it for ivm to remove`;
}

/** The plan as `ivm plan` prints it: how it knows, one line per machine, the orphans, a count. */
export function formatPlan(plan: FleetPlan, uri: string): string[] {
  const { options } = plan;
  const lines: string[] = [];
  lines.push(
    options.build
      ? `# latest builds: nix build of each machine now (${plan.builds.length} distinct base${plan.builds.length === 1 ? '' : 's'}; installed only by apply)`
      : '# latest builds: the last build of each machine (--no-build: .ivm/NAME.json, no nix build now)',
  );
  lines.push(
    options.deep
      ? "# identity: read from each stopped VM's /var disk where nothing else calls for an upgrade (--deep); otherwise the record of its last sync"
      : '# identity: against the record of its last sync by create or upgrade (.ivm/synced/NAME.json); --deep reads the /var disks',
  );
  for (const entry of plan.machines) lines.push(...machineLine(entry, options.restart));
  for (const orphan of plan.orphans) lines.push(orphanLine(orphan, uri));
  lines.push(countLine(plan));
  return lines;
}

function countLine(plan: FleetPlan): string {
  const count = (test: (entry: MachinePlan) => boolean) => plan.machines.filter(test).length;
  const parts = [
    `${count((e) => !e.error && e.actions.length > 0)} to change`,
    `${count((e) => !e.error && e.waiting.length > 0)} needs restart`,
    `${count((e) => !e.error && e.actions.length === 0 && e.waiting.length === 0)} up to date`,
    `${count((e) => e.error !== undefined)} error${count((e) => e.error !== undefined) === 1 ? '' : 's'}`,
  ];
  if (plan.orphans.length > 0) parts.push(`${plan.orphans.length} orphan${plan.orphans.length === 1 ? '' : 's'} (${plan.orphans.filter((o) => o.remove).length} to remove)`);
  return `plan: ${parts.join(', ')}`;
}

/** `ivm plan --json`. */
export function planJson(plan: FleetPlan, uri: string): unknown {
  const exitCode = planExitCode(plan, uri);
  return {
    version: 1,
    exitCode,
    changes: hasChanges(plan),
    build: plan.options.build ? 'nix build' : 'last build',
    identity: plan.options.deep ? 'deep' : 'record',
    restart: plan.options.restart,
    machines: plan.machines.map((entry) => ({
      name: entry.name,
      state: entry.state,
      upToDate: !entry.error && entry.actions.length === 0 && entry.waiting.length === 0,
      needsRestart: entry.waiting.length > 0,
      actions: entry.actions,
      waiting: entry.waiting,
      notes: entry.notes,
      base: entry.base ?? null,
      identity: entry.identity,
      identityFrom: entry.identityFrom ?? null,
      error: entry.error ? { message: entry.error.message, hint: entry.error.hint ?? null, exitCode: entry.error.exitCode } : null,
    })),
    builds: plan.builds.map((build) => ({ storePath: build.storePath, base: build.base, installed: build.installed, machines: build.machines })),
    orphans: plan.orphans.map((orphan) => {
      const blocked = orphan.remove ? orphanBlocked(orphan, uri) : undefined;
      return {
        name: orphan.name,
        uuid: orphan.uuid,
        state: orphan.state,
        files: orphan.files,
        varDisk: orphan.varDisk ?? null,
        remove: orphan.remove,
        error: blocked ? { message: blocked.message, hint: blocked.hint, exitCode: 3 } : null,
      };
    }),
  };
}

/** apply's last lines: the counts, then each failure with its message (and each VM left running). */
export function formatSummary(outcomes: Outcome[], dryRun: boolean): string[] {
  const by = (result: Outcome['result']) => outcomes.filter((outcome) => outcome.result === result);
  const failed = by('failed');
  const waiting = by('needs restart');
  const lines = [
    `apply${dryRun ? ' (dry run: nothing was changed)' : ''}: ${by('changed').length} ${dryRun ? 'would change' : 'changed'}, ${by('up to date').length} up to date, ${waiting.length} needs restart, ${failed.length} failed`,
  ];
  // A VM left running may have had other actions done (a redefine): it is counted once, as
  // waiting, and its line says what was done, so that "0 changed" never hides a change.
  for (const outcome of waiting) {
    const done = outcome.done.length > 0 ? `; ${dryRun ? 'would be done' : 'done'}: ${outcome.done.join(', ')}` : '';
    lines.push(`  needs restart: ${outcome.name} (${outcome.waiting.join(', ')}; left running: ivm apply --restart ${outcome.name}${done})`);
  }
  for (const outcome of failed) {
    lines.push(`  failed: ${outcome.kind === 'orphan' ? 'orphan ' : ''}${outcome.name}: ${outcome.error?.message.split('\n').join('\n    ') ?? 'failed'}`);
    if (outcome.error?.hint) lines.push(`    hint: ${outcome.error.hint.split('\n').join('\n    ')}`);
  }
  return lines;
}

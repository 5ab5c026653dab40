import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { ExitCode, IvmError } from '../errors.ts';
import { seconds } from './lifecycle.ts';

/** `ivm plan`'s exit code when something would change; the same number as PLAN_CHANGES_EXIT (src/core/fleet/fleet-plan.ts), which --help must not load. */
const CHANGES_EXIT = 10;

const EXIT_HELP = `
Exit codes of ivm plan: 0 nothing would change; ${CHANGES_EXIT} something would change or waits for a
restart (an orphan counts only when named by --remove-orphan); 1 a machine could not be planned
(its line says why; the others are still listed) or a named orphan cannot be removed (it runs); 2 bad input (an unknown NAME, --remove-orphan of a
name that is not an orphan ivm made), 4 environment, before anything is planned.
Exit codes of ivm apply: 0 every machine is done or had nothing to do (VMs left running for want of
--restart are named); 1 one or more machines failed (the summary names each, with its error); 2, 3, 4
as for every command, before anything is changed.`;

interface FleetFlags {
  build: boolean;
  deep?: boolean;
  restart?: boolean;
  removeOrphan: string[];
}

const collect = (value: string, previous: string[]) => [...previous, value];

function withFleetOptions(command: Command, verb: 'plan' | 'apply'): Command {
  const orphan = 'an orphan (a VM ivm made whose machines/NAME is gone): undefine it and remove its boot overlays, never its /var disk (repeatable)';
  return command
    .argument('[names...]', 'machine names (default: every machine in machines/)')
    .option('--no-build', "use each machine's last build (.ivm/NAME.json) instead of running nix build")
    .option('--deep', "read each stopped VM's /var disk (guestfish, read-only, ~17 s each under TCG) instead of the record of its last identity sync")
    .option('--restart', 'a running VM that needs a stop (upgrade, grow, a new definition) is shut down gracefully, changed and started again')
    .option('--remove-orphan <name>', verb === 'plan' ? `plan the removal of ${orphan}` : `remove ${orphan}`, collect, [])
    .addHelpText('after', EXIT_HELP);
}

export function registerPlan(program: Command, context: ContextFactory): void {
  withFleetOptions(
    program
      .command('plan')
      .description(
        'compare every machine (or those named) with what exists and print one line each: nothing to do, build, create, upgrade, ' +
          'redefine, grow, restart, start, or needs restart (a running VM that needs a stop); orphans are listed. Changes nothing ' +
          '(nix build runs, installing nothing). Exit 0 nothing to do, 10 changes, 1 a machine could not be planned',
      ),
    'plan',
  )
    .option('--json', 'print the plan as JSON: {"version", "exitCode", "changes", "machines": [{"name", "state", "upToDate", "needsRestart", "actions": [{"action", "why"}], "waiting", "error", ...}], "builds", "orphans"}')
    .action(async (names: string[], options: FleetFlags & { json?: boolean }) => {
      const { planFleet, planExitCode } = await import('../core/fleet/fleet-plan.ts');
      const { formatPlan, planJson } = await import('../core/fleet/fleet-format.ts');
      const ctx = context();
      const plan = await planFleet(ctx, names, { build: options.build, deep: Boolean(options.deep), restart: Boolean(options.restart), removeOrphans: options.removeOrphan });
      const uri = ctx.settings.libvirtUri;
      if (options.json) process.stdout.write(`${JSON.stringify(planJson(plan, uri), null, 2)}\n`);
      else for (const line of formatPlan(plan, uri)) ctx.say(line);
      const code = planExitCode(plan, uri);
      if (code === ExitCode.failure) {
        const failed = plan.machines.filter((entry) => entry.error).map((entry) => entry.name);
        throw new IvmError(`plan: ${failed.length ? `could not plan ${failed.join(', ')}` : 'an orphan named for removal cannot be removed'} (see above)`, { exitCode: code });
      }
      if (code !== 0) throw new IvmError(`plan: changes pending (exit ${code}; ivm apply does them)`, { exitCode: code });
    });

  withFleetOptions(
    program
      .command('apply')
      .description(
        'do what ivm plan prints: install each distinct base once, then create, upgrade, redefine, grow and start each machine ' +
          'through those verbs (their checks and rollback); a machine that fails does not stop the others; a summary at the end. ' +
          'Never deletes a /var disk; a running VM that needs a stop is left running unless --restart',
      ),
    'apply',
  )
    .option('-t, --timeout <seconds>', 'how long --restart waits for each shutdown', seconds, 120)
    .action(async (names: string[], options: FleetFlags & { timeout: number }) => {
      const { planFleet } = await import('../core/fleet/fleet-plan.ts');
      const { applyFleet, applyExitCode } = await import('../core/fleet/apply.ts');
      const { formatPlan, formatSummary } = await import('../core/fleet/fleet-format.ts');
      const ctx = context();
      const plan = await planFleet(ctx, names, { build: options.build, deep: Boolean(options.deep), restart: Boolean(options.restart), removeOrphans: options.removeOrphan });
      for (const line of formatPlan(plan, ctx.settings.libvirtUri)) ctx.say(line);
      const outcomes = await applyFleet(ctx, plan, { timeoutSeconds: options.timeout });
      for (const line of formatSummary(outcomes, ctx.runner.dryRun)) ctx.say(line);
      if (applyExitCode(outcomes) !== 0) {
        const failed = outcomes.filter((outcome) => outcome.result === 'failed').map((outcome) => outcome.name);
        throw new IvmError(`apply: ${failed.length} failed: ${failed.join(', ')} (the others were applied; see the summary)`, { exitCode: applyExitCode(outcomes) });
      }
    });
}

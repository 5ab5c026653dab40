// `ivm new NAME`: a new machine folder from flags, or, on a terminal and without any flag, from a
// few questions with defaults. The prompts are here; what is written and checked is core/new-machine.ts.
import path from 'node:path';
import readline from 'node:readline';
import type { Command } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { BadInputError, RefusedError } from '../errors.ts';
import type { Catalogue, NewMachineOptions } from '../core/machine/new-machine.ts';

/** The flags as commander gives them: NewMachineOptions, with --profile under commander's name. */
type NewFlags = Omit<NewMachineOptions, 'profiles'> & { profile?: string[] };

const collect = (value: string, previous: string[] | undefined): string[] => [...(previous ?? []), value];

/** Lines typed on the terminal, queued (so that input typed ahead of a question is not lost). */
function lineReader(): { ask: (question: string) => Promise<string>; close: () => void } {
  const rl = readline.createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const queued: string[] = [];
  let waiting: { resolve: (line: string) => void; reject: (error: Error) => void } | undefined;
  let closed = false;
  const cancelled = () => new RefusedError('cancelled: nothing was written', 'give the values as flags (ivm new --help) to skip the questions');
  rl.on('line', (line) => {
    if (waiting) {
      const { resolve } = waiting;
      waiting = undefined;
      resolve(line);
    } else queued.push(line);
  });
  rl.on('SIGINT', () => rl.close());
  rl.on('close', () => {
    closed = true;
    if (waiting) waiting.reject(cancelled());
    waiting = undefined;
  });
  return {
    ask: (question) => {
      if (queued.length > 0) {
        process.stderr.write(`${question}${queued[0]}\n`);
        return Promise.resolve(queued.shift()!);
      }
      if (closed) return Promise.reject(cancelled());
      rl.setPrompt(question);
      rl.prompt();
      return new Promise((resolve, reject) => (waiting = { resolve, reject }));
    },
    close: () => rl.close(),
  };
}

/**
 * The questions: profiles, memory, vcpus, /var size, network. Enter takes the default; a bad answer
 * says why and asks again (each one checked as the flag would be).
 */
async function wizard(name: string, catalogue: Catalogue, check: (options: NewMachineOptions) => Promise<void>): Promise<NewMachineOptions> {
  const { defaultValues } = await import('../core/machine/new-machine.ts');
  const defaults = defaultValues();
  const width = Math.max(...catalogue.profiles.map((p) => p.name.length));
  process.stderr.write(`ivm new ${name}: a few questions; Enter takes the [default], Ctrl-C stops (nothing is written). Flags skip them (ivm new --help).\n`);
  const shown = path.relative(process.cwd(), catalogue.file);
  process.stderr.write(`Profiles (${shown.startsWith('..') ? catalogue.file : shown}):\n`);
  for (const p of catalogue.profiles) process.stderr.write(`  ${p.name.padEnd(width)}  ${p.description}\n`);
  const reader = lineReader();
  const options: NewMachineOptions = {};
  const askFor = async (question: string, fallback: string, apply: (answer: string) => void) => {
    for (;;) {
      const answer = (await reader.ask(`${question} [${fallback}]: `)).trim() || fallback;
      const before = { ...options };
      apply(answer);
      try {
        await check(options);
        return;
      } catch (error) {
        if (!(error instanceof BadInputError)) throw error;
        process.stderr.write(`  ${error.message}\n`);
        Object.assign(options, before);
        for (const key of Object.keys(options) as (keyof NewMachineOptions)[]) if (!(key in before)) delete options[key];
      }
    }
  };
  try {
    await askFor('profiles, comma-separated (none: -)', '-', (a) => (options.profiles = a === '-' ? [] : [a]));
    await askFor('memory in MiB', String(defaults.memory), (a) => (options.memory = a));
    await askFor('virtual CPUs', String(defaults.vcpus), (a) => (options.vcpus = a));
    await askFor('size of the /var disk (e.g. 512M, 20G)', String(defaults.varSize), (a) => (options.varSize = a));
    await askFor('libvirt network, or bridge:BR for a host bridge', String(defaults.network), (a) => {
      const bridge = /^bridge:(.*)$/.exec(a);
      if (bridge) options.bridge = bridge[1];
      else options.network = a;
    });
  } finally {
    reader.close();
  }
  return options;
}

export function registerNew(program: Command, context: ContextFactory): void {
  program
    .command('new')
    .argument('<name>', 'name of the new machine (a hostname label: lowercase letters, digits, dashes)')
    .description(
      'write machines/NAME/meta.nix and default.nix (checked as ivm reads them), create the identity and git add the public files; ' +
        'on a terminal, without flags, it asks',
    )
    .option('--profile <names>', 'profiles to enable, comma-separated (ivm profiles lists them); may be given again', collect)
    .option('--memory <MiB>', 'memory in MiB (default 2048)')
    .option('--vcpus <n>', 'virtual CPUs (default 2)')
    .option('--var-size <size>', 'size of the /var disk, e.g. 512M or 20G, at least 64M (default 20G)')
    .option('--network <name>', 'the libvirt network (default: default)')
    .option('--bridge <br>', 'a host bridge instead of a libvirt network')
    .option('--ip <address>', 'a static IPv4 address: a DHCP reservation on the network')
    .option('--system <system>', 'x86_64-linux or aarch64-linux (default: this host\'s)')
    .option('--virt-type <type>', 'kvm (default) or qemu (TCG, where KVM is unusable)')
    .option('--autostart', 'start the VM when the host boots (meta.nix autostart = true; libvirt autostart)')
    .option('--from <machine>', "start from another machine's meta.nix values and profiles (flags override)")
    .action(async (name: string, flags: NewFlags) => {
      const core = await import('../core/machine/new-machine.ts');
      const ctx = context();
      let options: NewMachineOptions = {
        profiles: flags.profile,
        memory: flags.memory,
        vcpus: flags.vcpus,
        varSize: flags.varSize,
        network: flags.network,
        bridge: flags.bridge,
        ip: flags.ip,
        system: flags.system,
        virtType: flags.virtType,
        autostart: flags.autostart,
        from: flags.from,
      };
      const anyFlag = Object.values(flags).some((v) => v !== undefined);
      if (!anyFlag && process.stdin.isTTY && process.stderr.isTTY) {
        const catalogue = core.readCatalogue(ctx.project);
        // The name and the folder first: no questions for a machine that cannot be made.
        await core.planNewMachine(ctx, name, {}, catalogue);
        options = await wizard(name, catalogue, async (answers) => void (await core.planNewMachine(ctx, name, answers, catalogue)));
      }
      const result = await core.newMachine(ctx, name, options);
      const dry = ctx.runner.dryRun;
      const rel = (file: string) => path.relative(ctx.project.root, path.join(result.plan.dir, file));
      const files = core.PUBLIC_FILES.map(rel);
      if (result.git === 'work-tree') {
        if (!dry) ctx.say(`staged with git: ${result.staged.join(', ')} (the flake sees tracked files only; commit them when you like)`);
      } else {
        const why = result.git === 'no-git' ? 'git is not installed' : `${ctx.project.root} is not a git work tree`;
        ctx.say(
          `${why}: ${dry ? 'nothing would be staged' : 'nothing was staged'}. Add the machine's public files to git before ivm build ` +
            `(the flake sees tracked files only): git add -- ${files.join(' ')} (never ${core.SECRET_IDENTITY_FILES.map(rel).join(', ')})`,
        );
      }
      if (!dry) ctx.say(`next: ivm create ${name} --start`);
    });
}

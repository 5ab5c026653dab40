// The one place where ivm starts a process. A command is an argv array (never a shell string);
// the runner prefixes HOST_CMD and SUDO or applies the tool's override variable, hands LIBGUESTFS_*
// to guestfish, echoes under --verbose, and under --dry-run prints mutating commands instead of
// running them (read-only queries still run, so a dry run sees the real state).
import crypto from 'node:crypto';
import { runProcess, startProcess, type Finished, type Running } from './spawn.ts';
import { IvmError, CommandFailedError, LibvirtUnreachableError, ToolMissingError, VirtlogdMissingError } from '../errors.ts';
import type { Settings } from './settings.ts';
import { shellLine, withHereDoc } from './shell-quote.ts';
import { TOOLS, type ToolName } from './tools.ts';
import type { Progress } from '../core/progress.ts';

export interface Command {
  tool: ToolName;
  args: string[];
  /** True when the command changes anything: under --dry-run it is printed, not run. */
  mutates: boolean;
  /** Standard input (bytes for binary data: a backup's tar headers). */
  input?: string | Buffer;
  /** The input holds secrets (a backup's manifest carries the machine's files): --verbose and --dry-run never show it. */
  secretInput?: boolean;
  /** Inherit the terminal (virsh console). */
  interactive?: boolean;
  /**
   * For a program that exits 0 even when a command of its script failed (debugfs -f): the stderr
   * lines it prints when all is well. Any other line on stderr makes the command a failure.
   */
  expectedStderr?: RegExp;
  /**
   * For a long command that reports on stderr (nix build): each line of its stderr goes to
   * progress.commandOutput as it comes (nothing under --quiet), and only its first and last lines
   * are kept, for the error when it fails (Result.stderr holds those). Stdout is captured as always.
   */
  streamStderr?: boolean;
  /** Each chunk of stdout as it comes, instead of collecting it (Result.stdout is then ''): a large read (a checksum of a root-only file). */
  stdoutSink?: (chunk: Buffer) => void;
  /** Its stdout holds secrets (a backup's manifest): never put into an error message. */
  secretOutput?: boolean;
  /** Standard input is this open file (a backup ivm opened itself), not a pipe: the program reads the very file ivm checks. */
  stdinFd?: number;
}

export interface Result {
  stdout: string;
  stderr: string;
  exitCode: number;
  /** True when the command was only printed (--dry-run). */
  skipped: boolean;
}

export interface RunnerOptions {
  dryRun: boolean;
  verbose: boolean;
  /** Where dry-run prints commands (default: stdout). */
  print?: (line: string) => void;
  /** Where --verbose echoes commands (default: progress.line, which writes to stderr). */
  echo?: (line: string) => void;
  /** Progress on stderr (src/core/progress.ts); default: none, and --verbose still echoes to stderr. */
  progress?: Progress;
}

/** No progress: steps just run, a command's own log is not shown; line() still writes to stderr. */
const NO_PROGRESS: Progress = {
  plan: () => undefined,
  step: (_title, work) => work(),
  line: (text) => void process.stderr.write(`${text}\n`),
  commandOutput: () => undefined,
};

/** How many lines of a streamed stderr are kept: the first (a prefix saying a program is missing), and the last (the error). */
const STREAM_HEAD_LINES = 3;
const STREAM_TAIL_LINES = 20;

export class Runner {
  readonly dryRun: boolean;
  readonly verbose: boolean;
  /** Where core code reports its steps (never written to directly by it). */
  readonly progress: Progress;
  private readonly print: (line: string) => void;
  private readonly echo: (line: string) => void;

  constructor(
    readonly settings: Settings,
    options: RunnerOptions,
  ) {
    this.dryRun = options.dryRun;
    this.verbose = options.verbose;
    this.progress = options.progress ?? NO_PROGRESS;
    this.print = options.print ?? ((line) => process.stdout.write(`${line}\n`));
    this.echo = options.echo ?? ((line) => this.progress.line(`+ ${line}`));
  }

  /** The argv a command runs as, with prefixes and overrides applied. */
  argv(command: Command): string[] {
    const spec = TOOLS[command.tool];
    const override = spec.variable ? this.settings.overrides[spec.variable] : undefined;
    if (override) {
      // GUESTFISH="sudo guestfish --verbose": the words before the program are a prefix that may
      // drop the environment, so the LIBGUESTFS_* variables are named on the command line with env,
      // right before the program (after the program's flags, guestfish would take `env` for one of
      // its own commands).
      if (command.tool === 'guestfish' && override.length > 1) {
        // The program is the last word whose file name starts with "guestfish" ("sudo
        // /opt/bin/guestfish --verbose": 1), else the first word (a wrapper of another name).
        let at = override.length - 1;
        while (at > 0 && !(override[at]!.split('/').pop() ?? '').startsWith(spec.program)) at -= 1;
        if (at > 0) {
          return [...override.slice(0, at), ...this.guestfsEnvWords(), ...override.slice(at), ...command.args];
        }
        // The program comes first (GUESTFISH="guestfish --verbose"): no prefix, the environment reaches it.
      }
      return [...override, ...command.args];
    }
    const prefix = [...this.settings.hostCmd, ...(spec.root ? this.settings.sudo : [])];
    // sudo and host-spawn do not pass the environment on: name the guestfish variables on the command line.
    // tar's listing is parsed ("block N:"), so it runs in the C locale, through sudo as well. So are
    // virsh's words (states, dominfo fields): sudo keeps LC_ALL, a HOST_CMD may not.
    const cLocale = (command.tool === 'tar' && prefix.length > 0) || (command.tool === 'virsh' && !command.interactive && this.settings.hostCmd.length > 0);
    const env = command.tool === 'guestfish' && prefix.length > 0 ? this.guestfsEnvWords() : cLocale ? ['env', 'LC_ALL=C'] : [];
    return [...prefix, ...env, spec.program, ...command.args];
  }

  private guestfsEnvWords(): string[] {
    return ['env', ...Object.entries(this.settings.guestfsEnv).map(([k, v]) => `${k}=${v}`)];
  }

  /** The command as a line a user could paste into a shell. */
  describe(command: Command): string {
    const line = shellLine(this.argv(command));
    if (command.input === undefined) return line;
    if (command.secretInput) return withHereDoc(line, `(${Buffer.byteLength(command.input)} bytes, not shown: they hold secrets)\n`);
    if (Buffer.isBuffer(command.input)) return withHereDoc(line, `(${command.input.length} bytes of binary data)\n`);
    return withHereDoc(line, command.input);
  }

  private mutations = 0;

  /**
   * Counts a change about to be made. IVM_TEST_FAULT_KILL_AT=N (with IVM_TEST_HARNESS=1; the tests'
   * switch, see README.md) kills ivm with SIGKILL just before its N-th change, to prove that an
   * operation cut short anywhere leaves a usable VM.
   */
  private beforeMutation(): void {
    this.mutations += 1;
    if (this.settings.testing.faultKillAt === this.mutations) process.kill(process.pid, 'SIGKILL');
  }

  /** Runs a command; a non-zero exit becomes CommandFailedError unless allowFailure. */
  async run(command: Command, options: { allowFailure?: boolean } = {}): Promise<Result> {
    if (this.dryRun && command.mutates) {
      this.print(this.describe(command));
      return { stdout: '', stderr: '', exitCode: 0, skipped: true };
    }
    if (command.mutates) this.beforeMutation();
    if (this.verbose) this.echo(this.describe(command));
    const [file, ...args] = this.argv(command) as [string, ...string[]];
    // virsh's words are parsed (states, dominfo fields, error messages): never a translation of them.
    const env = command.tool === 'guestfish' ? this.settings.guestfsEnv : (command.tool === 'virsh' && !command.interactive) || command.tool === 'tar' ? { LC_ALL: 'C' } : {};
    const streamed = command.streamStderr && !command.interactive ? this.stderrStream() : undefined;
    const result = await runProcess(file, args, {
      env,
      ...(command.input !== undefined ? { input: command.input } : {}),
      ...(command.interactive ? { interactive: true } : {}),
      ...(streamed ? { onStderrLine: streamed.line } : {}),
      ...(command.stdoutSink ? { onStdout: command.stdoutSink } : {}),
      ...(command.stdinFd !== undefined ? { stdinFd: command.stdinFd } : {}),
    });
    if (result.spawnError) throw this.translateSpawnError(command, file, result.spawnError);
    if (result.exitCode === undefined) throw this.translateSpawnError(command, file, killedError(result));
    const stdout = result.stdout;
    const stderr = streamed ? streamed.kept() : result.stderr;
    const exitCode = result.exitCode;
    const environment = exitCode !== 0 ? this.environmentError(command, stderr) : undefined;
    if (environment) throw environment;
    if (exitCode !== 0 && !options.allowFailure) {
      throw new CommandFailedError(shellLine(this.argv(command)), exitCode, lastLines(stderr || (command.secretOutput ? '' : stdout), 8));
    }
    if (exitCode === 0 && command.expectedStderr) {
      const unexpected = stderr.split('\n').filter((line) => line.trim() !== '' && !command.expectedStderr!.test(line));
      if (unexpected.length > 0) throw new CommandFailedError(shellLine(this.argv(command)), exitCode, lastLines(unexpected.join('\n'), 8));
    }
    return { stdout, stderr, exitCode, skipped: false };
  }

  /**
   * A stderr that is shown line by line as it comes (progress.commandOutput) and not buffered whole
   * (a build log may be long): only its first and last lines are kept.
   */
  private stderrStream(): { line: (text: string) => void; kept: () => string } {
    const head: string[] = [];
    const tail: string[] = [];
    let dropped = false;
    const progress = this.progress;
    return {
      line(text: string) {
        progress.commandOutput(text);
        if (head.length < STREAM_HEAD_LINES) head.push(text);
        else {
          tail.push(text);
          if (tail.length > STREAM_TAIL_LINES) {
            tail.shift();
            dropped = true;
          }
        }
      },
      kept: () => [...head, ...(dropped ? ['...'] : []), ...tail].join('\n'),
    };
  }

  /**
   * Starts a program that takes commands on standard input and answers each batch (a guestfish
   * session): one launch, several round trips. The process itself only reads until a batch marked
   * as a change is sent; under --dry-run such batches are printed instead.
   */
  startSession(command: Command, timeoutMs?: number): Session {
    if (this.verbose) this.echo(`${shellLine(this.argv(command))} (session)`);
    const [file, ...args] = this.argv(command) as [string, ...string[]];
    return new Session(this, command, startProcess(file, args, command.tool === 'guestfish' ? this.settings.guestfsEnv : {}), timeoutMs);
  }

  /** Used by Session: a change batch under --dry-run is printed, otherwise counted and echoed. */
  sessionBatch(command: Command, lines: string[], mutates: boolean, sentBefore: string[]): 'print' | 'send' {
    if (mutates && this.dryRun) {
      // With what the session ran before (open, mount, reads), so that the printed script runs as is.
      this.print(withHereDoc(shellLine(this.argv(command)), [...sentBefore, ...lines].join('\n')));
      return 'print';
    }
    if (mutates) this.beforeMutation();
    if (this.verbose) for (const line of lines) this.echo(`${command.tool}> ${line}`);
    return 'send';
  }

  /** The error for a session that failed: its exit code and stderr, or why it could not start. */
  failure(command: Command, code: number | undefined, stderr: string, spawnError?: Error): Error {
    if (spawnError) return this.translateSpawnError(command, this.argv(command)[0]!, spawnError);
    return (code !== 0 ? this.environmentError(command, stderr) : undefined) ?? new CommandFailedError(shellLine(this.argv(command)), code, lastLines(stderr, 8));
  }

  /** A failure that is the host's, not the command's: a program missing behind a prefix, libvirt or virtlogd down. */
  private environmentError(command: Command, stderr: string): Error | undefined {
    const { program, packages } = TOOLS[command.tool];
    // Only a prefix's own words (sudo, env) mean "not installed": a bare 127 may be the program's
    // own exit code (ssh returns the remote command's).
    if (saysNotFound(stderr, program)) return new ToolMissingError(program, packages);
    if (command.tool !== 'virsh') return undefined;
    if (VIRTLOGD_DOWN.test(stderr)) return new VirtlogdMissingError(this.settings.libvirtUri, lastErrorLine(stderr));
    if (VIRSH_UNREACHABLE.test(stderr)) return new LibvirtUnreachableError(this.settings.libvirtUri, lastErrorLine(stderr));
    return undefined;
  }

  private translateSpawnError(command: Command, file: string, error: unknown): Error {
    const code = (error as { code?: string }).code;
    if (code === 'ENOENT') {
      const spec = TOOLS[command.tool];
      const isTool = file === spec.program || file.endsWith(`/${spec.program}`);
      return new ToolMissingError(file, isTool ? spec.packages : undefined);
    }
    const message = (error as { shortMessage?: string; message?: string }).shortMessage ?? String(error);
    return new CommandFailedError(shellLine(this.argv(command)), undefined, message);
  }
}

/** A process that ended without an exit code: killed by a signal. */
function killedError(result: Finished): Error {
  return Object.assign(new Error(`killed by signal ${result.signal ?? 'unknown'}`), { shortMessage: `killed by signal ${result.signal ?? 'unknown'}` });
}

/** How long one batch may take before the session is given up (a guestfish launch under TCG takes 15-30 s). */
export const SESSION_BATCH_TIMEOUT_MS = 10 * 60 * 1000;

/** A running program fed batches of commands; see Runner.startSession. */
export class Session {
  private output: Buffer = Buffer.alloc(0);
  private readonly sent: string[] = [];
  private exited = false;
  private counter = 0;
  /**
   * Ends each batch's answer. Random per session: the answers hold text the guest controls (file
   * names on /var), which must never be able to fake the end of a batch.
   */
  private readonly markerBase = `::ivm-batch-${crypto.randomBytes(12).toString('hex')}`;
  private readonly done: Promise<{ exitCode?: number; stderr?: unknown }>;
  private spawnError: Error | undefined;
  private readonly child: Running['child'];

  constructor(
    private readonly runner: Runner,
    private readonly command: Command,
    running: Running,
    private readonly timeoutMs = SESSION_BATCH_TIMEOUT_MS,
  ) {
    const child = running.child;
    this.child = child;
    // A program that died early closes its input: the failure is reported from its exit, not as EPIPE.
    child.stdin?.on('error', () => undefined);
    child.stdout?.on('data', (chunk: Buffer) => {
      this.output = Buffer.concat([this.output, chunk]);
    });
    this.done = running.done.then((result) => {
      this.exited = true;
      if (result.spawnError) this.spawnError = result.spawnError;
      else if (result.exitCode === undefined && !this.timedOut) this.spawnError = killedError(result);
      return { exitCode: result.exitCode, stderr: result.stderr };
    });
  }

  private timedOut = false;

  /** Sends a batch and returns what the program printed for it. */
  async send(lines: string[], options: { mutates: boolean } = { mutates: false }): Promise<string> {
    return (await this.sendRaw(lines, options)).toString('utf8');
  }

  /** Sends a batch and returns the bytes the program printed for it (for NUL-separated answers). */
  async sendRaw(lines: string[], options: { mutates: boolean } = { mutates: false }): Promise<Buffer> {
    if (this.runner.sessionBatch(this.command, lines, options.mutates, this.sent) === 'print') return Buffer.alloc(0);
    this.sent.push(...lines);
    const marker = Buffer.from(`${this.markerBase}-${++this.counter}::\n`);
    this.output = Buffer.alloc(0);
    this.child.stdin?.write(`${[...lines, `echo ${marker.toString().trimEnd()}`].join('\n')}\n`);
    const deadline = Date.now() + this.timeoutMs;
    for (;;) {
      const at = this.output.indexOf(marker);
      if (at >= 0) {
        const answer = this.output.subarray(0, at);
        this.output = this.output.subarray(at + marker.length);
        return Buffer.from(answer);
      }
      if (this.exited) throw await this.failed();
      if (Date.now() >= deadline) {
        this.timedOut = true;
        this.abort();
        await this.done;
        throw new IvmError(
          `${this.command.tool} did not answer within ${Math.round(this.timeoutMs / 1000)} s; it was stopped (${shellLine(this.runner.argv(this.command))})`,
          { hint: 'run again with --verbose to see where it stops' },
        );
      }
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 20)), this.done]);
    }
  }

  /** Stops the program if it still runs (after an error): the disk it holds is released. SIGKILL if SIGTERM is not enough. */
  abort(): void {
    if (this.exited) return;
    this.child.stdin?.end();
    this.child.kill('SIGTERM');
    const child = this.child;
    setTimeout(() => {
      if (!this.exited) child.kill('SIGKILL');
    }, 5000).unref();
  }

  /** Ends the session (closing its input) and checks that the program exited cleanly, within the batch time limit. */
  async close(): Promise<void> {
    this.child.stdin?.end();
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<'expired'>((resolve) => {
      timer = setTimeout(() => resolve('expired'), this.timeoutMs);
    });
    const outcome = await Promise.race([this.done, expired]);
    clearTimeout(timer);
    if (outcome === 'expired') {
      this.timedOut = true;
      this.abort();
      throw new IvmError(`${this.command.tool} did not exit within ${Math.round(this.timeoutMs / 1000)} s after its last batch; it was stopped (${shellLine(this.runner.argv(this.command))})`);
    }
    if (this.spawnError || outcome.exitCode !== 0) throw await this.failed();
  }

  private async failed(): Promise<Error> {
    const result = await this.done;
    const stderr = typeof result.stderr === 'string' ? result.stderr : '';
    return this.runner.failure(this.command, result.exitCode, stderr, this.spawnError);
  }
}

/** libvirtd's words when it cannot reach virtlogd (checked first: they also match the next pattern). */
const VIRTLOGD_DOWN = /socket to '[^']*virtlogd-sock'/;

/** virsh's words when it cannot talk to libvirtd, whatever the verb. */
const VIRSH_UNREACHABLE = /failed to connect to the hypervisor|Failed to connect socket|Cannot recv data|authentication failed/i;

function lastErrorLine(stderr: string): string {
  const lines = stderr.trim().split('\n').map((l) => l.replace(/^error:\s*/, '').trim()).filter(Boolean);
  return lines[lines.length - 1] ?? 'no answer';
}

/** sudo and env report a missing program on their first line of stderr. */
function saysNotFound(stderr: string, program: string): boolean {
  const head = stderr.split('\n').slice(0, 3).join('\n');
  const name = program.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // The name as a word of its own ("sudo: nix: ...", "env: ‘nix’: ..."), not the end of a file name
  // in the program's own error ("error: opening file '/x/settings.nix': No such file or directory").
  return new RegExp(`(?:^|[\\s:/])[‘'"]?${name}[’'"]?: (command not found|No such file or directory)`, 'm').test(head);
}

export function lastLines(text: string, n: number): string {
  return text.trimEnd().split('\n').slice(-n).join('\n');
}

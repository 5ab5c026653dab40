// Processes on node:child_process, argv only (never a shell). The runner (runner.ts) is the one user:
// it decides what to run; this file only starts it, feeds its input and collects what it printed.
// (Plain child_process rather than a library: ivm starts in a tenth of a second, and loading a
// process library cost as much as the rest of `ivm list`.)
import { spawn, type ChildProcess } from 'node:child_process';

export interface Finished {
  /** undefined when the process was killed by a signal or could not start. */
  exitCode: number | undefined;
  signal: NodeJS.Signals | undefined;
  stdout: string;
  stderr: string;
  /** Why the process could not start (ENOENT: no such program), when it did not. */
  spawnError: NodeJS.ErrnoException | undefined;
}

export interface RunOptions {
  /** Added to ivm's own environment. */
  env: Record<string, string>;
  input?: string | Buffer;
  /** Each chunk of stdout as it comes; then stdout is not collected (Finished.stdout is ''). */
  onStdout?: (chunk: Buffer) => void;
  /** Standard input is this open file descriptor (then `input` is not used). */
  stdinFd?: number;
  /** Inherit the terminal (stdin, stdout and stderr). */
  interactive?: boolean;
  /** Each line of stderr as it comes; then stderr is not collected (Finished.stderr is ''). */
  onStderrLine?: (line: string) => void;
}

/** Runs a program to its end and collects its output. Never rejects: failures are in the result. */
export function runProcess(file: string, args: string[], options: RunOptions): Promise<Finished> {
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(file, args, {
        env: { ...process.env, ...options.env },
        stdio: options.interactive ? 'inherit' : [options.stdinFd ?? 'pipe', 'pipe', 'pipe'],
      });
    } catch (error) {
      resolve({ exitCode: undefined, signal: undefined, stdout: '', stderr: '', spawnError: error as NodeJS.ErrnoException });
      return;
    }
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let spawnError: NodeJS.ErrnoException | undefined;
    const onStdout = options.onStdout;
    child.stdout?.on('data', onStdout ? (chunk: Buffer) => onStdout(chunk) : (chunk: Buffer) => out.push(chunk));
    if (options.onStderrLine) {
      const emit = options.onStderrLine;
      let pending = '';
      child.stderr?.setEncoding('utf8');
      child.stderr?.on('data', (chunk: string) => {
        pending += chunk;
        const lines = pending.split('\n');
        pending = lines.pop() ?? '';
        for (const line of lines) emit(line);
      });
      child.stderr?.on('end', () => {
        if (pending !== '') emit(pending);
      });
    } else {
      child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
    }
    child.on('error', (error: NodeJS.ErrnoException) => {
      spawnError = error;
    });
    // A program that exits without reading its input closes the pipe: that is its exit's to report.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(options.input ?? '');
    child.on('close', (code, signal) => {
      resolve({
        exitCode: code ?? undefined,
        signal: signal ?? undefined,
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8'),
        spawnError,
      });
    });
  });
}

/** A long-running process with pipes on all three streams (a guestfish session). */
export interface Running {
  child: ChildProcess;
  /** Resolves when it ended: its exit code (undefined after a signal or a failed start) and stderr. */
  done: Promise<Finished>;
}

export function startProcess(file: string, args: string[], env: Record<string, string>): Running {
  const child = spawn(file, args, { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  const err: Buffer[] = [];
  let spawnError: NodeJS.ErrnoException | undefined;
  child.stderr?.on('data', (chunk: Buffer) => err.push(chunk));
  child.on('error', (error: NodeJS.ErrnoException) => {
    spawnError = error;
  });
  const done = new Promise<Finished>((resolve) => {
    child.on('close', (code, signal) => {
      resolve({ exitCode: code ?? undefined, signal: signal ?? undefined, stdout: '', stderr: Buffer.concat(err).toString('utf8'), spawnError });
    });
  });
  return { child, done };
}

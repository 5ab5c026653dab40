// Progress on long work, through the real CLI (bin/ivm.js) in a test project: the steps of a plan
// on stderr as they start, never on stdout; --quiet; --dry-run; a real terminal (script(1) gives
// ivm a pty) where the step is redrawn in place; and nix build's own log streamed to stderr while
// the build runs (the stand-in nix prints a line and holds the build until the test lets it go).
// Real qemu-img, e2fsprogs and libvirt; no guestfish launch and no boot.
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, domainState, ensureLibvirt } from './support/libvirt.ts';
import { IVM_BIN, makeTestProject, testMeta, type TestProject } from './support/ivm.ts';
import { shellLine } from '../src/host/shell-quote.ts';

const NAME = 'prog-web';
/** Any control character but newline (and tab): what stderr must not hold without a terminal. */
const CONTROL = /[\x00-\x08\x0b-\x1f\x7f]/;
const STEP = /^\[(\d+)\/(\d+)\] /;

/** Resolves once `read()` matches, or fails (with what was read) when the process ends first or time runs out. */
async function waitForOutput(child: ResultPromise, read: () => string, pattern: RegExp, timeoutMs = 60_000): Promise<void> {
  let ended = false;
  void child.finally(() => (ended = true)).catch(() => undefined);
  const deadline = Date.now() + timeoutMs;
  while (!pattern.test(read())) {
    if (ended) throw new Error(`the process ended before its output matched ${pattern}:\n${JSON.stringify(read())}`);
    if (Date.now() > deadline) throw new Error(`no ${pattern} within ${timeoutMs} ms:\n${JSON.stringify(read())}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  expect(ended).toBe(false);
}

describe('progress on long work (real CLI; stand-in nix build)', () => {
  let project: TestProject;
  let base: string;

  beforeAll(async () => {
    await ensureLibvirt();
    await cleanupDomain(NAME);
    project = await makeTestProject('ivm-progress-');
    await project.useStandinBase('a');
    project.addMachine(NAME, testMeta());
  });

  afterAll(async () => {
    await cleanupDomain(NAME);
    await project?.remove();
  });

  /** ivm ARGS in the project, its stdout and stderr read as they come. */
  const spawnIvm = (args: string[], extraEnv: Record<string, string> = {}) => {
    const child = execa(process.execPath, [IVM_BIN, ...args], { cwd: project.root, env: { ...project.env, ...extraEnv }, reject: false, stdin: 'ignore' });
    const out = { stdout: '', stderr: '' };
    child.stdout?.on('data', (chunk: Buffer) => (out.stdout += chunk.toString()));
    child.stderr?.on('data', (chunk: Buffer) => (out.stderr += chunk.toString()));
    return { child, out };
  };

  it('streams nix build\'s stderr to ivm\'s stderr while the build runs; stdout is still only the base', async () => {
    const hold = path.join(project.root, 'release-build');
    const { child, out } = spawnIvm(['build', NAME], { IVM_STANDIN_HOLD: hold });
    try {
      // The stand-in printed its line and now waits for the hold file: ivm has shown it already.
      await waitForOutput(child, () => out.stderr, /^building '.*\.drv'\.\.\.$/m);
      expect(out.stderr).toMatch(new RegExp(`^build the image of ${NAME} \\(nix build\\)\\n`));
      expect(out.stdout).toBe('');
    } finally {
      fs.writeFileSync(hold, '');
    }
    const result = await child;
    expect(result.exitCode, out.stderr).toBe(0);
    base = path.join(project.baseDir, `${path.basename(project.env.IVM_STANDIN_OUT!)}.qcow2`);
    expect(out.stdout).toBe(`${base}\n`);
    // The install plan's steps follow, numbered; no control characters without a terminal.
    expect(out.stderr).toMatch(/^\[1\/4\] make the base-image folder\n\[2\/4\] copy the image\n\[3\/4\] make it read-only\n\[4\/4\] put it in place\n/m);
    expect(out.stderr).not.toMatch(CONTROL);
  });

  it('a failing build shows its log as it comes, and the error keeps the tail of it', async () => {
    const result = await project.ivm(['build', NAME], { IVM_STANDIN_FAIL: 'the build broke here' });
    expect(result.exitCode).toBe(1);
    expect(result.stderr).not.toMatch(/internal error|\n\s+at /);
    const [streamed, error] = result.stderr.split(/^ivm: /m) as [string, string];
    expect(streamed).toContain('standin-nix: build log line 1\n');
    expect(error).toMatch(/^command failed \(exit 1\): \S*standin-nix /);
    expect(error).toContain('  error: the build broke here\n');
    expect(error).toContain('  standin-nix: build log line 30\n');
    expect(error).not.toContain('build log line 1\n');
    expect(result.stderr).not.toMatch(CONTROL);
    // --quiet: nix's log is not shown, and the error with its tail still is.
    const quiet = await project.ivm(['--quiet', 'build', NAME], { IVM_STANDIN_FAIL: 'the build broke here' });
    expect(quiet.exitCode).toBe(1);
    expect(quiet.stderr).toMatch(/^ivm: command failed \(exit 1\): [^\n]*\n(  [^\n]*\n)*  error: the build broke here\n/);
    expect(quiet.stderr).not.toContain('building ');
    expect(quiet.stderr).not.toContain('build log line 1\n');
  });

  it('create prints each step of its plan on stderr as it starts, in order, and none on stdout', async () => {
    const result = await project.ivm(['create', NAME, '--no-build']);
    expect(result.exitCode, result.stderr).toBe(0);
    const lines = result.stderr.trimEnd().split('\n');
    const heading = lines.indexOf(`create ${NAME}: ${lines.filter((l) => STEP.test(l)).length} steps`);
    expect(heading, result.stderr).toBeGreaterThanOrEqual(0);
    const steps = lines.slice(heading + 1);
    const numbers = steps.map((line) => STEP.exec(line)?.slice(1).map(Number));
    expect(numbers.length).toBeGreaterThan(5);
    numbers.forEach((n, i) => expect(n, steps[i]).toEqual([i + 1, steps.length]));
    expect(steps[0]).toBe(`[1/${steps.length}] make the VM folder`);
    expect(steps.at(-1)).toBe(`[${steps.length}/${steps.length}] define the domain`);
    expect(result.stderr).not.toMatch(CONTROL);
    expect(result.stdout).not.toMatch(/\[\d+\/\d+\]/);
    expect(result.stdout).toContain(`created ${NAME}`);
    expect(await domainState(NAME)).toBe('shut off');
  });

  it('ivm list --json prints only JSON on stdout', async () => {
    const result = await project.ivm(['list', '--json']);
    expect(result.exitCode, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual([{ name: NAME, state: 'shut off', base: 'latest', autostart: false }]);
  });

  it('--quiet (-q) prints no progress: a destroy and a create leave stderr empty', async () => {
    const destroyed = await project.ivm(['-q', 'destroy', NAME, '--delete-var']);
    expect(destroyed.exitCode, destroyed.stderr).toBe(0);
    expect(destroyed.stderr).toBe('');
    expect(destroyed.stdout).toContain(`destroyed ${NAME}`);
    const created = await project.ivm(['--quiet', 'create', NAME, '--no-build']);
    expect(created.exitCode, created.stderr).toBe(0);
    expect(created.stderr).toBe('');
    expect(created.stdout).toContain(`created ${NAME}`);
  });

  it('on a terminal a long step is redrawn in place with its elapsed time, and its line is cleared when it ends', async () => {
    const hold = path.join(project.root, 'release-tty-build');
    // script(1) runs ivm on a pseudo-terminal: stderr (and stdout) is a TTY.
    const child = execa('script', ['-qfec', shellLine([process.execPath, IVM_BIN, 'build', NAME]), '/dev/null'], {
      cwd: project.root,
      env: { ...project.env, IVM_STANDIN_HOLD: hold },
      reject: false,
      stdin: 'pipe',
    });
    let seen = '';
    child.stdout?.on('data', (chunk: Buffer) => (seen += chunk.toString()));
    const title = `build the image of ${NAME} \\(nix build\\)`;
    try {
      // The step's line, redrawn (carriage return, erase line) with a spinner and the time so far.
      await waitForOutput(child, () => seen, new RegExp(`\\r\\x1b\\[K${title} [|/\\\\-] \\d+\\.\\ds`));
      // nix's line was written above the live step line, which was drawn again after it.
      expect(seen).toMatch(new RegExp(`\\r\\x1b\\[Kbuilding '[^']*\\.drv'\\.\\.\\.\\r?\\n${title}`));
    } finally {
      fs.writeFileSync(hold, '');
    }
    const result = await child;
    child.stdin?.end();
    expect(result.exitCode, seen).toBe(0);
    // Ended: the live line replaced by the step's final line and its time, then a newline.
    expect(seen).toMatch(new RegExp(`\\r\\x1b\\[K${title} \\((?:\\d+\\.\\d|\\d+|\\d+m\\d\\d)s\\)\\r?\\n`));
    expect(seen).toContain(`${base}`);
    expect(seen).not.toMatch(/internal error/);
  });

  it('a terminal that cannot redraw (TERM=dumb) gets plain lines', async () => {
    const child = execa('script', ['-qfec', shellLine([process.execPath, IVM_BIN, 'build', NAME]), '/dev/null'], {
      cwd: project.root,
      env: { ...project.env, TERM: 'dumb' },
      reject: false,
      stdin: 'pipe',
    });
    const result = await child;
    expect(result.exitCode, result.stdout).toBe(0);
    // The pty turns each newline into \r\n; no other carriage return, no escape.
    expect(result.stdout).toMatch(new RegExp(`^build the image of ${NAME} \\(nix build\\)\\r\\nbuilding '`));
    expect(result.stdout.replace(/\r\n/g, '\n')).not.toMatch(CONTROL);
  });

  it('under --dry-run the plan is printed as before, and no progress is shown, even on a terminal', async () => {
    const child = execa('script', ['-qfec', shellLine([process.execPath, IVM_BIN, '--dry-run', 'destroy', NAME]), '/dev/null'], {
      cwd: project.root,
      env: project.env,
      reject: false,
      stdin: 'pipe',
    });
    const result = await child;
    expect(result.exitCode, result.stdout).toBe(0);
    expect(result.stdout).toMatch(new RegExp(`^# destroy ${NAME} \\(dry run: nothing is changed\\)`, 'm'));
    expect(result.stdout).not.toMatch(/\x1b|\[\d+\/\d+\]/);
  });
});

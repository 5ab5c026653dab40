// The runner with real processes: argv composition (HOST_CMD, SUDO, overrides), dry-run, verbose,
// typed failures, and the test suite's switches (inert without IVM_TEST_HARNESS=1).
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { appArmorHost } from '../src/core/host/apparmor.ts';
import { BadInputError, CommandFailedError, ToolMissingError } from '../src/errors.ts';
import { Runner } from '../src/host/runner.ts';
import { readSettings } from '../src/host/settings.ts';
import { createProgress } from '../src/core/progress.ts';

function runner(env: NodeJS.ProcessEnv, options: { dryRun?: boolean; uid?: number } = {}) {
  const printed: string[] = [];
  const echoed: string[] = [];
  const r = new Runner(readSettings(env, options.uid ?? 0), {
    dryRun: options.dryRun ?? false,
    verbose: true,
    print: (l) => printed.push(l),
    echo: (l) => echoed.push(l),
  });
  return { r, printed, echoed };
}

describe('runner argv', () => {
  it('prefixes HOST_CMD to every default command and SUDO to those that need root', () => {
    const { r } = runner({ HOST_CMD: 'host-spawn', SUDO: 'sudo -n' });
    expect(r.argv({ tool: 'virsh', args: ['list'], mutates: false })).toEqual(['host-spawn', 'sudo', '-n', 'env', 'LC_ALL=C', 'virsh', 'list']);
    expect(r.argv({ tool: 'nix', args: ['eval'], mutates: false })).toEqual(['host-spawn', 'nix', 'eval']);
    expect(r.argv({ tool: 'readlink', args: ['-f', 'x'], mutates: false })).toEqual(['host-spawn', 'readlink', '-f', 'x']);
  });

  it('defaults SUDO to sudo when not root and to nothing when root; SUDO="" disables it', () => {
    expect(runner({}, { uid: 1000 }).r.argv({ tool: 'qemu-img', args: [], mutates: true })).toEqual(['sudo', 'qemu-img']);
    expect(runner({}, { uid: 0 }).r.argv({ tool: 'qemu-img', args: [], mutates: true })).toEqual(['qemu-img']);
    expect(runner({ SUDO: '' }, { uid: 1000 }).r.argv({ tool: 'qemu-img', args: [], mutates: true })).toEqual(['qemu-img']);
  });

  it('names the LIBGUESTFS_* variables before the program of a GUESTFISH override with a prefix', () => {
    const { r } = runner({ GUESTFISH: 'sudo guestfish', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' });
    expect(r.argv({ tool: 'guestfish', args: ['-x'], mutates: true })).toEqual([
      'sudo',
      'env',
      'LIBGUESTFS_BACKEND=direct',
      'LIBGUESTFS_BACKEND_SETTINGS=force_tcg',
      'guestfish',
      '-x',
    ]);
    expect(runner({ GUESTFISH: '/opt/guestfish' }).r.argv({ tool: 'guestfish', args: [], mutates: true })).toEqual(['/opt/guestfish']);
  });

  it('names the LIBGUESTFS_* variables right before the program of a GUESTFISH override, not after its flags', () => {
    const env = { LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };
    const vars = ['env', 'LIBGUESTFS_BACKEND=direct', 'LIBGUESTFS_BACKEND_SETTINGS=force_tcg'];
    const argv = (guestfish: string) => runner({ ...env, GUESTFISH: guestfish }).r.argv({ tool: 'guestfish', args: ['-x'], mutates: true });
    expect(argv('sudo guestfish --verbose')).toEqual(['sudo', ...vars, 'guestfish', '--verbose', '-x']);
    expect(argv('sudo -u root /opt/bin/guestfish --verbose -v')).toEqual(['sudo', '-u', 'root', ...vars, '/opt/bin/guestfish', '--verbose', '-v', '-x']);
    // The program first: no prefix to drop the environment, which reaches it through execa.
    expect(argv('guestfish --verbose')).toEqual(['guestfish', '--verbose', '-x']);
    expect(argv('my-wrapper --flag')).toEqual(['my-wrapper', '--flag', '-x']);
  });

  it('runs virsh in the C locale through HOST_CMD too (its states are parsed), but not an interactive console', () => {
    const { r } = runner({ HOST_CMD: 'host-spawn', SUDO: 'sudo' });
    expect(r.argv({ tool: 'virsh', args: ['list'], mutates: false })).toEqual(['host-spawn', 'sudo', 'env', 'LC_ALL=C', 'virsh', 'list']);
    expect(r.argv({ tool: 'virsh', args: ['console', 'web'], mutates: false, interactive: true })).toEqual(['host-spawn', 'sudo', 'virsh', 'console', 'web']);
    // sudo alone keeps LC_ALL (set for the process): the line stays as a user would type it.
    expect(runner({ SUDO: 'sudo' }).r.argv({ tool: 'virsh', args: ['list'], mutates: false })).toEqual(['sudo', 'virsh', 'list']);
  });

  it('uses an override verbatim, words and all', () => {
    const { r } = runner({ HOST_CMD: 'host-spawn', VIRSH: 'sudo virsh', QEMU_IMG: '/opt/qemu/bin/qemu-img' });
    expect(r.argv({ tool: 'virsh', args: ['list'], mutates: false })).toEqual(['sudo', 'virsh', 'list']);
    expect(r.argv({ tool: 'qemu-img', args: ['info'], mutates: false })).toEqual(['/opt/qemu/bin/qemu-img', 'info']);
  });

  it('names the LIBGUESTFS_* and SUPERMIN_* variables on the command line when sudo or HOST_CMD would drop them', () => {
    const { r } = runner({ SUDO: 'sudo', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg', SUPERMIN_KERNEL: '/k/vmlinuz' });
    expect(r.argv({ tool: 'guestfish', args: [], mutates: true })).toEqual([
      'sudo',
      'env',
      'LIBGUESTFS_BACKEND=direct',
      'LIBGUESTFS_BACKEND_SETTINGS=force_tcg',
      'SUPERMIN_KERNEL=/k/vmlinuz',
      'guestfish',
    ]);
    expect(runner({ LIBGUESTFS_BACKEND: 'libvirt' }).r.settings.guestfsEnv.LIBGUESTFS_BACKEND).toBe('libvirt');
  });
});

describe('runner execution (real processes)', () => {
  it('--dry-run prints mutations as shell lines and still runs queries', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-runner-'));
    const target = path.join(dir, "it's here");
    const { r, printed } = runner({}, { dryRun: true });
    const made = await r.run({ tool: 'mkdir', args: ['-p', target], mutates: true });
    expect(made.skipped).toBe(true);
    expect(printed).toEqual([`mkdir -p '${dir}/it'\\''s here'`]);
    expect(fs.existsSync(target)).toBe(false);
    const read = await r.run({ tool: 'readlink', args: ['-f', dir], mutates: false });
    expect(read.skipped).toBe(false);
    expect(read.stdout.trim()).toBe(fs.realpathSync(dir));
    fs.rmSync(dir, { recursive: true });
  });

  it('--verbose echoes each command, with its standard input as a here-document', async () => {
    const { r, echoed } = runner({});
    await r.run({ tool: 'readlink', args: ['-f', '/'], mutates: false, input: 'a\nb' });
    expect(echoed).toEqual([`readlink -f / <<'IVM_EOF'\na\nb\nIVM_EOF`]);
  });

  it('takes a program\'s own exit code 127 for a failure, not for a missing tool', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-127-'));
    const script = path.join(dir, 'ssh-like');
    fs.writeFileSync(script, '#!/bin/sh\necho "bash: frobnicate: command not found" >&2\nexit 127\n', { mode: 0o755 });
    const { r } = runner({ SSH: script });
    const result = await r.run({ tool: 'ssh', args: [], mutates: false }, { allowFailure: true });
    expect(result.exitCode).toBe(127);
    fs.rmSync(dir, { recursive: true });
  });

  it('turns a failure into an error naming the command, exit code and stderr', async () => {
    const { r } = runner({});
    const error = await r.run({ tool: 'cp', args: ['/nonexistent/a', '/nonexistent/b'], mutates: true }).catch((e) => e);
    expect(error).toBeInstanceOf(CommandFailedError);
    expect(error.message).toMatch(/^command failed \(exit 1\): cp \/nonexistent\/a \/nonexistent\/b\n  cp: cannot stat/);
  });

  it('says which package provides a missing tool', async () => {
    const { r } = runner({ HOST_CMD: '' });
    const saved = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      const error = await r.run({ tool: 'guestfish', args: [], mutates: true }).catch((e) => e);
      expect(error).toBeInstanceOf(ToolMissingError);
      expect(error.message).toBe('guestfish: command not found');
      expect(error.hint).toContain('apt install libguestfs-tools');
    } finally {
      process.env.PATH = saved;
    }
  });

  it('reports a missing program behind a prefix such as sudo or env (exit 127)', async () => {
    const { r } = runner({ HOST_CMD: '/usr/bin/env' });
    const saved = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      const error = await r.run({ tool: 'qemu-img', args: ['info'], mutates: false }).catch((e) => e);
      expect(error).toBeInstanceOf(ToolMissingError);
      expect(error.message).toBe('qemu-img: command not found');
      expect(error.hint).toContain('apt install qemu-utils');
    } finally {
      process.env.PATH = saved;
    }
  });

  describe('sessions: one guestfish process, several batches (no appliance: echo and errors need no launch)', () => {
    it('answers each batch, prints change batches under --dry-run, and reports how guestfish ended', async () => {
      const { r, printed, echoed } = runner({}, { dryRun: true });
      const session = r.startSession({ tool: 'guestfish', args: ['--no-progress-bars'], mutates: false });
      expect(await session.send(['echo one', 'echo two'])).toBe('one\ntwo\n');
      expect(await session.send(['mkdir /never'], { mutates: true })).toBe('');
      expect(printed).toEqual([`guestfish --no-progress-bars <<'IVM_EOF'\necho one\necho two\nmkdir /never\nIVM_EOF`]);
      expect(echoed).toEqual(['guestfish --no-progress-bars (session)', 'guestfish> echo one', 'guestfish> echo two']);
      expect(await session.send(['echo three'])).toBe('three\n');
      await session.close();

      const failing = runner({}).r.startSession({ tool: 'guestfish', args: ['--no-progress-bars'], mutates: false });
      const error = await failing.send(['cat /etc/hostname']).catch((e) => e);
      expect(error).toBeInstanceOf(CommandFailedError);
      expect(error.message).toMatch(/^command failed \(exit 1\): guestfish --no-progress-bars\n  .*call launch before using this function/);
    });

    it('GUESTFISH with flags after the program: the flags and the LIBGUESTFS_* variables reach guestfish', async () => {
      // `env -i` drops the environment as sudo does: the backend must come on the command line.
      // (get-verbose and get-backend answer without a launch.)
      const env = { LIBGUESTFS_BACKEND: 'libvirt' };
      const prefixed = runner({ ...env, GUESTFISH: 'env -i guestfish --verbose' }).r;
      expect(prefixed.argv({ tool: 'guestfish', args: [], mutates: false })).toEqual(['env', '-i', 'env', 'LIBGUESTFS_BACKEND=libvirt', 'guestfish', '--verbose']);
      const session = prefixed.startSession({ tool: 'guestfish', args: ['--no-progress-bars'], mutates: false });
      expect(await session.send(['get-verbose', 'get-backend'])).toBe('true\nlibvirt\n');
      await session.close();
      // One word and its flags, no prefix: the variables come through the environment.
      const plain = runner({ ...env, GUESTFISH: 'guestfish --verbose' }).r;
      const result = await plain.run({ tool: 'guestfish', args: ['--no-progress-bars'], mutates: false, input: 'get-verbose\nget-backend\n' });
      expect(result.stdout).toBe('true\nlibvirt\n');
    });

    it('with SUDO=sudo (real sudo, which drops the environment), the LIBGUESTFS_* variables still reach guestfish', async () => {
      const { r } = runner({ SUDO: 'sudo', LIBGUESTFS_BACKEND: 'libvirt' }, { uid: 1000 });
      expect(r.argv({ tool: 'guestfish', args: [], mutates: false })).toEqual(['sudo', 'env', 'LIBGUESTFS_BACKEND=libvirt', 'guestfish']);
      const session = r.startSession({ tool: 'guestfish', args: ['--no-progress-bars'], mutates: false });
      expect(await session.send(['get-backend'])).toBe('libvirt\n');
      await session.close();
    });

    it('says which package provides a missing program', async () => {
      const saved = process.env.PATH;
      process.env.PATH = '/nonexistent';
      try {
        const session = runner({}).r.startSession({ tool: 'guestfish', args: [], mutates: false });
        const error = await session.send(['run']).catch((e) => e);
        expect(error).toBeInstanceOf(ToolMissingError);
        expect(error.hint).toContain('apt install libguestfs-tools');
      } finally {
        process.env.PATH = saved;
      }
    });

    it('says which package provides a program missing behind a prefix (HOST_CMD, SUDO: exit 127)', async () => {
      // A PATH with env but no guestfish: the prefix starts, and reports the program missing.
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-noguestfish-'));
      fs.symlinkSync('/usr/bin/env', path.join(dir, 'env'));
      const saved = process.env.PATH;
      process.env.PATH = dir;
      try {
        const session = runner({ HOST_CMD: '/usr/bin/env' }).r.startSession({ tool: 'guestfish', args: [], mutates: false });
        const error = await session.send(['run']).catch((e) => e);
        expect(error).toBeInstanceOf(ToolMissingError);
        expect(error.message).toBe('guestfish: command not found');
        expect(error.hint).toContain('apt install libguestfs-tools');
      } finally {
        process.env.PATH = saved;
        fs.rmSync(dir, { recursive: true });
      }
    });
  });
});

describe('the test suite\'s switches are inert without IVM_TEST_HARNESS=1', () => {
  it('reads IVM_TEST_FAULT_KILL_AT and IVM_TEST_SYSROOT only with the harness switch, and never the old names', () => {
    const off = { faultKillAt: undefined, sysroot: undefined };
    expect(readSettings({ IVM_TEST_FAULT_KILL_AT: '2', IVM_TEST_SYSROOT: '/r' }).testing).toEqual(off);
    expect(readSettings({ IVM_TEST_HARNESS: 'yes', IVM_TEST_FAULT_KILL_AT: '2' }).testing).toEqual(off);
    expect(readSettings({ IVM_TEST_HARNESS: '1', IVM_FAULT_KILL_AT: '2', IVM_SYSROOT: '/r' }).testing).toEqual(off);
    expect(readSettings({ IVM_TEST_HARNESS: '1', IVM_TEST_FAULT_KILL_AT: '2', IVM_TEST_SYSROOT: '/r' }).testing).toEqual({ faultKillAt: 2, sysroot: '/r' });
    expect(() => readSettings({ IVM_TEST_HARNESS: '1', IVM_TEST_FAULT_KILL_AT: 'two' })).toThrow(BadInputError);
    expect(appArmorHost({ IVM_TEST_SYSROOT: '/r', IVM_SYSROOT: '/r' }).dir).toBe('/etc/apparmor.d');
    expect(appArmorHost({ IVM_TEST_HARNESS: '1', IVM_TEST_SYSROOT: '/r' })).toEqual({ dir: '/r/etc/apparmor.d', enabledFile: '/r/sys/module/apparmor/parameters/enabled' });
  });

  it('kills ivm before its N-th change only with the harness switch (real processes)', async () => {
    // A runner in a child process making three changes (mkdir 1, 2, 3).
    const repo = new URL('..', import.meta.url);
    const script = `
      import { register } from 'tsx/esm/api';
      register();
      const { Runner } = await import(${JSON.stringify(new URL('src/host/runner.ts', repo).href)});
      const { readSettings } = await import(${JSON.stringify(new URL('src/host/settings.ts', repo).href)});
      const runner = new Runner(readSettings(), { dryRun: false, verbose: false });
      for (const n of ['1', '2', '3']) await runner.run({ tool: 'mkdir', args: [process.argv[1] + '/' + n], mutates: true });
    `;
    const changes = async (env: Record<string, string>) => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-fault-'));
      const child = await execa(process.execPath, ['--input-type=module', '-e', script, dir], {
        cwd: fileURLToPath(repo),
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', SUDO: '', ...env },
        extendEnv: false,
        reject: false,
      });
      const made = fs.readdirSync(dir).sort();
      fs.rmSync(dir, { recursive: true });
      return { signal: child.signal ?? null, exitCode: child.exitCode, made, stderr: child.stderr };
    };
    expect(await changes({ IVM_TEST_FAULT_KILL_AT: '2' })).toMatchObject({ signal: null, exitCode: 0, made: ['1', '2', '3'] });
    expect(await changes({ IVM_FAULT_KILL_AT: '2' })).toMatchObject({ signal: null, exitCode: 0, made: ['1', '2', '3'] });
    expect(await changes({ IVM_TEST_HARNESS: '1', IVM_FAULT_KILL_AT: '2' })).toMatchObject({ signal: null, exitCode: 0, made: ['1', '2', '3'] });
    expect(await changes({ IVM_TEST_HARNESS: '1', IVM_TEST_FAULT_KILL_AT: '2' })).toMatchObject({ signal: 'SIGKILL', made: ['1'] });
  });
});

describe('runner: a command whose stderr is streamed (streamStderr, for nix build; real processes)', () => {
  /**
   * A program in NIX's place that reports on stderr, then waits until the file `hold` exists (the
   * test makes it once it has seen the report; at most 20 s), then prints more, its JSON on stdout,
   * and exits with `rc`.
   */
  const program = (dir: string, hold: string, rc: number) => {
    const file = path.join(dir, 'nix-like');
    fs.writeFileSync(
      file,
      [
        '#!/bin/sh',
        "echo \"building '/nix/store/x.drv'...\" >&2",
        `n=0; while [ ! -e '${hold}' ] && [ $n -lt 400 ]; do sleep 0.05; n=$((n + 1)); done`,
        'i=1; while [ $i -le 40 ]; do echo "log line $i" >&2; i=$((i + 1)); done',
        'echo \'[{"outputs":{"out":"/nix/store/x"}}]\'',
        `exit ${rc}`,
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    return file;
  };

  const streaming = (dir: string, hold: string, rc = 0, quiet = false) => {
    const shown: string[] = [];
    let written = '';
    const progress = createProgress({ quiet, tty: false, write: (text) => (written += text) });
    const r = new Runner(readSettings({ NIX: program(dir, hold, rc) }, 0), {
      dryRun: false,
      verbose: false,
      progress: { ...progress, commandOutput: (line) => (shown.push(line), progress.commandOutput(line)) },
    });
    return { r, shown, written: () => written };
  };

  it('shows each stderr line as it comes, while the command runs; stdout is captured as always', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-stream-'));
    const hold = path.join(dir, 'hold');
    const { r, shown, written } = streaming(dir, hold);
    const running = r.run({ tool: 'nix', args: ['build'], mutates: true, streamStderr: true });
    // The program waits for the hold file: the line can only have come while it runs.
    for (let waited = 0; !shown.includes("building '/nix/store/x.drv'..."); waited += 20) {
      if (waited > 20_000) throw new Error(`nothing streamed: ${JSON.stringify(shown)}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(written()).toBe("building '/nix/store/x.drv'...\n");
    fs.writeFileSync(hold, '');
    const result = await running;
    expect(result.exitCode).toBe(0);
    expect(result.stdout).toBe('[{"outputs":{"out":"/nix/store/x"}}]\n');
    expect(shown).toHaveLength(41);
    expect(written().split('\n')).toHaveLength(42);
    // Not buffered whole: the first lines and the last ones are kept.
    expect(result.stderr.split('\n')).toEqual(["building '/nix/store/x.drv'...", 'log line 1', 'log line 2', '...', ...Array.from({ length: 20 }, (_, i) => `log line ${i + 21}`)]);
    fs.rmSync(dir, { recursive: true });
  });

  it('a failure still names the command with the last lines of its stderr; --quiet shows none of it', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-stream-'));
    const hold = path.join(dir, 'hold');
    fs.writeFileSync(hold, '');
    const { r, shown, written } = streaming(dir, hold, 3, true);
    const error = await r.run({ tool: 'nix', args: ['build'], mutates: true, streamStderr: true }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(CommandFailedError);
    expect((error as Error).message).toBe(
      `command failed (exit 3): ${path.join(dir, 'nix-like')} build\n${Array.from({ length: 8 }, (_, i) => `  log line ${i + 33}`).join('\n')}`,
    );
    expect(shown).toHaveLength(41);
    expect(written()).toBe('');
    fs.rmSync(dir, { recursive: true });
  });

  it('without streamStderr, nothing is shown and stderr is kept whole, as before', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-stream-'));
    const hold = path.join(dir, 'hold');
    fs.writeFileSync(hold, '');
    const { r, shown, written } = streaming(dir, hold);
    const result = await r.run({ tool: 'nix', args: ['build'], mutates: true });
    expect(shown).toEqual([]);
    expect(written()).toBe('');
    expect(result.stderr.split('\n')).toHaveLength(42);
    fs.rmSync(dir, { recursive: true });
  });
});

describe('fixes from a review of the hardening (real processes)', () => {
  it('with HOST_CMD, a file\'s kind is asked of the host in words that do not depend on its language', async () => {
    const { hostFile } = await import('../src/core/disks/vm-files.ts');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-hostfile-'));
    fs.writeFileSync(path.join(dir, 'f'), 'x');
    fs.writeFileSync(path.join(dir, 'empty'), '');
    fs.symlinkSync(path.join(dir, 'f'), path.join(dir, 'l'));
    const { r } = runner({ HOST_CMD: 'env LANG=de_DE.UTF-8 LC_ALL=de_DE.UTF-8', SUDO: '' });
    expect((await hostFile(r, path.join(dir, 'f'))).kind).toBe('file');
    expect((await hostFile(r, path.join(dir, 'empty'))).kind).toBe('file');
    expect((await hostFile(r, dir)).kind).toBe('folder');
    expect((await hostFile(r, path.join(dir, 'l'))).kind).toBe('link');
    expect((await hostFile(r, path.join(dir, 'missing'))).kind).toBe('missing');
    expect((await hostFile(r, path.join(dir, 'f'))).id).toMatch(/^\d+:\d+$/);
    fs.rmSync(dir, { recursive: true });
  });
  it('a session whose program does not exit after its input ends is stopped within the time limit, not waited on forever', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-stuck-'));
    const stuck = path.join(dir, 'stuck-guestfish');
    fs.writeFileSync(stuck, '#!/bin/sh\nexec sleep 60\n', { mode: 0o755 });
    const { r } = runner({ GUESTFISH: stuck });
    const session = r.startSession({ tool: 'guestfish', args: [], mutates: false }, 1000);
    const started = Date.now();
    await expect(session.close()).rejects.toThrow(/did not exit within 1 s after its last batch; it was stopped/);
    expect(Date.now() - started).toBeLessThan(10_000);
    fs.rmSync(dir, { recursive: true });
  });
});

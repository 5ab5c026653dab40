// `ivm completion bash|zsh|fish`, run for real: each shell sources the script ivm prints and
// completes a verb, an option of a verb and a machine name (asked of ivm at completion time, in the
// project around the working directory); the verbs and options are those of `ivm --help`.
import { execa } from 'execa';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IVM_BIN, makeTestProject, testMeta, type TestProject } from './support/ivm.ts';

let project: TestProject;

beforeAll(async () => {
  project = await makeTestProject('ivm-completion-');
  project.addMachine('alpha', testMeta());
  project.addMachine('beta-1', testMeta());
});

afterAll(async () => {
  await project.remove();
});

async function script(shell: string): Promise<string> {
  const r = await project.ivm(['completion', shell]);
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout;
}

/** Completes `line` (the words typed so far; a trailing blank starts a new word) in bash. */
async function bash(line: string): Promise<string[]> {
  const r = await execa(
    'bash',
    [
      '-c',
      'source <("$0" "$1" completion bash) || exit 9; read -ra COMP_WORDS <<<"$2"; [[ $2 == *" " ]] && COMP_WORDS+=(""); ' +
        'COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _ivm; printf "%s\\n" "${COMPREPLY[@]}"',
      process.execPath,
      IVM_BIN,
      line,
    ],
    { cwd: project.root, env: project.env },
  );
  return r.stdout.split('\n').filter(Boolean);
}

/** The same in zsh, with compadd and compdef stood in for (they need a live completion widget). */
async function zsh(file: string, line: string): Promise<string[]> {
  const r = await execa(
    'zsh',
    [
      '-f',
      '-c',
      'compdef() { :; }; compadd() { [[ $1 == -- ]] && shift; print -rl -- "${(M)@:#${PREFIX}*}"; }; source "$0" || exit 9; ' +
        'words=(${=1}); [[ $1 == *" " ]] && words+=(""); CURRENT=${#words}; PREFIX=${words[CURRENT]}; _ivm',
      file,
      line,
    ],
    { cwd: project.root, env: project.env },
  );
  return r.stdout.split('\n').filter(Boolean);
}

/** fish completes a command line itself (`complete -C`). */
async function fish(file: string, line: string): Promise<string[]> {
  const r = await execa('fish', ['--no-config', '-c', 'source $argv[1]; or exit 9; complete -C $argv[2]', file, line], {
    cwd: project.root,
    env: project.env,
  });
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!);
}

/** The verbs `ivm --help` lists. */
async function helpVerbs(): Promise<string[]> {
  const help = (await project.ivm(['--help'])).stdout;
  const commands = help.slice(help.indexOf('Commands:'), help.indexOf('Environment'));
  return [...commands.matchAll(/^ {2}([a-z][a-z-]*)/gm)].map((m) => m[1]!);
}

describe('ivm completion', () => {
  it('--machines lists the machines of the project around the working directory, and nothing elsewhere', async () => {
    const r = await project.ivm(['completion', '--machines']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe('alpha\nbeta-1');
    const outside = await execa(process.execPath, [IVM_BIN, 'completion', '--machines'], { cwd: '/', env: { IVM_ROOT: '' }, reject: false });
    expect(outside.exitCode).toBe(0);
    expect(outside.stdout).toBe('');
  });

  it('without a shell, or with another one, is bad input (exit 2)', async () => {
    const none = await project.ivm(['completion']);
    expect(none.exitCode).toBe(2);
    expect(none.stderr).toContain('name the shell: bash, zsh, fish');
    const other = await project.ivm(['completion', 'tcsh']);
    expect(other.exitCode).toBe(2);
    expect(other.stderr).toMatch(/Allowed choices are bash, zsh, fish/);
  });

  it('bash: completes verbs, options of a verb and machine names', async () => {
    expect(await bash('ivm cr')).toEqual(['create']);
    expect(await bash('ivm create --s')).toEqual(['--start']);
    expect(await bash('ivm create --no')).toEqual(['--no-build']);
    expect(await bash('ivm create a')).toEqual(['alpha']);
    expect(await bash('ivm --dry-run upgrade b')).toEqual(['beta-1']);
    // Nested commands, option values and a second argument.
    expect(await bash('ivm net ')).toEqual(['create', 'list', 'destroy', 'reserve', 'help']);
    expect(await bash('ivm net reserve ')).toEqual(['alpha', 'beta-1']);
    expect(await bash('ivm net create ')).toEqual([]);
    expect(await bash('ivm stop -t ')).toEqual([]);
    expect(await bash('ivm stop -t 5 a')).toEqual(['alpha']);
    expect(await bash('ivm start alpha ')).toEqual([]);
    expect(await bash('ivm xml alpha ')).toEqual(['alpha', 'beta-1']);
    expect(await bash('ivm ssh alpha -- ')).toEqual([]);
    expect(await bash('ivm help cr')).toEqual(['create']);
  });

  it('bash: the verbs and options are those of the commander program (ivm --help), not a list of its own', async () => {
    const verbs = await helpVerbs();
    expect(verbs).toEqual(expect.arrayContaining(['create', 'upgrade', 'net', 'completion', 'help']));
    expect((await bash('ivm ')).filter((w) => !['alpha', 'beta-1'].includes(w))).toEqual(verbs);
    const upgradeHelp = (await project.ivm(['upgrade', '--help'])).stdout;
    const upgradeFlags = [...upgradeHelp.matchAll(/(?<![\w-])(--?[a-z][a-z-]*)/g)].map((m) => m[1]!);
    const completed = await bash('ivm upgrade -');
    for (const flag of new Set(upgradeFlags)) expect(completed).toContain(flag);
    // Global options count after a verb too; the hidden --machines is never offered.
    expect(completed).toEqual(expect.arrayContaining(['--dry-run', '-n', '--verbose']));
    expect(await bash('ivm completion --')).not.toContain('--machines');
  });

  it('zsh: the script is valid and completes the same way', async () => {
    const file = path.join(project.root, 'ivm.zsh');
    await execa('sh', ['-c', 'cat > "$0"', file], { input: await script('zsh') });
    await execa('zsh', ['-n', file]);
    expect(await zsh(file, 'ivm cr')).toEqual(['create']);
    expect(await zsh(file, 'ivm create --s')).toEqual(['--start']);
    expect(await zsh(file, 'ivm create a')).toEqual(['alpha']);
    expect(await zsh(file, 'ivm net reserve ')).toEqual(['alpha', 'beta-1']);
  });

  it('fish: the script is valid and completes the same way', async () => {
    const file = path.join(project.root, 'ivm.fish');
    await execa('sh', ['-c', 'cat > "$0"', file], { input: await script('fish') });
    await execa('fish', ['--no-execute', file]);
    expect(await fish(file, 'ivm cr')).toEqual(['create']);
    expect(await fish(file, 'ivm create --s')).toEqual(['--start']);
    expect(await fish(file, 'ivm create a')).toEqual(['alpha']);
    expect(await fish(file, 'ivm net reserve ')).toEqual(['alpha', 'beta-1']);
  });
});

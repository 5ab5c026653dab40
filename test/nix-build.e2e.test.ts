// ivm build with the REAL nix (Debian's nix 2.8 here), no stand-in nix: the project's own flake
// (the files git tracks of flake.nix, flake.lock, identity-files.json, modules/ and machines/,
// copied into a scratch git work tree, as ivm builds a git flake) is built by `nix build` exactly
// as ivm runs it: its flags, its git+file flake reference, and the JSON nix prints.
//
// What cannot be real offline is nixpkgs (fetching it and building NixOS needs the internet), so
// the copy's flake.lock pins the `nixpkgs` input to a stand-in, test/nix/stub-nixpkgs-image, whose
// `lib.nixosSystem` gives each machine an image derivation that really builds: a folder holding
// one ivm.qcow2, a copy of the stand-in UEFI image. TEST-ONLY STEP: the lock is written by the
// test with `nix flake lock --override-input nixpkgs path:...` in the copy, so that ivm's own
// command is unchanged (no override flag in ivm).
//
// The builds go to a scratch Nix store (NIX_STORE_DIR, NIX_STATE_DIR, NIX_LOG_DIR, and nix's caches
// and configuration folders in the scratch folder), never the machine's /nix. NIX_CONFIG only
// makes building possible here: `build-users-group =` (root builds without nixbld users),
// `sandbox = false` (the stub's builder is the host's /bin/sh, cp and mkdir), `substituters =`
// (no binary cache: no internet). It does not enable flakes: ivm passes
// --extra-experimental-features itself, and this shows it.
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { IvmError } from '../src/errors.ts';
import { buildOutPath } from '../src/host/nix.ts';
import { IVM_BIN } from './support/ivm.ts';
import { makeScratchDir } from './support/libvirt.ts';
import { buildStandinImage, repoRoot, sha256File } from './support/standin.ts';

const FLAKE_FILES = ['flake.nix', 'flake.lock', 'identity-files.json', 'modules', 'machines', '.gitignore'];
const FEATURES = ['--extra-experimental-features', 'nix-command flakes'];
const installable = (project: string, name: string) => `git+file://${project}#nixosConfigurations.${name}.config.system.build.ivmImage`;

describe('what nix build --json prints (nix 2.8 and later)', () => {
  it('gives the out path of the single result; extra fields are ignored', () => {
    // Exactly what Debian's nix 2.8 printed for a one-output derivation.
    const nix28 = '[{"drvPath":"/nix/store/kd75arv8i3dnrfm47x0yma69y2937mbw-x.drv","outputs":{"out":"/nix/store/bl4acwamjz0zfyximjms1blfqg2q5kwm-x"}}]\n';
    expect(buildOutPath(nix28)).toBe('/nix/store/bl4acwamjz0zfyximjms1blfqg2q5kwm-x');
    const later = '[{"drvPath":"/nix/store/a-x.drv","outputs":{"out":"/nix/store/b-x"},"startTime":1,"stopTime":2}]';
    expect(buildOutPath(later)).toBe('/nix/store/b-x');
  });

  it.each([
    ['', /printed nothing: not JSON/],
    ['/nix/store/b-x\n', /printed "\/nix\/store\/b-x": not JSON/],
    ['{"outputs":{"out":"/nix/store/b-x"}}', /not a list/],
    ['[]', /0 results, not one/],
    ['[{"outputs":{"out":"/a"}},{"outputs":{"out":"/b"}}]', /2 results, not one/],
    ['[null]', /no absolute path at outputs\.out/],
    ['[{"drvPath":"/nix/store/a.drv","outputs":{"dev":"/nix/store/b-dev"}}]', /no absolute path at outputs\.out/],
    ['[{"outputs":{"out":"relative/b-x"}}]', /no absolute path at outputs\.out/],
  ])('%j is an IvmError naming what was expected', (stdout, why) => {
    let error: unknown;
    try {
      buildOutPath(stdout);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(IvmError);
    expect((error as Error).message).toMatch(why);
    expect((error as Error).message).toContain('expected [{"drvPath": "...", "outputs": {"out": "/nix/store/..."}}]');
  });
});

describe('ivm build with the real nix (the project flake, a stand-in nixpkgs, a scratch store)', () => {
  let scratch: string;
  let project: string;
  let baseDir: string;
  let storeDir: string;
  let standinSha: string;
  /** The environment of every nix and ivm run here: the caller's, without NIX and the scratch store. */
  let env: Record<string, string>;

  const nix = async (args: string[]): Promise<string> => {
    const r = await execa('nix', [...FEATURES, ...args], { cwd: project, env, extendEnv: false, reject: false });
    if (r.exitCode !== 0) throw new Error(`nix ${args.join(' ')} failed (${r.exitCode}):\n${r.stderr}`);
    return r.stdout;
  };
  const ivm = async (args: string[], extra: Record<string, string> = {}) => {
    const r = await execa(process.execPath, [IVM_BIN, ...args], { cwd: project, env: { ...env, ...extra }, extendEnv: false, reject: false, stdin: 'ignore' });
    return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
  };
  /** The image's store path, evaluated by nix itself (not through ivm). */
  const outPathOf = async (name: string): Promise<string> => nix(['eval', '--raw', `${installable(project, name)}.outPath`]);

  beforeAll(async () => {
    scratch = await makeScratchDir('ivm-nix-build-');
    project = path.join(scratch, 'project');
    baseDir = path.join(scratch, 'base-images');
    const nixDir = path.join(scratch, 'nix');
    storeDir = path.join(nixDir, 'store');
    env = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (value !== undefined && !/^(NIX|NIX_.*|IVM_.*|XDG_.*)$/.test(key)) env[key] = value;
    }
    Object.assign(env, {
      NIX_STORE_DIR: storeDir,
      NIX_STATE_DIR: path.join(nixDir, 'var'),
      NIX_LOG_DIR: path.join(nixDir, 'log'),
      NIX_CONF_DIR: path.join(nixDir, 'etc'),
      XDG_CACHE_HOME: path.join(scratch, 'cache'),
      XDG_CONFIG_HOME: path.join(scratch, 'config'),
      XDG_DATA_HOME: path.join(scratch, 'data'),
      XDG_STATE_HOME: path.join(scratch, 'state'),
      NIX_CONFIG: 'build-users-group =\nsandbox = false\nsubstituters =',
      IVM_BASE_DIR: baseDir,
      IVM_VM_DIR: path.join(scratch, 'images'),
    });
    fs.mkdirSync(env.NIX_CONF_DIR!, { recursive: true });

    // The flake as git sees it in this checkout: tracked files only, in a fresh work tree.
    const tracked = (await execa('git', ['ls-files', '-z', '--', ...FLAKE_FILES], { cwd: repoRoot })).stdout.split('\0').filter(Boolean);
    for (const file of tracked) {
      if (!fs.existsSync(path.join(repoRoot, file))) continue; // deleted in the work tree
      fs.mkdirSync(path.dirname(path.join(project, file)), { recursive: true });
      fs.copyFileSync(path.join(repoRoot, file), path.join(project, file));
    }
    expect(tracked).toEqual(expect.arrayContaining(['flake.nix', 'flake.lock', 'machines/web/meta.nix', 'machines/default/default.nix']));
    // A host private key, git-ignored as `ivm identity` makes it: it must never reach the store.
    fs.writeFileSync(path.join(project, 'machines', 'web', 'ssh_host_ed25519_key'), 'IVM-TEST-PRIVATE-KEY\n', { mode: 0o600 });
    await execa('git', ['init', '-q', project]);
    await execa('git', ['add', '-A'], { cwd: project });

    // The stand-in nixpkgs, with the stand-in image beside its flake.nix.
    const nixpkgs = path.join(scratch, 'nixpkgs');
    fs.mkdirSync(nixpkgs);
    fs.copyFileSync(path.join(repoRoot, 'test', 'nix', 'stub-nixpkgs-image', 'flake.nix'), path.join(nixpkgs, 'flake.nix'));
    standinSha = await sha256File(await buildStandinImage(nixpkgs));

    // TEST-ONLY: pin nixpkgs to the stand-in in the copy's lock file (see the header).
    await nix(['flake', 'lock', '--override-input', 'nixpkgs', `path:${nixpkgs}`]);
    const lock = JSON.parse(fs.readFileSync(path.join(project, 'flake.lock'), 'utf8')) as { nodes: { nixpkgs: { locked: { type: string; path: string } } } };
    expect(lock.nodes.nixpkgs.locked).toMatchObject({ type: 'path', path: nixpkgs });
  });

  afterAll(async () => {
    if (scratch) {
      // The scratch store is read-only, as a store is.
      await execa('chmod', ['-R', 'u+w', scratch], { reject: false });
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  });

  it('--dry-run prints the nix build with the flags nix 2.8 knows, and builds nothing', async () => {
    const r = await ivm(['--dry-run', 'build', 'web']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`nix build --extra-experimental-features 'nix-command flakes' '${installable(project, 'web')}' --json --no-link`);
    expect(r.stdout).not.toContain('--print-out-paths');
    expect(fs.existsSync(storeDir) ? fs.readdirSync(storeDir).filter((f) => f.endsWith('-ivm-image-standin')) : []).toEqual([]);
  });

  it('builds the machine with the real nix and installs it once, read-only, named after the store path', async () => {
    const outPath = await outPathOf('web');
    expect(path.dirname(outPath)).toBe(storeDir);
    expect(fs.existsSync(outPath)).toBe(false);

    const r = await ivm(['--verbose', 'build', 'web']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
    // The real command line, as nix 2.8 accepted it.
    expect(r.stderr).toContain(`+ nix build --extra-experimental-features 'nix-command flakes' '${installable(project, 'web')}' --json --no-link\n`);
    const base = path.join(baseDir, `${path.basename(outPath)}.qcow2`);
    expect(r.stdout.trim()).toBe(base);

    // What nix built: the layout of the real image's output.
    expect(fs.readdirSync(outPath).sort()).toEqual(['ivm.qcow2', 'nix-support']);
    const st = fs.statSync(base);
    expect(st.isFile()).toBe(true);
    expect(st.mode & 0o7777).toBe(0o444);
    expect(await sha256File(base)).toBe(standinSha);
    expect(fs.readdirSync(baseDir)).toEqual([path.basename(base)]);
    expect(JSON.parse(fs.readFileSync(path.join(project, '.ivm', 'web.json'), 'utf8'))).toEqual({ storePath: outPath, base });
    // --no-link: no ./result in the project.
    expect(fs.existsSync(path.join(project, 'result'))).toBe(false);
    // A git flake: the git-ignored host key stayed out of the store.
    const leaked = await execa('grep', ['-rl', 'IVM-TEST-PRIVATE-KEY', storeDir], { reject: false });
    expect(leaked.stdout).toBe('');
    expect(leaked.exitCode).toBe(1);
  });

  it('a second build copies nothing', async () => {
    const base = path.join(baseDir, `${path.basename(await outPathOf('web'))}.qcow2`);
    const before = fs.statSync(base);
    const again = await ivm(['--verbose', 'build', 'web']);
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(base);
    expect(again.stderr).toContain(`${base} is already installed: nothing copied`);
    expect(again.stderr).not.toMatch(/^\+ cp /m);
    expect(fs.statSync(base).mtimeMs).toBe(before.mtimeMs);

    expect(fs.readdirSync(baseDir)).toEqual([path.basename(base)]);
  });

  it('a nix build that prints something else is a clear error, not a stack trace', async () => {
    // A real process in NIX's place whose build succeeds but prints an empty list.
    const odd = path.join(scratch, 'nix-prints-empty-list');
    fs.writeFileSync(odd, '#!/bin/sh\ncase " $* " in *" build "*) echo "[]"; exit 0;; esac\nexec nix "$@"\n', { mode: 0o755 });
    const r = await ivm(['build', 'web'], { NIX: odd });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('nix build --json printed "[]": 0 results, not one; expected [{"drvPath": "...", "outputs": {"out": "/nix/store/..."}}]');
    expect(r.stderr).not.toMatch(/internal error|\n\s+at /);
  });
});

// A throw-away ivm project for end-to-end tests: machines/ in a scratch folder, the stand-in nix
// (test/support/standin-nix: fakes `nix build` only, see its header) and base/VM folders of its own,
// and a way to run the real CLI (bin/ivm.js) in it.
import { execa, execaSync } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { makeScratchDir } from './libvirt.ts';
import { buildStandinImage, repoRoot, standinNix } from './standin.ts';

export interface IvmResult {
  /** -1 when ivm was killed by a signal (see `signal`). */
  exitCode: number;
  signal?: string | undefined;
  stdout: string;
  stderr: string;
}

export interface TestProject {
  root: string;
  baseDir: string;
  vmDir: string;
  env: Record<string, string>;
  /** Runs `ivm ARGS` in the project; never throws on a non-zero exit. */
  ivm(args: string[], extraEnv?: Record<string, string>): Promise<IvmResult>;
  /** Writes machines/<name>/meta.nix (and default.nix). */
  addMachine(name: string, meta: string, files?: Record<string, string>): string;
  /** Points the stand-in `nix build` at a store-like folder holding the stand-in image `variant`. */
  useStandinBase(variant: string): Promise<string>;
  remove(): Promise<void>;
}

export const IVM_BIN = path.join(repoRoot, 'bin', 'ivm.js');

export async function makeTestProject(prefix = 'ivm-e2e-'): Promise<TestProject> {
  const root = await makeScratchDir(prefix);
  const baseDir = path.join(root, 'base-images');
  const vmDir = path.join(root, 'images');
  fs.mkdirSync(path.join(root, 'machines'), { recursive: true });
  fs.writeFileSync(path.join(root, 'flake.nix'), '# placeholder: the stand-in nix never evaluates it\n{ outputs = _: { }; }\n');
  // A git work tree, as ivm build requires (so that nix never copies git-ignored keys to the store).
  execaSync('git', ['init', '-q', root]);
  const env: Record<string, string> = {
    NIX: standinNix,
    IVM_BASE_DIR: baseDir,
    IVM_VM_DIR: vmDir,
    IVM_STANDIN_LOG: path.join(root, 'standin-nix.log'),
    LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg',
    LIBVIRT_URI: 'qemu:///system',
    // Makes the tests' own switches (IVM_TEST_FAULT_KILL_AT, IVM_TEST_SYSROOT) count: without it ivm ignores them.
    IVM_TEST_HARNESS: '1',
  };
  const project: TestProject = {
    root,
    baseDir,
    vmDir,
    env,
    async ivm(args, extraEnv = {}) {
      const result = await execa(process.execPath, [IVM_BIN, ...args], {
        cwd: root,
        env: { ...env, ...extraEnv },
        reject: false,
        stdin: 'ignore',
        // A run that outlives its test must not go on changing disks and domains under the next one.
        timeout: 600_000,
        forceKillAfterDelay: 10_000,
      });
      return { exitCode: result.exitCode ?? -1, signal: result.signal, stdout: result.stdout, stderr: result.timedOut ? `${result.stderr}\n(killed by the test after 600 s)` : result.stderr };
    },
    addMachine(name, meta, files = {}) {
      const dir = path.join(root, 'machines', name);
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'meta.nix'), meta);
      fs.writeFileSync(path.join(dir, 'default.nix'), '{ ... }: { }\n');
      for (const [file, content] of Object.entries(files)) fs.writeFileSync(path.join(dir, file), content);
      return dir;
    },
    async useStandinBase(variant) {
      // Named like a store path, so each variant installs as a different base.
      const out = path.join(root, 'store', `${variant.padEnd(32, '0')}-standin-image-${variant}`);
      await buildStandinImage(out, variant);
      env.IVM_STANDIN_OUT = out;
      return out;
    },
    async remove() {
      await fs.promises.rm(root, { recursive: true, force: true });
    },
  };
  return project;
}

/** A meta.nix for tests: TCG, small, on the given libvirt network. */
export function testMeta(network = 'default'): string {
  return `{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "128M"; network = "${network}"; }\n`;
}

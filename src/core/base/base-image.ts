// nix build -> an installed base image. A base is named after the store path it came from, so the
// same build is installed once and shared by every VM that uses it; it is made read-only (0444) and
// put in place by rename, so a half-copied file never carries the final name.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, IvmError, RefusedError } from '../../errors.ts';
import { buildCommand, buildOutPath } from '../../host/nix.ts';
import { removeCommand } from '../../host/files.ts';
import type { Runner } from '../../host/runner.ts';
import type { Settings } from '../../host/settings.ts';
import type { Plan } from '../plan.ts';
import type { Project } from '../machine/project.ts';
import { ensureFolder, readRegularText, regularFileExists, writeFileAtomic } from '../safe-files.ts';

/** The flake output ivm builds for a machine (docs/flake.md). */
export function imageInstallable(project: Project, name: string): string {
  return `${flakeRef(project.root)}#nixosConfigurations.${name}.config.system.build.ivmImage`;
}

/**
 * The project as a git flake: nix then copies only the files git tracks into the (world-readable)
 * store, never the git-ignored host private keys. A plain path would copy the whole folder, keys
 * included, so a project outside git is refused.
 */
export function flakeRef(root: string): string {
  for (let dir = root; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, '.git'))) {
      const sub = path.relative(dir, root);
      return `git+file://${encodeURI(dir)}${sub ? `?dir=${encodeURIComponent(sub)}` : ''}`;
    }
    if (dir === path.dirname(dir)) break;
  }
  throw new RefusedError(
    `${root} is not in a git work tree: nix would copy the whole folder, host private keys included, into the world-readable Nix store`,
    'make it one (git init; git add flake.nix flake.lock identity-files.json modules machines package.json package-lock.json); git-ignored files stay out of the store',
  );
}

/** The single *.qcow2 inside a build output (searched two folders deep). */
export function findImage(outPath: string): string {
  const found: string[] = [];
  const walk = (dir: string, depth: number) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isFile() && entry.name.endsWith('.qcow2')) found.push(full);
      else if (entry.isDirectory() && depth < 2) walk(full, depth + 1);
    }
  };
  if (!fs.existsSync(outPath) || !fs.statSync(outPath).isDirectory()) {
    throw new IvmError(`nix build printed ${outPath}, which is not a folder`);
  }
  walk(outPath, 0);
  if (found.length !== 1) {
    throw new IvmError(`expected exactly one *.qcow2 under ${outPath}, found ${found.length}${found.length ? `: ${found.join(', ')}` : ''}`);
  }
  return found[0]!;
}

/**
 * The name `ivm build` gives a base: its store path's base name (the 32-character Nix hash, a dash,
 * the derivation's name) and .qcow2. host setup and gc touch only files named so, never any other
 * file someone put in the folder.
 */
export const BASE_IMAGE_NAME = /^[0-9abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+._?=-]+\.qcow2$/;

/** The installed name of a build output: its store path's base name, which changes with its content. */
export function basePathFor(settings: Settings, outPath: string): string {
  return path.join(settings.baseDir, `${path.basename(outPath)}.qcow2`);
}

/** Copy, make read-only, rename: the steps that install one image into the base directory. */
export function installPlan(settings: Settings, image: string, base: string): Plan {
  // A name nobody can guess: cp writes through a link, so none may be waiting there.
  const partial = path.join(settings.baseDir, `.${path.basename(base)}.partial-${crypto.randomBytes(6).toString('hex')}`);
  const rmPartial = removeCommand(partial);
  return {
    title: `install ${image} as ${base}`,
    steps: [
      { kind: 'run', title: 'make the base-image folder', command: { tool: 'mkdir', args: ['-p', '-m', '0755', settings.baseDir], mutates: true } },
      { kind: 'run', title: 'copy the image', command: { tool: 'cp', args: ['--reflink=auto', image, partial], mutates: true }, undo: rmPartial },
      { kind: 'run', title: 'make it read-only', command: { tool: 'chmod', args: ['0444', partial], mutates: true } },
      { kind: 'run', title: 'put it in place', command: { tool: 'mv', args: ['-f', '-T', partial, base], mutates: true } },
    ],
  };
}

/** Local record of the base last built for each machine (create --no-build uses it). */
export interface BuildRecord {
  storePath: string;
  base: string;
}

function recordFile(project: Project, name: string): string {
  return path.join(project.stateDir, `${name}.json`);
}

export function writeBuildRecord(project: Project, name: string, record: BuildRecord): void {
  ensureFolder(project.stateDir);
  writeFileAtomic(recordFile(project, name), `${JSON.stringify(record, null, 2)}\n`);
}

export function readBuildRecord(project: Project, name: string): BuildRecord | undefined {
  const file = recordFile(project, name);
  if (!regularFileExists(file)) return undefined;
  let record: Partial<BuildRecord>;
  try {
    record = JSON.parse(readRegularText(file)) as Partial<BuildRecord>;
  } catch {
    throw new BadInputError(`${file} is not valid JSON`, `remove it and run: ivm build ${name}`);
  }
  if (typeof record?.storePath !== 'string' || typeof record.base !== 'string') {
    throw new BadInputError(`${file} is not a build record (storePath and base)`, `remove it and run: ivm build ${name}`);
  }
  return { storePath: record.storePath, base: record.base };
}

/** Runs nix build and returns the output path (the `out` output in what `nix build --json` printed). */
export async function runBuild(runner: Runner, project: Project, name: string): Promise<string | undefined> {
  const result = await runner.run(buildCommand(imageInstallable(project, name)));
  if (result.skipped) return undefined;
  return buildOutPath(result.stdout);
}

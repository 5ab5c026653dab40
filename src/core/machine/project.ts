// The ivm project: the folder holding flake.nix and machines/. Found from IVM_ROOT, or by walking up
// from the working directory.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError } from '../../errors.ts';
import { kindOf } from '../safe-files.ts';

export interface Project {
  root: string;
  machinesDir: string;
  /** Generated libvirt XML, one file per machine. */
  libvirtDir: string;
  /** Local state: the base image last built for each machine (git-ignored). */
  stateDir: string;
}

export function projectAt(root: string): Project {
  return {
    root,
    machinesDir: path.join(root, 'machines'),
    libvirtDir: path.join(root, 'libvirt'),
    stateDir: path.join(root, '.ivm'),
  };
}

export function findProject(env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): Project {
  if (env.IVM_ROOT) {
    const root = path.resolve(env.IVM_ROOT);
    if (!isFolder(path.join(root, 'machines'))) {
      throw new BadInputError(`IVM_ROOT=${env.IVM_ROOT} has no machines/ folder`);
    }
    return projectAt(root);
  }
  for (let dir = path.resolve(cwd); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'flake.nix')) && isFolder(path.join(dir, 'machines'))) return projectAt(dir);
    if (dir === path.dirname(dir)) break;
  }
  throw new BadInputError(
    `no ivm project here: no folder with flake.nix and machines/ above ${cwd}`,
    'run ivm inside the repository, or set IVM_ROOT',
  );
}

function isFolder(file: string): boolean {
  try {
    return fs.statSync(file).isDirectory();
  } catch {
    return false;
  }
}

/** Names of the folders in machines/ that hold a meta.nix, sorted. */
export function machineNames(project: Project): string[] {
  if (!isFolder(project.machinesDir)) return [];
  return fs
    .readdirSync(project.machinesDir, { withFileTypes: true })
    // Dirents are not followed: a link in machines/ is no machine (machineDir refuses it by name).
    .filter((entry) => entry.isDirectory() && kindOf(path.join(project.machinesDir, entry.name, 'meta.nix')) === 'file')
    .map((entry) => entry.name)
    .sort();
}

// A brand-new /var disk without an appliance. The /var tree (identity files, /home, /root) is staged
// in a private folder with the modes of identity-files.json, e2fsprogs builds the ext4 filesystem
// from it straight into a sparse raw file (`mkfs.ext4 -d`, label ivm-var, whole disk), `debugfs -w`
// makes every file root's (mkfs copies the stager's uid; debugfs edits an image file without
// root, so session mode works too), and qemu-img copies it into the final qcow2. Milliseconds,
// where a guestfish appliance takes seconds (tens under TCG). guestfish stays the tool for every
// change to a /var disk that exists (it may hold data).
//
// Nothing here is tied to a local libvirt: the result is a plain qcow2 file, which could as well be
// uploaded to a remote pool (virsh vol-upload).
import fs from 'node:fs';
import path from 'node:path';
import type { Command } from '../../host/runner.ts';
import { SECRETS_DIR, SECRETS_FOLDER, VAR_DIRS, VAR_IDENTITY_DIR, VAR_LABEL } from '../identity/identity-files.ts';
import type { IdentitySource } from '../identity/identity.ts';
import { makePrivateFolder } from '../private-folder.ts';

/** A staged /var tree and the raw image made from it, in one private (0700) folder. */
export interface VarStage {
  /** The tree mkfs copies: its own mode is the filesystem root's (0755). */
  tree: string;
  /** The raw image mkfs writes (sparse, varSize). */
  raw: string;
  /** Every path on the new filesystem, for the ownership script. */
  paths: string[];
  remove: () => void;
}

/** The folders the /var filesystem starts with (the secrets folder only when there are secrets). */
export function varFolders(sources: IdentitySource[]): { path: string; mode: string }[] {
  const secrets = sources.some((source) => source.name.startsWith(`${SECRETS_FOLDER}/`));
  return [...VAR_DIRS, ...(secrets ? [{ path: SECRETS_DIR.path, mode: SECRETS_DIR.mode }] : [])];
}

/** The paths the /var filesystem starts with: its folders, then the identity files. */
export function varPaths(sources: IdentitySource[]): string[] {
  return [...varFolders(sources).map((dir) => dir.path), ...sources.map((source) => `${VAR_IDENTITY_DIR}/${source.name}`)];
}

/**
 * Writes the /var tree: the folders of identity-files.json and each identity file's content (read
 * by this user) at its mode. Under --dry-run nothing is written and placeholder paths are shown.
 */
export function stageVarTree(parent: string, sources: IdentitySource[], dryRun: boolean): VarStage {
  const paths = varPaths(sources);
  if (dryRun) {
    const dir = path.join(parent, 'stage-XXXXXX');
    return { tree: path.join(dir, 'tree'), raw: path.join(dir, 'var.raw'), paths, remove: () => undefined };
  }
  const folder = makePrivateFolder(parent);
  try {
    const tree = path.join(folder.dir, 'tree');
    fs.mkdirSync(tree, { mode: 0o755 });
    fs.chmodSync(tree, 0o755);
    for (const dir of varFolders(sources)) {
      const at = path.join(tree, dir.path);
      fs.mkdirSync(at, { recursive: true });
      fs.chmodSync(at, Number.parseInt(dir.mode, 8));
    }
    for (const source of sources) {
      if (source.content === undefined) throw new Error(`internal: ${source.name} has no content to stage`);
      const at = path.join(tree, VAR_IDENTITY_DIR, source.name);
      fs.writeFileSync(at, source.content, { flag: 'wx', mode: 0o600 });
      fs.chmodSync(at, Number.parseInt(source.mode, 8));
    }
    return { tree, raw: path.join(folder.dir, 'var.raw'), paths, remove: folder.remove };
  } catch (error) {
    folder.remove();
    throw error;
  }
}

/** mkfs.ext4 of the whole raw file from the tree, labelled for the NixOS modules (root folder root's). */
export function mkfsCommand(stage: VarStage, size: string): Command {
  return {
    tool: 'mkfs.ext4',
    args: ['-q', '-F', '-t', 'ext4', '-L', VAR_LABEL, '-E', 'root_owner=0:0', '-d', stage.tree, stage.raw, size],
    mutates: true,
  };
}

/** The debugfs script that makes every path root's (uid and gid 0), whoever staged it. */
export function ownershipScript(paths: string[]): string {
  return `${paths.flatMap((p) => [`set_inode_field ${p} uid 0`, `set_inode_field ${p} gid 0`]).join('\n')}\n`;
}

export function ownershipCommand(stage: VarStage): Command {
  // debugfs exits 0 when a command of its script fails: only its banner may be on stderr.
  return { tool: 'debugfs', args: ['-w', '-f', '-', stage.raw], mutates: true, input: ownershipScript(stage.paths), expectedStderr: /^debugfs \d/ };
}

/** Copies the raw image into an existing qcow2 (-n: the disk was made, and made 0600, beforehand). */
export function copyIntoDiskCommand(stage: VarStage, disk: string): Command {
  return { tool: 'qemu-img', args: ['convert', '-q', '-n', '-f', 'raw', '-O', 'qcow2', stage.raw, disk], mutates: true };
}

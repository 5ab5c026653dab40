// The external programs ivm runs: which variable overrides each, whether it needs root (SUDO), and
// which package provides it, for the "command not found" hint.

export type ToolName =
  | 'nix'
  | 'virsh'
  | 'qemu-img'
  | 'guestfish'
  | 'cp'
  | 'readlink'
  | 'mv'
  | 'rm'
  | 'chmod'
  | 'mkdir'
  | 'ln'
  | 'chown'
  | 'tee'
  | 'stat'
  | 'test'
  | 'mkfs.ext4'
  | 'debugfs'
  | 'ssh'
  | 'git'
  | 'tar'
  | 'dd'
  | 'sync'
  | 'truncate'
  | 'apparmor_parser';

export interface ToolSpec {
  /** The program's name when no override is set. */
  program: string;
  /** The variable that replaces the whole command (e.g. VIRSH="sudo virsh"). */
  variable?: string;
  /** Whether the default command is prefixed with SUDO (it touches libvirt or root-owned images). */
  root: boolean;
  packages: { debian: string; fedora: string; arch: string };
}

const coreutils = { debian: 'coreutils', fedora: 'coreutils', arch: 'coreutils' };
const e2fsprogs = { debian: 'e2fsprogs', fedora: 'e2fsprogs', arch: 'e2fsprogs' };

export const TOOLS: Record<ToolName, ToolSpec> = {
  nix: { program: 'nix', variable: 'NIX', root: false, packages: { debian: 'nix-bin', fedora: 'nix', arch: 'nix' } },
  virsh: {
    program: 'virsh',
    variable: 'VIRSH',
    root: true,
    packages: { debian: 'libvirt-clients', fedora: 'libvirt-client', arch: 'libvirt' },
  },
  'qemu-img': {
    program: 'qemu-img',
    variable: 'QEMU_IMG',
    root: true,
    packages: { debian: 'qemu-utils', fedora: 'qemu-img', arch: 'qemu-img' },
  },
  guestfish: {
    program: 'guestfish',
    variable: 'GUESTFISH',
    root: true,
    packages: { debian: 'libguestfs-tools', fedora: 'guestfs-tools', arch: 'guestfs-tools' },
  },
  cp: { program: 'cp', variable: 'CP', root: true, packages: coreutils },
  readlink: { program: 'readlink', variable: 'READLINK', root: false, packages: coreutils },
  mv: { program: 'mv', root: true, packages: coreutils },
  rm: { program: 'rm', root: true, packages: coreutils },
  chmod: { program: 'chmod', root: true, packages: coreutils },
  mkdir: { program: 'mkdir', root: true, packages: coreutils },
  ln: { program: 'ln', root: true, packages: coreutils },
  chown: { program: 'chown', root: true, packages: coreutils },
  /** Writes root-owned files (the AppArmor rule) from standard input. */
  tee: { program: 'tee', root: true, packages: coreutils },
  /** What a file in the image folders is, asked on the host itself when HOST_CMD is set. */
  stat: { program: 'stat', root: true, packages: coreutils },
  /** Whether a path is there at all, asked on the host (its exit status is the same in every language). */
  test: { program: 'test', root: true, packages: coreutils },
  /** A new /var filesystem, built from a staged tree into the user's own raw file: no root needed. */
  'mkfs.ext4': { program: 'mkfs.ext4', root: false, packages: e2fsprogs },
  /** Sets owners on that raw file (debugfs -w), without root. */
  debugfs: { program: 'debugfs', root: false, packages: e2fsprogs },
  ssh: { program: 'ssh', variable: 'SSH', root: false, packages: { debian: 'openssh-client', fedora: 'openssh-clients', arch: 'openssh' } },
  /** `ivm new` stages a new machine's public files (git add --), as the flake sees only tracked files. */
  git: { program: 'git', root: false, packages: { debian: 'git', fedora: 'git', arch: 'git' } },
  /** Packs a backup (its manifest and its compressed /var image) into one file, and unpacks it. */
  tar: { program: 'tar', root: true, packages: { debian: 'tar', fedora: 'tar', arch: 'tar' } },
  /** Flushes a finished backup and its folder to the disk before ivm says it is made. */
  sync: { program: 'sync', root: true, packages: coreutils },
  /** Reads a byte range of a root-only file (a backup's image, to checksum or copy it) and writes a backup's tar headers in place. */
  dd: { program: 'dd', root: true, packages: coreutils },
  /** Makes a backup's file and pads its image to whole 512-byte blocks (every byte of a backup is then checked). */
  truncate: { program: 'truncate', root: true, packages: coreutils },
  apparmor_parser: {
    program: 'apparmor_parser',
    variable: 'APPARMOR_PARSER',
    root: true,
    packages: { debian: 'apparmor', fedora: 'apparmor-parser', arch: 'apparmor' },
  },
};

// Everything ivm takes from the environment, read once into a plain object.
// Variables (README.md, "Environment"): HOST_CMD, SUDO, NIX, VIRSH, QEMU_IMG, GUESTFISH, CP, READLINK,
// LIBGUESTFS_BACKEND and any LIBGUESTFS_*, LIBVIRT_URI, OVMF_CODE, OVMF_VARS, IVM_BASE_DIR, IVM_VM_DIR.
import { BadInputError } from '../errors.ts';

export interface Settings {
  /** Prefix of every default tool command, e.g. ['host-spawn'] in distrobox. */
  hostCmd: string[];
  /** Prefix of the default commands that need root; [] when root or SUDO="". */
  sudo: string[];
  /** Full-command overrides by variable name (NIX, VIRSH, ...): used verbatim, no HOST_CMD/SUDO added. */
  overrides: Record<string, string[]>;
  /** LIBGUESTFS_* variables handed to guestfish (LIBGUESTFS_BACKEND defaults to direct). */
  guestfsEnv: Record<string, string>;
  libvirtUri: string;
  baseDir: string;
  vmDir: string;
  ovmf: { code: string; vars: string } | undefined;
  /** IVM_FAULT_KILL_AT: a testing aid; ivm kills itself before its N-th change (see Runner). */
  faultKillAt: number | undefined;
}

export const TOOL_VARIABLES = ['NIX', 'VIRSH', 'QEMU_IMG', 'GUESTFISH', 'CP', 'READLINK'] as const;

/** Splits a variable holding a command of several words (no shell quoting; words are separated by blanks). */
export function words(value: string | undefined): string[] {
  return (value ?? '').split(/\s+/).filter((w) => w.length > 0);
}

export function readSettings(env: NodeJS.ProcessEnv = process.env, uid = process.getuid?.() ?? 0): Settings {
  const overrides: Record<string, string[]> = {};
  for (const name of TOOL_VARIABLES) {
    const value = words(env[name]);
    if (value.length > 0) overrides[name] = value;
  }
  const guestfsEnv: Record<string, string> = { LIBGUESTFS_BACKEND: 'direct' };
  for (const [key, value] of Object.entries(env)) {
    if (key.startsWith('LIBGUESTFS_') && value !== undefined && value !== '') guestfsEnv[key] = value;
  }
  const code = env.OVMF_CODE || undefined;
  const vars = env.OVMF_VARS || undefined;
  if (Boolean(code) !== Boolean(vars)) {
    throw new BadInputError('OVMF_CODE and OVMF_VARS must be set together (or neither, to let libvirt pick the firmware)');
  }
  return {
    hostCmd: words(env.HOST_CMD),
    sudo: env.SUDO === undefined ? (uid === 0 ? [] : ['sudo']) : words(env.SUDO),
    overrides,
    guestfsEnv,
    libvirtUri: env.LIBVIRT_URI || 'qemu:///system',
    baseDir: env.IVM_BASE_DIR || '/var/lib/libvirt/base-images',
    vmDir: env.IVM_VM_DIR || '/var/lib/libvirt/images',
    ovmf: code && vars ? { code, vars } : undefined,
    faultKillAt: env.IVM_FAULT_KILL_AT ? Number(env.IVM_FAULT_KILL_AT) : undefined,
  };
}

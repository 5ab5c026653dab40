// Everything ivm takes from the environment, read once into a plain object.
// Variables (README.md, "Environment"): HOST_CMD, SUDO, NIX, VIRSH, QEMU_IMG, GUESTFISH, CP, READLINK,
// LIBGUESTFS_BACKEND and any LIBGUESTFS_*, LIBVIRT_URI, OVMF_CODE, OVMF_VARS, IVM_BASE_DIR, IVM_VM_DIR,
// SSH, APPARMOR_PARSER, XDG_DATA_HOME and HOME (session mode). The test suite's switches
// (IVM_TEST_HARNESS, IVM_TEST_FAULT_KILL_AT, IVM_TEST_SYSROOT: README.md, "Tests") are read here too.
import os from 'node:os';
import path from 'node:path';
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
  /** system: libvirtd as root (qemu:///system); session: the user's own libvirt (qemu:///session), no root at all. */
  mode: 'system' | 'session';
  baseDir: string;
  vmDir: string;
  ovmf: { code: string; vars: string } | undefined;
  /** The test suite's switches: all off unless IVM_TEST_HARNESS=1. */
  testing: TestSwitches;
  /** IVM_LOCK_WAIT: seconds a run waits for a lock another run holds (default 10). */
  lockWaitSeconds: number;
}

/**
 * Switches only the test suite sets. Each is inert unless IVM_TEST_HARNESS=1 is set as well, and
 * their names say "TEST", so that no variable left in a user's environment by chance can make ivm
 * kill itself midway or look for the host's AppArmor files elsewhere.
 */
export interface TestSwitches {
  /** IVM_TEST_FAULT_KILL_AT=N: ivm kills itself (SIGKILL) just before its N-th change (see Runner). */
  faultKillAt: number | undefined;
  /** IVM_TEST_SYSROOT: the root under which host setup and doctor find /etc/apparmor.d and /sys/module/apparmor. */
  sysroot: string | undefined;
}

export function testSwitches(env: NodeJS.ProcessEnv = process.env): TestSwitches {
  if (env.IVM_TEST_HARNESS !== '1') return { faultKillAt: undefined, sysroot: undefined };
  const kill = env.IVM_TEST_FAULT_KILL_AT;
  if (kill && !/^[1-9][0-9]*$/.test(kill)) throw new BadInputError(`IVM_TEST_FAULT_KILL_AT=${kill} must be a positive integer`);
  const sysroot = env.IVM_TEST_SYSROOT;
  if (sysroot && !path.isAbsolute(sysroot)) throw new BadInputError(`IVM_TEST_SYSROOT=${sysroot} must be an absolute path`);
  return { faultKillAt: kill ? Number(kill) : undefined, sysroot: sysroot || undefined };
}

export const TOOL_VARIABLES = ['NIX', 'VIRSH', 'QEMU_IMG', 'GUESTFISH', 'CP', 'READLINK', 'SSH', 'APPARMOR_PARSER'] as const;

export const SYSTEM_BASE_DIR = '/var/lib/libvirt/base-images';
export const SYSTEM_VM_DIR = '/var/lib/libvirt/images';

/** qemu:///session, qemu+unix:///session, ...: the user's own libvirt daemon. */
export function isSessionUri(uri: string): boolean {
  return /^qemu(\+[a-z]+)?:\/\/[^/]*\/session(\?.*)?$/.test(uri);
}

/** True when `file` lies in a folder whose name starts with a dot below `home` (AppArmor denies @{HOME}/.*). */
export function inHiddenFolderOf(home: string, file: string): boolean {
  const rel = path.relative(home, file);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) return false;
  return rel.split(path.sep).some((part) => part.startsWith('.'));
}

/**
 * Session-mode folders: $XDG_DATA_HOME/ivm when XDG_DATA_HOME is set and is not a hidden folder
 * under home, else ~/ivm. (The XDG default, ~/.local/share, is hidden: AppArmor's libvirt
 * abstractions deny QEMU @{HOME}/.*, so disk images never go there by default.)
 */
export function sessionDirs(env: NodeJS.ProcessEnv): { baseDir: string; vmDir: string } {
  const home = env.HOME || os.homedir();
  const xdg = env.XDG_DATA_HOME;
  const root = xdg && path.isAbsolute(xdg) && !inHiddenFolderOf(home, path.join(xdg, 'ivm')) ? path.join(xdg, 'ivm') : path.join(home, 'ivm');
  return { baseDir: path.join(root, 'base-images'), vmDir: path.join(root, 'images') };
}

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
    // SUPERMIN_*: supermin builds guestfish's appliance (SUPERMIN_KERNEL where /boot has none).
    if ((key.startsWith('LIBGUESTFS_') || key.startsWith('SUPERMIN_')) && value !== undefined && value !== '') guestfsEnv[key] = value;
  }
  const code = env.OVMF_CODE || undefined;
  const vars = env.OVMF_VARS || undefined;
  if (Boolean(code) !== Boolean(vars)) {
    throw new BadInputError('OVMF_CODE and OVMF_VARS must be set together (or neither, to let libvirt pick the firmware)');
  }
  const libvirtUri = env.LIBVIRT_URI || 'qemu:///system';
  const mode = isSessionUri(libvirtUri) ? 'session' : 'system';
  const defaults = mode === 'session' ? sessionDirs(env) : { baseDir: SYSTEM_BASE_DIR, vmDir: SYSTEM_VM_DIR };
  for (const key of ['IVM_BASE_DIR', 'IVM_VM_DIR'] as const) {
    const value = env[key];
    if (value && !path.isAbsolute(value)) throw new BadInputError(`${key}=${value} must be an absolute path`);
  }
  return {
    hostCmd: words(env.HOST_CMD),
    // Session mode needs root for nothing: SUDO does not apply there.
    sudo: mode === 'session' ? [] : env.SUDO === undefined ? (uid === 0 ? [] : ['sudo']) : words(env.SUDO),
    overrides,
    guestfsEnv,
    libvirtUri,
    mode,
    baseDir: env.IVM_BASE_DIR ? path.resolve(env.IVM_BASE_DIR) : defaults.baseDir,
    vmDir: env.IVM_VM_DIR ? path.resolve(env.IVM_VM_DIR) : defaults.vmDir,
    ovmf: code && vars ? { code, vars } : undefined,
    testing: testSwitches(env),
    lockWaitSeconds: lockWait(env.IVM_LOCK_WAIT),
  };
}

/** IVM_LOCK_WAIT: whole seconds, 0 or more; anything else is a clear error, not a silent default. */
function lockWait(value: string | undefined): number {
  if (value === undefined || value === '') return 10;
  if (!/^\d+$/.test(value)) throw new BadInputError(`IVM_LOCK_WAIT=${value} must be a whole number of seconds (0 or more)`);
  return Number(value);
}

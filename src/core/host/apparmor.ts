// The one AppArmor rule ivm needs: QEMU may read everything under IVM_BASE_DIR (the backing files).
// It is a directory-level rule in the place the host's libvirt-qemu abstraction reads: upstream
// libvirt includes abstractions/libvirt-qemu.d/, older Debian/Ubuntu packages read
// local/abstractions/libvirt-qemu. ivm never writes a per-file or per-VM rule and never edits a
// generated profile. The tests' IVM_TEST_SYSROOT (with IVM_TEST_HARNESS=1, see settings.ts) moves
// /etc/apparmor.d and /sys/module/apparmor under another root.
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError } from '../../errors.ts';
import { testSwitches } from '../../host/settings.ts';

export interface AppArmorHost {
  /** /etc/apparmor.d (under the tests' sysroot). */
  dir: string;
  /** /sys/module/apparmor/parameters/enabled (under the tests' sysroot). */
  enabledFile: string;
}

export function appArmorHost(env: NodeJS.ProcessEnv = process.env): AppArmorHost {
  const root = testSwitches(env).sysroot ?? '/';
  return {
    dir: path.join(root, 'etc', 'apparmor.d'),
    enabledFile: path.join(root, 'sys', 'module', 'apparmor', 'parameters', 'enabled'),
  };
}

export type RuleStyle = 'libvirt-qemu.d' | 'local';

export interface AppArmorState {
  enabled: boolean;
  /** Why AppArmor is (not) enabled, in words. */
  enabledWhy: string;
  /** Where the rule goes; undefined when the host's abstraction reads neither place (see problem). */
  target?: { file: string; style: RuleStyle };
  problem?: string;
  /** The rule as wanted is in place. */
  present: boolean;
  /** The whole file content to write for the rule to be in place. */
  wanted?: string;
  /** What the target file holds now (undefined: missing). */
  current?: string;
}

export const BEGIN_MARK = '# BEGIN ivm: shared base images (managed by `ivm host setup`)';
export const END_MARK = '# END ivm';
export const RULE_FILE = 'ivm-base-images';

/** The AppArmor path of a directory: quoted, no globbing characters allowed. */
function ruleDir(baseDir: string): string {
  if (/["\n\r\t\0*?[\]{}^]/.test(baseDir)) {
    throw new BadInputError(`IVM_BASE_DIR=${baseDir} holds characters an AppArmor rule cannot express plainly ("*?[]{}^ or newlines)`);
  }
  return baseDir.endsWith('/') ? baseDir : `${baseDir}/`;
}

/** The rule lines (no markers): the folder itself and everything below it, read and lock only. */
export function ruleLines(baseDir: string): string[] {
  const dir = ruleDir(baseDir);
  return [
    '# QEMU may read the shared base images (backing files of every VM); one rule for the folder.',
    `"${dir}" r,`,
    `"${dir}**" rk,`,
  ];
}

/** The content of the rule file for the libvirt-qemu.d style (a file of its own). */
export function ruleFile(baseDir: string): string {
  return [`# Written by ivm (\`ivm host setup --apply\`); rewritten when IVM_BASE_DIR changes.`, ...ruleLines(baseDir), ''].join('\n');
}

/** The local file with ivm's block put in (replacing an earlier block), the rest left as it was. */
export function withManagedBlock(current: string | undefined, baseDir: string): string {
  const block = [BEGIN_MARK, ...ruleLines(baseDir), END_MARK].join('\n');
  const text = current ?? '';
  const start = text.indexOf(BEGIN_MARK);
  const end = text.indexOf(END_MARK, start);
  if (start >= 0 && end > start) return text.slice(0, start) + block + text.slice(end + END_MARK.length);
  const sep = text === '' || text.endsWith('\n') ? '' : '\n';
  return `${text}${sep}${block}\n`;
}

/** The includes of the libvirt-qemu abstraction (#include <x>, include <x>, include if exists <x>). */
export function abstractionIncludes(text: string): string[] {
  const found: string[] = [];
  for (const match of text.matchAll(/^\s*#?include\s+(?:if\s+exists\s+)?<([^>]+)>/gm)) found.push(match[1]!.trim().replace(/\/$/, ''));
  return found;
}

function readIfExists(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export function appArmorState(host: AppArmorHost, baseDir: string): AppArmorState {
  const flag = readIfExists(host.enabledFile);
  const enabled = flag?.trim() === 'Y';
  const enabledWhy =
    flag === undefined ? `not in this kernel (no ${host.enabledFile})` : enabled ? 'enabled' : `disabled (${host.enabledFile}: ${flag.trim()})`;
  const abstraction = path.join(host.dir, 'abstractions', 'libvirt-qemu');
  const text = readIfExists(abstraction);
  if (text === undefined) {
    return { enabled, enabledWhy, present: false, problem: `${abstraction} is missing: is libvirt's AppArmor support installed (Debian: libvirt-daemon-system)?` };
  }
  const includes = abstractionIncludes(text);
  let target: AppArmorState['target'];
  if (includes.includes('abstractions/libvirt-qemu.d')) {
    target = { file: path.join(host.dir, 'abstractions', 'libvirt-qemu.d', RULE_FILE), style: 'libvirt-qemu.d' };
  } else if (includes.includes('local/abstractions/libvirt-qemu')) {
    target = { file: path.join(host.dir, 'local', 'abstractions', 'libvirt-qemu'), style: 'local' };
  } else {
    return {
      enabled,
      enabledWhy,
      present: false,
      problem: `${abstraction} includes neither abstractions/libvirt-qemu.d nor local/abstractions/libvirt-qemu: there is no place for a local rule that survives updates`,
    };
  }
  const current = readIfExists(target.file);
  const wanted = target.style === 'libvirt-qemu.d' ? ruleFile(baseDir) : withManagedBlock(current, baseDir);
  return { enabled, enabledWhy, target, present: current === wanted, wanted, current };
}

/** The per-VM profiles libvirt generated (libvirt-<uuid>), which include the abstraction: reloaded after a change. */
export function libvirtProfiles(host: AppArmorHost): string[] {
  const dir = path.join(host.dir, 'libvirt');
  try {
    return fs
      .readdirSync(dir)
      .filter((name) => /^libvirt-[0-9a-f-]{36}$/.test(name))
      .sort()
      .map((name) => path.join(dir, name));
  } catch {
    return [];
  }
}

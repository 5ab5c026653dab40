// ivm doctor: every host requirement checked, each saying what it found and, when it fails, the one
// command that fixes it. Only queries: nothing is changed, under --dry-run or not.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { IvmError, LibvirtUnreachableError, ToolMissingError } from '../../errors.ts';
import type { Runner } from '../../host/runner.ts';
import { shellLine } from '../../host/shell-quote.ts';
import { TOOLS, type ToolName } from '../../host/tools.ts';
import { virshCommand } from '../../host/virsh.ts';
import { MIN_NIX_VERSION, nixVersionAtLeast, parseNixVersion } from '../../host/nix.ts';
import { backingChain, imageInfo } from '../../host/qemu-img.ts';
import { appArmorHost, appArmorState, type AppArmorHost } from './apparmor.ts';
import { canonical, hiddenHomeFolder, isInside } from '../base/base-dir.ts';
import type { HostContext } from './host-context.ts';
import { loadMachine, type Machine } from '../machine/machine.ts';
import { networkInfo } from '../network/net.ts';
import { machineNames } from '../machine/project.ts';
import { vmPaths } from '../disks/vm-paths.ts';
import { octalMode } from '../file-mode.ts';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface Check {
  id: string;
  title: string;
  status: CheckStatus;
  /** What the check found, in words. */
  found: string;
  /** The one command (or edit) that fixes a failure or a warning. */
  fix?: string;
}

export interface DoctorReport {
  ok: boolean;
  mode: 'system' | 'session';
  libvirtUri: string;
  checks: Check[];
}

type Distro = 'debian' | 'fedora' | 'arch' | undefined;

export function detectDistro(osRelease = '/etc/os-release'): Distro {
  let text = '';
  try {
    text = fs.readFileSync(osRelease, 'utf8');
  } catch {
    return undefined;
  }
  const ids = [/^ID=(.*)$/m.exec(text)?.[1], /^ID_LIKE=(.*)$/m.exec(text)?.[1]].join(' ').replace(/"/g, '').split(/\s+/);
  if (ids.some((id) => ['debian', 'ubuntu'].includes(id))) return 'debian';
  if (ids.some((id) => ['fedora', 'rhel', 'centos'].includes(id))) return 'fedora';
  if (ids.some((id) => ['arch', 'manjaro'].includes(id))) return 'arch';
  return undefined;
}

const asRoot = () => ((process.getuid?.() ?? 0) === 0 ? '' : 'sudo ');

/** The install command for a package on this distribution (all three when unknown). */
export function installCommand(packages: { debian: string; fedora: string; arch: string }, distro: Distro): string {
  const root = asRoot();
  const commands = {
    debian: `${root}apt install ${packages.debian}`,
    fedora: `${root}dnf install ${packages.fedora}`,
    arch: `${root}pacman -S ${packages.arch}`,
  };
  return distro ? commands[distro] : `${commands.debian} (Fedora: ${commands.fedora}; Arch: ${commands.arch})`;
}

const VERSION_ARGS: Partial<Record<ToolName, string[]>> = {
  nix: ['--version'],
  'qemu-img': ['--version'],
  guestfish: ['--version'],
  virsh: ['--version'],
  ssh: ['-V'],
};

async function toolCheck(runner: Runner, tool: ToolName, distro: Distro): Promise<Check> {
  const spec = TOOLS[tool];
  const base = { id: `tool-${tool}`, title: tool };
  try {
    const r = await runner.run({ tool, args: VERSION_ARGS[tool] ?? ['--version'], mutates: false });
    const version = `${r.stdout}\n${r.stderr}`.trim().split('\n')[0]!.trim();
    const command = shellLine(runner.argv({ tool, args: [], mutates: false }));
    return { ...base, status: 'ok', found: command === spec.program ? version : `${version} (run as: ${command})` };
  } catch (error) {
    if (error instanceof ToolMissingError) {
      return { ...base, status: 'fail', found: `${error.program}: not found`, fix: installCommand(spec.packages, distro) };
    }
    return { ...base, status: 'fail', found: (error as Error).message.split('\n')[0]!, fix: installCommand(spec.packages, distro) };
  }
}

/** `nix --version` against MIN_NIX_VERSION: an older nix rejects flags ivm uses. */
async function nixVersionCheck(runner: Runner): Promise<Check> {
  const base = { id: 'nix-version', title: 'nix version' };
  let line: string;
  try {
    const r = await runner.run({ tool: 'nix', args: ['--version'], mutates: false });
    line = `${r.stdout}\n${r.stderr}`.trim().split('\n')[0]!.trim();
  } catch (error) {
    // The nix check above reports a nix that is missing or does not run, with its fix.
    return { ...base, status: 'skip', found: `not checked: ${(error as Error).message.split('\n')[0]!}` };
  }
  const upgrade = `install Nix ${MIN_NIX_VERSION} or newer: your distribution's nix package if it is that new, or the official installer (sh <(curl -L https://nixos.org/nix/install) --daemon); or set NIX to a newer nix`;
  const version = parseNixVersion(line);
  if (!version) return { ...base, status: 'fail', found: `no version in \`nix --version\`: ${JSON.stringify(line)}`, fix: upgrade };
  if (!nixVersionAtLeast(version)) {
    return { ...base, status: 'fail', found: `${version.text} is older than ${MIN_NIX_VERSION}, the oldest ivm supports (${line})`, fix: upgrade };
  }
  return { ...base, status: 'ok', found: `${version.text} (ivm needs ${MIN_NIX_VERSION} or newer)` };
}

/** The oldest e2fsprogs whose mkfs.ext4 can build a filesystem from a folder (-d), as create does. */
export const MIN_E2FSPROGS = [1, 43] as const;

/** "mke2fs 1.47.0 (5-Feb-2023)" -> [1, 47, 0]; undefined when there is no version. */
export function parseE2fsprogsVersion(text: string): number[] | undefined {
  const match = /\b(?:mke2fs|debugfs) (\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  return match ? [Number(match[1]), Number(match[2]), Number(match[3] ?? 0)] : undefined;
}

/** mkfs.ext4 (-d, -E root_owner) and debugfs: create makes every new /var with them, no appliance. */
async function e2fsprogsCheck(runner: Runner, distro: Distro): Promise<Check> {
  const base = { id: 'e2fsprogs', title: 'e2fsprogs (mkfs.ext4 -d, debugfs)' };
  const fix = `${installCommand(TOOLS['mkfs.ext4'].packages, distro)} (${MIN_E2FSPROGS.join('.')} or newer)`;
  const found: string[] = [];
  for (const tool of ['mkfs.ext4', 'debugfs'] as const) {
    let text: string;
    try {
      const r = await runner.run({ tool, args: ['-V'], mutates: false });
      text = `${r.stderr}\n${r.stdout}`;
    } catch (error) {
      const what = error instanceof ToolMissingError ? `${error.program}: not found` : (error as Error).message.split('\n')[0]!;
      return { ...base, status: 'fail', found: what, fix };
    }
    const version = parseE2fsprogsVersion(text);
    if (!version) return { ...base, status: 'fail', found: `no version in \`${tool} -V\`: ${JSON.stringify(text.trim().split('\n')[0])}`, fix };
    const [major, minor] = version as [number, number];
    if (major < MIN_E2FSPROGS[0] || (major === MIN_E2FSPROGS[0] && minor < MIN_E2FSPROGS[1])) {
      return { ...base, status: 'fail', found: `${tool} ${version.join('.')} is older than ${MIN_E2FSPROGS.join('.')} (no mkfs.ext4 -d)`, fix };
    }
    found.push(`${tool} ${version.join('.')}`);
  }
  return { ...base, status: 'ok', found: found.join(', ') };
}

function kernelCheck(runner: Runner, distro: Distro): Check {
  const base = { id: 'kernel', title: 'kernel for guestfish' };
  const viaRoot = runner.settings.sudo.length > 0 || (process.getuid?.() ?? 0) === 0;
  const explicit = process.env.SUPERMIN_KERNEL;
  if (explicit) {
    const ok = fs.existsSync(explicit) && (viaRoot || canRead(explicit));
    return ok
      ? { ...base, status: 'ok', found: `SUPERMIN_KERNEL=${explicit}` }
      : { ...base, status: 'fail', found: `SUPERMIN_KERNEL=${explicit} is missing or unreadable`, fix: 'unset SUPERMIN_KERNEL, or point it at a readable kernel' };
  }
  let kernels: string[] = [];
  try {
    kernels = fs.readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')).map((f) => path.join('/boot', f));
  } catch {
    // no /boot
  }
  const arch = os.arch() === 'arm64' ? 'arm64' : 'amd64';
  const install = installCommand({ debian: `linux-image-${arch}`, fedora: 'kernel-core', arch: 'linux' }, distro);
  if (kernels.length === 0) return { ...base, status: 'fail', found: 'no /boot/vmlinuz-*: supermin cannot make the appliance', fix: install };
  const readable = kernels.filter((k) => viaRoot || canRead(k));
  if (readable.length === 0) {
    return { ...base, status: 'fail', found: `${kernels.join(', ')}: not readable by you (Ubuntu makes kernels 0600)`, fix: `sudo chmod 0644 /boot/vmlinuz-*` };
  }
  return { ...base, status: 'ok', found: readable.sort().reverse()[0]! };
}

function canRead(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** The project's machines whose meta.nix evaluates (a broken one is reported by the commands that use it). */
async function loadMachines(ctx: HostContext): Promise<Machine[]> {
  const machines: Machine[] = [];
  if (!ctx.project) return machines;
  for (const name of machineNames(ctx.project)) {
    try {
      machines.push(await loadMachine(ctx.runner, ctx.project, name));
    } catch (error) {
      if (!(error instanceof IvmError)) throw error;
    }
  }
  return machines;
}

async function kvmCheck(ctx: HostContext, machines: Machine[]): Promise<Check> {
  const base = { id: 'kvm', title: '/dev/kvm' };
  const session = ctx.settings.mode === 'session';
  let usable = false;
  try {
    // System mode: libvirt's QEMU user opens it, not you; session mode: QEMU runs as you.
    fs.accessSync('/dev/kvm', session ? fs.constants.R_OK | fs.constants.W_OK : fs.constants.F_OK);
    usable = fs.statSync('/dev/kvm').isCharacterDevice();
  } catch {
    // missing or no permission
  }
  if (usable) return { ...base, status: 'ok', found: session ? '/dev/kvm opens for reading and writing (virtType = "kvm")' : '/dev/kvm is there for libvirt\'s QEMU (virtType = "kvm")' };
  const why = fs.existsSync('/dev/kvm') ? '/dev/kvm exists but you may not use it' : 'no /dev/kvm';
  const needKvm = machines.filter((m) => m.meta.virtType === 'kvm').map((m) => m.name);
  if (needKvm.length === 0) return { ...base, status: 'warn', found: `${why}: VMs need virtType = "qemu" (TCG, slow)`, fix: 'set virtType = "qemu" in the machines\' meta.nix' };
  return {
    ...base,
    status: 'fail',
    found: `${why}, and ${needKvm.join(', ')} ${needKvm.length > 1 ? 'use' : 'uses'} virtType = "kvm"`,
    fix: fs.existsSync('/dev/kvm')
      ? `sudo usermod -aG kvm ${os.userInfo().username} (then log in again), or set virtType = "qemu" in machines/${needKvm[0]}/meta.nix`
      : `set virtType = "qemu" in machines/${needKvm[0]}/meta.nix (no hardware virtualisation here)`,
  };
}

async function libvirtCheck(runner: Runner, distro: Distro): Promise<Check> {
  const base = { id: 'libvirt', title: 'libvirt' };
  const session = runner.settings.mode === 'session';
  try {
    const r = await runner.run(virshCommand(runner, ['version'], false));
    const library = /Using library: (.*)/.exec(r.stdout)?.[1]?.trim();
    const hypervisor = /Running hypervisor: (.*)/.exec(r.stdout)?.[1]?.trim();
    return { ...base, status: 'ok', found: `reachable at ${runner.settings.libvirtUri} (${[library, hypervisor].filter(Boolean).join(', ')})` };
  } catch (error) {
    if (error instanceof ToolMissingError) return { ...base, status: 'fail', found: `not checked: ${error.message}`, fix: installCommand(TOOLS.virsh.packages, distro) };
    const detail = error instanceof LibvirtUnreachableError ? error.message : (error as Error).message.split('\n')[0]!;
    return {
      ...base,
      status: 'fail',
      found: detail,
      fix: session
        ? `${installCommand({ debian: 'libvirt-daemon', fedora: 'libvirt-daemon-kvm', arch: 'libvirt' }, distro)} (qemu:///session starts its daemon on demand)`
        : fs.existsSync('/run/systemd/system')
          ? 'sudo systemctl enable --now libvirtd'
          : 'sudo libvirtd -d (no systemd here: start the daemon yourself), or set LIBVIRT_URI',
    };
  }
}

interface FirmwareDescriptor {
  'interface-types'?: string[];
  mapping?: { executable?: { filename?: string }; 'nvram-template'?: { filename?: string } };
  targets?: { architecture?: string }[];
  features?: string[];
}

function firmwareCheck(ctx: HostContext, distro: Distro): Check {
  const base = { id: 'firmware', title: 'UEFI firmware (OVMF)' };
  const fix = installCommand({ debian: 'ovmf', fedora: 'edk2-ovmf', arch: 'edk2-ovmf' }, distro);
  const ovmf = ctx.settings.ovmf;
  if (ovmf) {
    const missing = [ovmf.code, ovmf.vars].filter((f) => !fs.existsSync(f));
    return missing.length === 0
      ? { ...base, status: 'ok', found: `OVMF_CODE=${ovmf.code}, OVMF_VARS=${ovmf.vars}` }
      : { ...base, status: 'fail', found: `missing: ${missing.join(', ')}`, fix: `${fix}, or fix OVMF_CODE/OVMF_VARS` };
  }
  const dirs = ['/usr/share/qemu/firmware', '/etc/qemu/firmware', path.join(os.homedir(), '.config', 'qemu', 'firmware')];
  for (const dir of dirs) {
    let files: string[] = [];
    try {
      files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    } catch {
      continue;
    }
    for (const file of files) {
      let desc: FirmwareDescriptor;
      try {
        desc = JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')) as FirmwareDescriptor;
      } catch {
        continue;
      }
      const code = desc.mapping?.executable?.filename;
      if (
        desc['interface-types']?.includes('uefi') &&
        desc.targets?.some((t) => t.architecture === 'x86_64') &&
        !desc.features?.includes('secure-boot') &&
        code &&
        fs.existsSync(code)
      ) {
        return { ...base, status: 'ok', found: `${path.join(dir, file)}: ${code} (no Secure Boot, as libvirt will pick it)` };
      }
    }
  }
  return { ...base, status: 'fail', found: 'no UEFI firmware without Secure Boot described in /usr/share/qemu/firmware', fix };
}

const modeOf = (st: fs.Stats): string => octalMode(st.mode);

function baseDirCheck(ctx: HostContext): Check {
  const base = { id: 'base-dir', title: 'base-image folder' };
  const dir = ctx.settings.baseDir;
  const fix = 'ivm host setup --apply';
  const session = ctx.settings.mode === 'session';
  const owner = session ? (process.getuid?.() ?? 0) : 0;
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    return { ...base, status: 'fail', found: `IVM_BASE_DIR=${dir} does not exist`, fix };
  }
  if (!st.isDirectory()) return { ...base, status: 'fail', found: `IVM_BASE_DIR=${dir} is not a folder`, fix: `remove ${dir}, then: ${fix}` };
  const problems: string[] = [];
  if (st.uid !== owner) problems.push(`owned by uid ${st.uid}, not ${session ? 'you' : 'root'}`);
  if ((st.mode & 0o7777) !== 0o755) problems.push(`mode ${modeOf(st)}, not 0755`);
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch (error) {
    problems.push(`its images cannot be listed by this user (${(error as NodeJS.ErrnoException).code})`);
    return { ...base, status: 'fail', found: `${dir}: ${problems.join('; ')}`, fix };
  }
  const images = entries.filter((e) => e.isFile() && !e.name.startsWith('.'));
  const writable = images.filter((e) => (fs.statSync(path.join(dir, e.name)).mode & 0o7777) !== 0o444).map((e) => e.name);
  if (writable.length > 0) problems.push(`not 0444: ${writable.join(', ')}`);
  if (problems.length > 0) return { ...base, status: 'fail', found: `${dir}: ${problems.join('; ')}`, fix };
  return { ...base, status: 'ok', found: `${dir}: ${session ? 'yours' : 'root'}, 0755, ${images.length} image(s), all 0444` };
}

/** The folders above `dir` that the QEMU user (not root, not the owner) cannot pass through (no o+x). */
export function unreachableAncestors(dir: string): string[] {
  const blocked: string[] = [];
  for (let current = path.resolve(dir); ; current = path.dirname(current)) {
    try {
      const st = fs.statSync(current);
      if (st.isDirectory() && (st.mode & 0o001) === 0) blocked.push(current);
    } catch {
      // not there yet: host setup makes it
    }
    if (current === path.dirname(current)) break;
  }
  return blocked.reverse();
}

function reachableCheck(ctx: HostContext): Check {
  const base = { id: 'reachable', title: "folders QEMU must reach" };
  if (ctx.settings.mode === 'session') return { ...base, status: 'skip', found: 'session mode: QEMU runs as you' };
  const problems = [
    ...unreachableAncestors(ctx.settings.baseDir).map((d) => ({ dir: d, of: 'IVM_BASE_DIR' })),
    ...unreachableAncestors(ctx.settings.vmDir).map((d) => ({ dir: d, of: 'IVM_VM_DIR' })),
  ];
  if (problems.length === 0) return { ...base, status: 'ok', found: `QEMU (libvirt's unprivileged user) can pass through every folder above ${ctx.settings.baseDir} and ${ctx.settings.vmDir}` };
  const dirs = [...new Set(problems.map((p) => p.dir))];
  return {
    ...base,
    status: 'fail',
    found: `${dirs.join(', ')}: no search permission for others, so QEMU cannot open the images below (${[...new Set(problems.map((p) => p.of))].join(', ')})`,
    fix: `sudo chmod o+x ${dirs.join(' ')} (or choose folders outside them, e.g. the defaults under /var/lib/libvirt)`,
  };
}

function appArmorCheck(ctx: HostContext, host: AppArmorHost): Check {
  const base = { id: 'apparmor', title: 'AppArmor' };
  if (ctx.settings.mode === 'session') return { ...base, status: 'skip', found: 'session mode: libvirt loads no per-VM AppArmor profile' };
  const state = appArmorState(host, canonical(ctx.settings.baseDir));
  if (!state.enabled) return { ...base, status: 'skip', found: `${state.enabledWhy}: no rule needed` };
  if (state.problem || !state.target) {
    return { ...base, status: 'fail', found: `enabled, but ${state.problem}`, fix: `add "include if exists <abstractions/libvirt-qemu.d>" to the libvirt-qemu abstraction (or reinstall libvirt's AppArmor files), then: ivm host setup --apply` };
  }
  if (!state.present) {
    return {
      ...base,
      status: 'fail',
      found: `enabled, and the rule for ${ctx.settings.baseDir} is ${state.current === undefined ? 'missing' : 'out of date'} in ${state.target.file}`,
      fix: 'ivm host setup --apply',
    };
  }
  return { ...base, status: 'ok', found: `enabled; the rule for ${ctx.settings.baseDir} is in ${state.target.file}` };
}

interface VmDisk {
  vm: string;
  overlay: string;
  backing: string[];
  files: string[];
  /** A backing file the overlay names that does not exist. */
  missing?: string;
}

async function vmDisks(ctx: HostContext): Promise<VmDisk[] | string> {
  if (!ctx.project) return 'no ivm project here';
  const disks: VmDisk[] = [];
  for (const name of machineNames(ctx.project)) {
    const paths = vmPaths(ctx.settings, ctx.project, name);
    // The /var disk has no backing file: it only counts for the hidden-folder check.
    if (fs.existsSync(paths.var)) disks.push({ vm: name, overlay: '', backing: [], files: [paths.var] });
    // The boot overlay, and the one `ivm rollback` returns to.
    for (const [label, overlay] of [[name, paths.boot], [`${name} (rollback)`, paths.bootPrevious]] as const) {
      if (!fs.existsSync(overlay)) continue;
      // The overlay's own header first: reading the whole chain fails when a base is gone.
      const top = await imageInfo(ctx.runner, overlay);
      const direct = top['full-backing-filename'] ?? top['backing-filename'];
      if (direct !== undefined && !fs.existsSync(direct)) {
        disks.push({ vm: label, overlay, backing: [direct], files: [overlay], missing: direct });
        continue;
      }
      const backing = direct === undefined ? [] : (await backingChain(ctx.runner, overlay)).slice(1).map((info) => info.filename);
      disks.push({ vm: label, overlay, backing, files: [overlay, ...backing] });
    }
  }
  return disks;
}

function backingCheck(ctx: HostContext, disks: VmDisk[] | string): Check {
  const base = { id: 'backing-files', title: "VMs' backing files" };
  if (typeof disks === 'string') return { ...base, status: 'skip', found: `${disks}: no VM to check` };
  const gone = disks.filter((d) => d.missing !== undefined);
  const goneCurrent = gone.filter((d) => !d.vm.endsWith('(rollback)'));
  if (goneCurrent.length > 0) {
    return {
      ...base,
      status: 'fail',
      found: goneCurrent.map((d) => `${d.vm}: its base ${d.missing} is gone, so it cannot boot`).join('; '),
      fix: `ivm upgrade ${goneCurrent[0]!.vm} (makes a new boot overlay on the machine's latest base, keeping /var)`,
    };
  }
  const withBase = disks.filter((d) => d.backing.length > 0 && d.missing === undefined);
  const outside = withBase.flatMap((d) => d.backing.filter((b) => !isInside(ctx.settings.baseDir, b)).map((b) => ({ vm: d.vm, overlay: d.overlay, file: b })));
  if (outside.length > 0) {
    const first = outside[0]!;
    return {
      ...base,
      status: 'fail',
      found: outside.map((o) => `${o.vm}: backing file ${o.file} is outside IVM_BASE_DIR (${ctx.settings.baseDir})`).join('; '),
      fix: first.vm.endsWith('(rollback)')
        ? `move it into IVM_BASE_DIR and point the overlay there: qemu-img rebase -u -F qcow2 -b ${path.join(ctx.settings.baseDir, path.basename(first.file))} ${first.overlay}`
        : `ivm upgrade ${first.vm} (builds its base into IVM_BASE_DIR and moves the VM onto it, keeping /var)`,
    };
  }
  const noBase = disks.filter((d) => d.backing.length === 0 && d.overlay !== '');
  if (noBase.length > 0) {
    return { ...base, status: 'warn', found: `${noBase.map((d) => d.vm).join(', ')}: boot disk without a backing file`, fix: `ivm upgrade ${noBase[0]!.vm.split(' ')[0]}` };
  }
  if (gone.length > 0) {
    return {
      ...base,
      status: 'warn',
      found: gone.map((d) => `${d.vm}: the previous base ${d.missing} is gone, so ivm rollback is impossible`).join('; '),
      fix: 'nothing to do unless you need that rollback: the next ivm upgrade replaces the rollback target',
    };
  }
  return { ...base, status: 'ok', found: withBase.length === 0 ? 'no VM disks yet' : `${new Set(withBase.map((d) => d.vm.split(' ')[0])).size} VM(s), every backing file inside ${ctx.settings.baseDir}` };
}

function hiddenHomeCheck(ctx: HostContext, disks: VmDisk[] | string): Check {
  const base = { id: 'hidden-home', title: 'images outside hidden home folders' };
  const places = [
    { what: 'IVM_BASE_DIR', file: ctx.settings.baseDir },
    { what: 'IVM_VM_DIR', file: ctx.settings.vmDir },
    ...(typeof disks === 'string' ? [] : disks.flatMap((d) => d.files.map((file) => ({ what: d.vm, file })))),
  ];
  const hidden = places
    .map((p) => ({ ...p, home: hiddenHomeFolder(canonical(p.file)) ?? hiddenHomeFolder(p.file) }))
    .filter((p) => p.home !== undefined);
  if (hidden.length === 0) return { ...base, status: 'ok', found: 'no disk image in a hidden folder under a home directory' };
  const first = hidden[0]!;
  const variable = first.what === 'IVM_VM_DIR' ? 'IVM_VM_DIR' : 'IVM_BASE_DIR';
  return {
    ...base,
    status: 'fail',
    found: `${hidden.map((h) => `${h.what}: ${h.file}`).join('; ')} ${hidden.length > 1 ? 'are' : 'is'} in a hidden folder under ${first.home} (AppArmor denies QEMU @{HOME}/.*)`,
    fix: `export ${variable}=${path.join(first.home!, 'ivm', variable === 'IVM_VM_DIR' ? 'images' : 'base-images')} (a folder that is not hidden), move the images there and run: ivm host setup --apply`,
  };
}

async function networksCheck(ctx: HostContext, machines: Machine[], libvirtOk: boolean): Promise<Check> {
  const base = { id: 'networks', title: "machines' networks" };
  if (!ctx.project) return { ...base, status: 'skip', found: 'no ivm project here' };
  if (ctx.settings.mode === 'session') return { ...base, status: 'skip', found: 'session mode: machines on a network use user-mode networking; bridges go through qemu-bridge-helper' };
  if (!libvirtOk) return { ...base, status: 'skip', found: 'libvirt is unreachable' };
  const problems: { found: string; fix: string }[] = [];
  const seen = new Map<string, Awaited<ReturnType<typeof networkInfo>>>();
  for (const machine of machines) {
    const { network, bridge } = machine.meta;
    if (bridge !== undefined) {
      if (!fs.existsSync(path.join('/sys/class/net', bridge))) {
        problems.push({ found: `${machine.name}: host bridge ${bridge} does not exist`, fix: `make the bridge ${bridge} on the host (your distribution's network configuration), or use a libvirt network` });
      }
      continue;
    }
    if (network === undefined) continue;
    if (!seen.has(network)) seen.set(network, await networkInfo(ctx.runner, network));
    const info = seen.get(network);
    if (!info) problems.push({ found: `${machine.name}: network ${network} does not exist`, fix: `ivm net create ${network} --kind nat --cidr 192.168.100.0/24 (a CIDR no other network uses)` });
    else if (!info.active) problems.push({ found: `${machine.name}: network ${network} is not active`, fix: `virsh -c ${ctx.settings.libvirtUri} net-start ${network} && virsh -c ${ctx.settings.libvirtUri} net-autostart ${network}` });
  }
  if (problems.length > 0) return { ...base, status: 'fail', found: problems.map((p) => p.found).join('; '), fix: problems[0]!.fix };
  return { ...base, status: 'ok', found: machines.length === 0 ? 'no machines' : `${machines.length} machine(s), every network or bridge there` };
}

async function diskTypeCheck(ctx: HostContext, machines: Machine[], libvirtOk: boolean): Promise<Check> {
  const base = { id: 'disk-type', title: "domains' disks" };
  if (!ctx.project) return { ...base, status: 'skip', found: 'no ivm project here' };
  if (!libvirtOk) return { ...base, status: 'skip', found: 'libvirt is unreachable' };
  const bad: string[] = [];
  let defined = 0;
  for (const machine of machines) {
    const r = await ctx.runner.run(virshCommand(ctx.runner, ['dumpxml', machine.name], false), { allowFailure: true });
    if (r.exitCode !== 0) continue;
    defined++;
    for (const disk of r.stdout.matchAll(/<disk\b[^>]*\btype=['"]([^'"]+)['"][^>]*\bdevice=['"]disk['"]|<disk\b[^>]*\bdevice=['"]disk['"][^>]*\btype=['"]([^'"]+)['"]/g)) {
      const type = disk[1] ?? disk[2];
      if (type !== 'file') bad.push(`${machine.name}: <disk type='${type}'>`);
    }
  }
  if (bad.length > 0) {
    return { ...base, status: 'fail', found: `${bad.join('; ')}: libvirt's AppArmor helper follows backing chains of file disks only`, fix: `ivm define ${bad[0]!.split(':')[0]}` };
  }
  return { ...base, status: 'ok', found: defined === 0 ? 'no domain defined' : `${defined} domain(s), every disk <disk type='file'>` };
}

export async function runDoctor(ctx: HostContext, host: AppArmorHost = appArmorHost()): Promise<DoctorReport> {
  const distro = detectDistro();
  const { runner, settings } = ctx;
  const checks: Check[] = [];
  checks.push({
    id: 'mode',
    title: 'mode',
    status: 'ok',
    found:
      settings.mode === 'session'
        ? `session (${settings.libvirtUri}): VMs run as you, no root and no sudo`
        : `system (${settings.libvirtUri}): libvirtd as root${settings.sudo.length > 0 ? `, root commands through ${settings.sudo.join(' ')}` : ''}`,
  });
  for (const tool of ['nix', 'qemu-img', 'guestfish', 'virsh', 'ssh'] as const) checks.push(await toolCheck(runner, tool, distro));
  checks.push(await nixVersionCheck(runner));
  checks.push(await e2fsprogsCheck(runner, distro));
  checks.push(kernelCheck(runner, distro));
  const machines = await loadMachines(ctx);
  checks.push(await kvmCheck(ctx, machines));
  const libvirt = await libvirtCheck(runner, distro);
  checks.push(libvirt);
  checks.push(firmwareCheck(ctx, distro));
  checks.push(baseDirCheck(ctx));
  checks.push(reachableCheck(ctx));
  checks.push(appArmorCheck(ctx, host));
  let disks: VmDisk[] | string;
  try {
    disks = await vmDisks(ctx);
  } catch (error) {
    disks = `VM disks not readable: ${error instanceof IvmError ? error.message.split('\n')[0] : String(error)}`;
  }
  checks.push(backingCheck(ctx, disks));
  checks.push(hiddenHomeCheck(ctx, disks));
  checks.push(await networksCheck(ctx, machines, libvirt.status === 'ok'));
  checks.push(await diskTypeCheck(ctx, machines, libvirt.status === 'ok'));
  return { ok: checks.every((c) => c.status !== 'fail'), mode: settings.mode, libvirtUri: settings.libvirtUri, checks };
}

const LABEL: Record<CheckStatus, string> = { ok: 'ok', warn: 'warn', fail: 'FAIL', skip: 'skip' };

export function formatDoctor(report: DoctorReport): string[] {
  const lines: string[] = [];
  for (const check of report.checks) {
    lines.push(`${LABEL[check.status].padEnd(5)} ${check.title}: ${check.found}`);
    if (check.fix && check.status !== 'ok' && check.status !== 'skip') lines.push(`      fix: ${check.fix}`);
  }
  const failed = report.checks.filter((c) => c.status === 'fail').length;
  lines.push(failed === 0 ? 'everything ivm needs is here' : `${failed} check(s) failed`);
  return lines;
}

// The stand-in base image for end-to-end tests: a real bootable UEFI qcow2
// (systemd-boot, Debian kernel, busybox initramfs) standing in for the NixOS
// image that `nix build` produces, plus a parser for what it prints on the
// serial console. See build-standin-image.sh for the image itself.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';

export const supportDir = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(supportDir, '..', '..');
export const standinScript = path.join(supportDir, 'build-standin-image.sh');
/** The `nix` stand-in: `build` prints $IVM_STANDIN_OUT, anything else runs the real nix. */
export const standinNix = path.join(supportDir, 'standin-nix');
/** File name of the image inside an output directory. */
export const STANDIN_IMAGE_NAME = 'standin.qcow2';

/** Cache root for built images (git-ignored); override with IVM_TEST_CACHE. */
export function standinCacheRoot(): string {
  return process.env.IVM_TEST_CACHE
    ? path.join(process.env.IVM_TEST_CACHE, 'standin')
    : path.join(repoRoot, '.cache', 'standin');
}

async function fileFingerprint(p: string): Promise<string> {
  try {
    const s = await stat(p);
    return `${p}:${s.size}:${Math.floor(s.mtimeMs)}`;
  } catch {
    return `${p}:missing`;
  }
}

/** Everything the built bytes depend on: the script, the variant and the Debian inputs. */
async function cacheKey(variant: string): Promise<string> {
  const h = createHash('sha256');
  h.update(await readFile(standinScript));
  h.update(`\0${variant}\0`);
  const kernels = (await readdir('/boot').catch(() => [] as string[]))
    .filter((n) => n.startsWith('vmlinuz-'))
    .sort();
  for (const k of kernels) h.update(await fileFingerprint(path.join('/boot', k)));
  h.update(await fileFingerprint('/usr/lib/systemd/boot/efi/systemd-bootx64.efi'));
  h.update(await fileFingerprint('/bin/busybox'));
  // Copied into the initramfs with their libraries (sshd for *-agent guests, resize2fs for /var).
  h.update(await fileFingerprint('/usr/sbin/sshd'));
  h.update(await fileFingerprint('/sbin/resize2fs'));
  return h.digest('hex');
}

function checkVariant(variant: string): void {
  if (!/^[A-Za-z0-9._-]+$/.test(variant)) throw new Error(`bad stand-in variant: ${JSON.stringify(variant)}`);
}

/** Builds (or reuses from the cache) the stand-in image for `variant`; returns the cached qcow2 path. */
export async function cachedStandinImage(variant = 'a'): Promise<string> {
  checkVariant(variant);
  const root = standinCacheRoot();
  const dir = path.join(root, variant);
  const image = path.join(dir, STANDIN_IMAGE_NAME);
  const key = await cacheKey(variant);
  const have = await readFile(path.join(dir, 'key'), 'utf8').catch(() => '');
  if (have.trim() === key) {
    try {
      await stat(image);
      return image;
    } catch {
      // fall through and rebuild
    }
  }
  await mkdir(root, { recursive: true });
  const tmp = path.join(root, `.tmp-${variant}-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const r = await execa(standinScript, [tmp, variant], { reject: false, all: true });
    if (r.exitCode !== 0) {
      throw new Error(`build-standin-image.sh ${variant} failed (exit ${r.exitCode}):\n${r.all ?? ''}`);
    }
    await writeFile(path.join(tmp, 'key'), `${key}\n`);
    await rm(dir, { recursive: true, force: true });
    try {
      await rename(tmp, dir);
    } catch (e) {
      // Another process won the race: use its result if it is the same build.
      const other = await readFile(path.join(dir, 'key'), 'utf8').catch(() => '');
      if (other.trim() !== key) throw e;
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return image;
}

/**
 * Puts the stand-in image for `variant` (default "a") at `dir`/standin.qcow2, built once per
 * variant and cached under <repo>/.cache/standin/<variant>/. The copy is mode 0444, like a file
 * in the Nix store, and `dir` then holds exactly one *.qcow2, so it can serve as IVM_STANDIN_OUT
 * for standin-nix. Without `dir`, returns the cached image itself (do not modify it).
 * Returns the path of the qcow2.
 */
export async function buildStandinImage(dir?: string, variant = 'a'): Promise<string> {
  const cached = await cachedStandinImage(variant);
  if (dir === undefined) return cached;
  await mkdir(dir, { recursive: true });
  const out = path.join(path.resolve(dir), STANDIN_IMAGE_NAME);
  const tmp = `${out}.tmp-${process.pid}`;
  await copyFile(cached, tmp);
  await chmod(tmp, 0o444);
  await rename(tmp, out);
  return out;
}

/** sha256 (hex) of a file's bytes. */
export async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

export interface StandinFile {
  /** Permission bits, e.g. 0o444. */
  mode: number;
  /** The same as a 4-digit octal string, e.g. "0444" (the form identity-files.json uses). */
  modeOctal: string;
  uid: number;
  gid: number;
  size: number;
  /** Content decoded as UTF-8. */
  content: string;
  bytes: Buffer;
}

export interface StandinDir {
  mode: number;
  modeOctal: string;
  uid: number;
  gid: number;
}

export interface StandinLog {
  /** The VARIANT baked into the image that booted (null if the guest never got that far). */
  variant: string | null;
  kernel: string | null;
  /** Regular files in /identity of the ivm-var filesystem (/var/identity in the guest). */
  files: Record<string, StandinFile>;
  /** Top-level directories of the ivm-var filesystem (identity, home, root, ...). */
  dirs: Record<string, StandinDir>;
  /** /sys/block/vda/ro was 1. */
  vdaReadOnly: boolean | null;
  /** Writing a sector of /dev/vda failed. */
  vdaWriteFailed: boolean | null;
  /** Device the ivm-var label was found on (e.g. /dev/vdb) and whether it is a whole disk. */
  varDevice: string | null;
  varWholeDisk: boolean | null;
  /** Result of writing /standin-boot-count on the ivm-var filesystem. */
  vdbWrite: 'ok' | 'fail' | null;
  /** Boots counted on this /var disk, this one included (the last boot's, when the log holds several). */
  bootCount: number | null;
  /** Every boot count the log holds, in order: a VM reset or rebooted while libvirt logs its console adds one. */
  bootCounts: number[];
  /** How many "IVM-STANDIN begin" lines: the boots this serial log saw. */
  begins: number;
  /**
   * The /var filesystem after the guest grew it to its disk (resize2fs, online, as systemd-growfs
   * does for NixOS): statfs's total blocks and block size, and their product (the last boot's).
   */
  varFs: { size: number; blocks: number; bsize: number } | null;
  /** A *-hold guest: the boot counts at which it waited for the ACPI power button, and how each wait ended. */
  holds: { boots: number; end: 'power-button' | 'timeout' | null }[];
  /** Address leased by DHCP on eth0; null when none (or not reported). */
  dhcpIp: string | null;
  /** The address the guest agent reported when libvirt asked it (hostname *-agent only). */
  agentIp: string | null;
  /** Who ended the SSH phase (the user name an ssh login wrote; hostname *-agent only). */
  sshDoneBy: string | null;
  /** Saw both "IVM-STANDIN begin" and "IVM-STANDIN end". */
  complete: boolean;
  /** "IVM-STANDIN error ..." messages, plus lines that could not be parsed. */
  errors: string[];
  /** Modules that failed to load (harmless for CPU-specific ones). */
  skippedModules: string[];
  /** Every IVM-* line, cleaned. */
  lines: string[];
}

function parseFields(rest: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const tok of rest.split(/\s+/)) {
    const eq = tok.indexOf('=');
    if (eq > 0) out[tok.slice(0, eq)] = tok.slice(eq + 1);
  }
  return out;
}

function octal(mode: number): string {
  return mode.toString(8).padStart(4, '0');
}

function int(v: string | undefined): number {
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : NaN;
}

/** Parses the stand-in guest's serial console output (see build-standin-image.sh). */
export function parseStandinLog(text: string): StandinLog {
  const log: StandinLog = {
    variant: null,
    kernel: null,
    files: {},
    dirs: {},
    vdaReadOnly: null,
    vdaWriteFailed: null,
    varDevice: null,
    varWholeDisk: null,
    vdbWrite: null,
    bootCount: null,
    bootCounts: [],
    begins: 0,
    varFs: null,
    holds: [],
    dhcpIp: null,
    agentIp: null,
    sshDoneBy: null,
    complete: false,
    errors: [],
    skippedModules: [],
    lines: [],
  };
  let begun = false;
  let ended = false;
  // eslint-disable-next-line no-control-regex
  const clean = text.replace(/\x1b\[[0-9;=?]*[A-Za-z]/g, '');
  for (const raw of clean.split(/\r?\n|\r/)) {
    const m = /(IVM-[A-Z0-9]+)(?:\s+(.*))?$/.exec(raw);
    if (!m) continue;
    const tag = m[1]!;
    const rest = (m[2] ?? '').trim();
    log.lines.push(`${tag} ${rest}`.trim());
    const f = parseFields(rest);
    switch (tag) {
      case 'IVM-STANDIN': {
        const word = rest.split(/\s+/)[0];
        if (word === 'begin') {
          begun = true;
          log.begins += 1;
          log.variant = f.variant ?? null;
          log.kernel = f.kernel ?? null;
        } else if (word === 'end') {
          ended = true;
        } else if (word === 'error') {
          log.errors.push(rest.slice('error'.length).trim());
        } else {
          log.errors.push(`unparsed: ${raw.trim()}`);
        }
        break;
      }
      case 'IVM-FILE': {
        const name = rest.split(/\s+/)[0];
        const mode = parseInt(f.mode ?? '', 8);
        if (!name || Number.isNaN(mode) || f.b64 === undefined) {
          log.errors.push(`unparsed: ${raw.trim()}`);
          break;
        }
        const bytes = Buffer.from(f.b64, 'base64');
        log.files[name] = {
          mode,
          modeOctal: octal(mode),
          uid: int(f.uid),
          gid: int(f.gid),
          size: f.size !== undefined ? int(f.size) : bytes.length,
          content: bytes.toString('utf8'),
          bytes,
        };
        break;
      }
      case 'IVM-DIR': {
        const name = rest.split(/\s+/)[0];
        const mode = parseInt(f.mode ?? '', 8);
        if (!name || Number.isNaN(mode)) {
          log.errors.push(`unparsed: ${raw.trim()}`);
          break;
        }
        log.dirs[name] = { mode, modeOctal: octal(mode), uid: int(f.uid), gid: int(f.gid) };
        break;
      }
      case 'IVM-VDA':
        if (f.ro !== undefined) log.vdaReadOnly = f.ro === '1';
        if (f.writefailed !== undefined) log.vdaWriteFailed = f.writefailed === '1';
        break;
      case 'IVM-VAR':
        log.varDevice = f.dev ?? null;
        if (f.wholedisk !== undefined) log.varWholeDisk = f.wholedisk === '1';
        break;
      case 'IVM-VDB':
        log.vdbWrite = f.write === 'ok' ? 'ok' : 'fail';
        if (f.boots !== undefined) {
          log.bootCount = int(f.boots);
          log.bootCounts.push(log.bootCount);
        }
        break;
      case 'IVM-VARFS': {
        const [size, blocks, bsize] = [int(f.size), int(f.blocks), int(f.bsize)];
        if ([size, blocks, bsize].some(Number.isNaN) || size !== blocks * bsize) {
          log.errors.push(`unparsed: ${raw.trim()}`);
          break;
        }
        log.varFs = { size, blocks, bsize };
        break;
      }
      case 'IVM-HOLD': {
        const word = rest.split(/\s+/)[0];
        if (word === 'waiting') log.holds.push({ boots: int(f.boots), end: null });
        else if ((word === 'power-button' || word === 'timeout') && log.holds.length > 0) log.holds[log.holds.length - 1]!.end = word;
        else log.errors.push(`unparsed: ${raw.trim()}`);
        break;
      }
      case 'IVM-DHCP':
        log.dhcpIp = f.ip && f.ip !== 'none' ? f.ip : null;
        break;
      case 'IVM-AGENT':
        if (rest.startsWith('error')) log.errors.push(`agent: ${rest.slice('error'.length).trim()}`);
        else log.agentIp = f.ip ?? null;
        break;
      case 'IVM-SSH':
        if (rest.startsWith('error')) log.errors.push(`ssh: ${rest.slice('error'.length).trim()}`);
        else log.sshDoneBy = f.by ?? null;
        break;
      case 'IVM-MODULE':
        if (f.skipped) log.skippedModules.push(f.skipped);
        break;
      case 'IVM-DMESG':
        break;
      default:
        log.errors.push(`unknown line: ${raw.trim()}`);
    }
  }
  log.complete = begun && ended;
  return log;
}

/**
 * Polls a serial log (read() throws until the file exists) until the guest has said `until`;
 * returns the log then, or fails naming `label` with what the guest said so far.
 */
export async function waitForStandinLog(label: string, read: () => StandinLog, until: (log: StandinLog) => boolean, timeoutMs: number): Promise<StandinLog> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let log: StandinLog | undefined;
    try {
      log = read();
    } catch {
      /* not written yet */
    }
    if (log && until(log)) return log;
    if (Date.now() > deadline) throw new Error(`${label}: the serial log did not get there within ${timeoutMs} ms:\n${log?.lines.join('\n') ?? '(none)'}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

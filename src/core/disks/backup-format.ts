// The backup file, as data: one tar (GNU format) of exactly three members, in this order:
//
//   manifest.json  what the backup is (machine, machine-id, base, sizes, the machine's files), JSON
//   var.qcow2      the /var disk, compressed (qemu-img convert -c; zstd where qemu has it)
//   SHA256SUMS     the sha256 of the two members before it, as `sha256sum` prints them
//
// Every member is a whole number of 512-byte blocks (the manifest and SHA256SUMS are padded with
// newlines, the image with zero bytes, which qcow2 ignores), and the file ends right after tar's two
// zero blocks (ivm writes the archive itself: there is no record padding). So every byte of the file is checked on restore: a
// header by tar's own header checksum, a member's data by SHA256SUMS, SHA256SUMS by itself (a changed
// digit no longer matches, a changed padding byte is not a newline), the end-of-archive blocks by tar
// (it reports anything else there) and the length by the layout. A flipped byte anywhere is refused.
//
// Pure functions only: the host side (tar, qemu-img, checksums) is in backup-io.ts.
import crypto from 'node:crypto';
import path from 'node:path';
import { BadInputError } from '../../errors.ts';
import { MACHINE_NAME } from '../machine/names.ts';

export const BLOCK = 512;
export const MANIFEST = 'manifest.json';
export const IMAGE = 'var.qcow2';
export const SUMS = 'SHA256SUMS';
/** The members, in the order they are in the tar. */
export const MEMBERS = [MANIFEST, IMAGE, SUMS] as const;
export const BACKUP_SUFFIX = '.ivm-backup';
/** A manifest larger than this is not one ivm wrote (it holds a few small text files). */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const FORMAT = 'ivm-backup';
const FORMAT_VERSION = 1;

/** A file of machines/NAME carried in the manifest, for `restore --as` (a new machine made from it). */
export interface ManifestFile {
  name: string;
  /** "0644", "0600". */
  mode: string;
  base64: string;
}

export interface BackupManifest {
  format: typeof FORMAT;
  formatVersion: typeof FORMAT_VERSION;
  machine: string;
  machineId: string;
  /** The base the VM's boot overlay was backed by when it was backed up (null: it had none). */
  base: string | null;
  /** The /var disk's virtual size, bytes. */
  varVirtualSize: number;
  image: { file: typeof IMAGE; sha256: string; bytes: number; compression: 'zstd' | 'zlib' };
  ivmVersion: string;
  /** ISO 8601, UTC. */
  createdAt: string;
  /** meta.nix, default.nix and the identity files a new machine may take (see clone.ts). */
  files: ManifestFile[];
}

/** 20240102T030405Z: a UTC time that sorts as text and is a file name everywhere. */
export function timeStamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
}

export function backupFileName(machine: string, date: Date): string {
  return `${machine}-${timeStamp(date)}${BACKUP_SUFFIX}`;
}

export const sha256 = (data: string | Buffer): string => crypto.createHash('sha256').update(data).digest('hex');

/** The text padded with newlines to whole blocks (JSON and SHA256SUMS both allow trailing newlines). */
export function padText(text: string): string {
  const bytes = Buffer.byteLength(text);
  return text + '\n'.repeat((BLOCK - (bytes % BLOCK)) % BLOCK);
}

/** The manifest as it is stored: JSON, padded with newlines to whole blocks, or to `bytes` when given (a whole number of blocks it fits in). */
export function manifestText(manifest: BackupManifest, bytes?: number): string {
  const text = `${JSON.stringify(manifest, null, 2)}\n`;
  if (bytes === undefined) return padText(text);
  const length = Buffer.byteLength(text);
  if (bytes % BLOCK !== 0 || length > bytes) throw new Error(`internal: a manifest of ${length} bytes in ${bytes}`);
  return text + '\n'.repeat(bytes - length);
}

/**
 * The blocks the manifest gets before the image is made (its image's checksum and length are known
 * only after): its length with the longest checksum and length it can name. The image is then
 * written straight into the backup file, right after, and never copied.
 */
export function manifestBlocksFor(manifest: Omit<BackupManifest, 'image'> & { image: Omit<BackupManifest['image'], 'sha256' | 'bytes'> }): number {
  const widest: BackupManifest = { ...manifest, image: { ...manifest.image, sha256: 'f'.repeat(64), bytes: Number.MAX_SAFE_INTEGER } };
  return Buffer.byteLength(padText(`${JSON.stringify(widest, null, 2)}\n`));
}

/**
 * The 512-byte header GNU tar writes (`--format=gnu --owner=0 --group=0 --numeric-owner
 * --mode=0600`) for a regular file: name, mode 0600, owner 0/0, size (octal, or base-256 from
 * 8 GiB on, as GNU tar writes it), time, and the header checksum. `tar -t` reads it back (checked).
 */
export function tarHeader(name: string, bytes: number, mtimeSeconds: number): Buffer {
  if (Buffer.byteLength(name) > 99 || /[^\x21-\x7e]/.test(name)) throw new Error(`internal: tar member name ${JSON.stringify(name)}`);
  const header = Buffer.alloc(BLOCK, 0);
  const octal = (value: number, at: number, width: number) => header.write(`${value.toString(8).padStart(width - 1, '0')}\0`, at, width, 'ascii');
  header.write(name, 0, 100, 'ascii');
  octal(0o600, 100, 8);
  octal(0, 108, 8);
  octal(0, 116, 8);
  if (bytes < 8 ** 11) octal(bytes, 124, 12);
  else {
    // GNU base-256: the top bit of the first byte set, then the size big-endian in the other 11.
    header[124] = 0x80;
    let rest = BigInt(bytes);
    for (let i = 135; i > 124; i--) {
      header[i] = Number(rest & 0xffn);
      rest >>= 8n;
    }
  }
  octal(mtimeSeconds, 136, 12);
  header.write('0', 156, 1, 'ascii');
  // GNU magic and version ("ustar  \0"); no owner names (--numeric-owner).
  header.write('ustar  \0', 257, 8, 'ascii');
  // The checksum: the sum of the header's bytes with its own field as blanks; six octal digits, NUL, blank.
  header.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'ascii');
  return header;
}

export function sumsText(manifestSha: string, imageSha: string): string {
  return padText(`${manifestSha}  ${MANIFEST}\n${imageSha}  ${IMAGE}\n`);
}

/** The exact length of a backup whose members have these (block-padded) sizes: headers, data, two zero blocks. */
export function backupBytes(manifestBytes: number, imageBytes: number, sumsBytes: number): number {
  return 3 * BLOCK + manifestBytes + imageBytes + sumsBytes + 2 * BLOCK;
}

/** Why a file is not an intact backup: refused (exit 2), nothing changed. */
export class CorruptBackupError extends BadInputError {
  constructor(file: string, why: string) {
    super(`${file} is not an intact ivm backup: ${why}; nothing was changed`, 'a byte of it changed (or it was not made by ivm backup create): use another backup');
  }
}

export interface Member {
  name: string;
  /** Block number of its header. */
  block: number;
  bytes: number;
}

/** Where each member's data lies in the file. */
export interface Layout {
  manifest: Member;
  image: Member;
  sums: Member;
  /** The file's exact length. */
  bytes: number;
}

/** Byte offset of a member's data. */
export const dataOffset = (member: Member): number => (member.block + 1) * BLOCK;

/**
 * The layout from `tar -tv --block-number --numeric-owner` (GNU tar): exactly the three members,
 * regular files, each right after the one before it, each a whole number of blocks, then the end of
 * the archive (a last "block N:" line; its words are the locale's), and a file of exactly that length.
 */
export function parseLayout(file: string, listing: string, fileBytes: number): Layout {
  const bad = (why: string): never => {
    throw new CorruptBackupError(file, why);
  };
  const lines = listing.split('\n').filter((line) => line !== '');
  if (lines.length !== MEMBERS.length + 1) bad(`it holds ${Math.max(lines.length - 1, 0)} entries, not ${MEMBERS.join(', ')}`);
  const members: Member[] = MEMBERS.map((want, i) => {
    // block 2: -rw------- 0/0   5120 2023-11-14 22:13 var.qcow2
    const match = /^block (\d+): (\S{10}) \d+\/\d+ +(\d+) \S+ \S+ (.*)$/.exec(lines[i]!);
    if (!match) return bad(`entry ${i + 1} is not a plain file (${JSON.stringify(lines[i]!.slice(0, 120))})`);
    const [, block, mode, size, name] = match;
    if (!mode!.startsWith('-')) bad(`${name} is not a regular file`);
    // ivm packs every member 0600; root's tar would give the restored disk (it will hold the host
    // key) whatever mode the archive says, so any other is refused.
    if (mode !== '-rw-------') bad(`${name} has mode ${mode}, not -rw------- (0600)`);
    if (name !== want) bad(`entry ${i + 1} is ${JSON.stringify(name)}, not ${want}`);
    const bytes = Number(size);
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes % BLOCK !== 0) bad(`${want} is ${size} bytes, not whole blocks`);
    return { name: want, block: Number(block), bytes };
  });
  let next = 0;
  for (const member of members) {
    if (member.block !== next) bad(`${member.name} is at block ${member.block}, not ${next}`);
    next = member.block + 1 + member.bytes / BLOCK;
  }
  const end = /^block (\d+): /.exec(lines[MEMBERS.length]!);
  if (!end || Number(end[1]) !== next) bad('its end is not right after its last member');
  const [manifest, image, sums] = members as [Member, Member, Member];
  if (manifest.bytes > MAX_MANIFEST_BYTES) bad(`its manifest is ${manifest.bytes} bytes`);
  if (sums.bytes !== BLOCK) bad(`${SUMS} is ${sums.bytes} bytes, not ${BLOCK}`);
  const bytes = backupBytes(manifest.bytes, image.bytes, sums.bytes);
  if (fileBytes !== bytes) bad(`it is ${fileBytes} bytes long, not ${bytes} (${fileBytes > bytes ? 'something was added after its end' : 'it was cut short'})`);
  return { manifest, image, sums, bytes };
}

/** The two digests of SHA256SUMS: exactly its two lines, then newlines only. */
export function parseSums(file: string, text: string): { manifest: string; image: string } {
  const match = /^([0-9a-f]{64}) {2}manifest\.json\n([0-9a-f]{64}) {2}var\.qcow2\n(\n*)$/.exec(text);
  if (!match || Buffer.byteLength(text) !== BLOCK) throw new CorruptBackupError(file, `${SUMS} is not the two checksums ivm writes`);
  return { manifest: match[1]!, image: match[2]! };
}

const SHA256 = /^[0-9a-f]{64}$/;
const MODE = /^0[0-7]{3}$/;

/** The manifest's text, checked field by field (after its checksum matched: a file another tool made may still lie). */
export function parseManifest(file: string, text: string, imageBytes: number): BackupManifest {
  const bad = (why: string): never => {
    throw new CorruptBackupError(file, `its manifest ${why}`);
  };
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return bad('is not JSON');
  }
  const m = (value ?? {}) as Record<string, unknown>;
  if (m.format !== FORMAT) bad(`is not an ivm backup's (format ${JSON.stringify(m.format)})`);
  if (m.formatVersion !== FORMAT_VERSION) bad(`is of format version ${JSON.stringify(m.formatVersion)}; this ivm reads version ${FORMAT_VERSION}`);
  if (typeof m.machine !== 'string' || !MACHINE_NAME.test(m.machine)) bad('names no valid machine');
  if (typeof m.machineId !== 'string' || !/^[0-9a-f]{32}$/.test(m.machineId)) bad('has no valid machine-id');
  if (m.base !== null && (typeof m.base !== 'string' || !path.isAbsolute(m.base))) bad('has a base that is not an absolute path');
  // It is printed: no control character (C0, DEL, C1) may reach the terminal.
  if (typeof m.base === 'string' && /[\x00-\x1f\x7f-\x9f]/.test(m.base)) bad('has a base path holding control characters');
  if (typeof m.varVirtualSize !== 'number' || !Number.isSafeInteger(m.varVirtualSize) || m.varVirtualSize <= 0) bad('has no /var size');
  const image = (m.image ?? {}) as Record<string, unknown>;
  if (image.file !== IMAGE || typeof image.sha256 !== 'string' || !SHA256.test(image.sha256) || image.bytes !== imageBytes) bad('does not describe its image');
  if (image.compression !== 'zstd' && image.compression !== 'zlib') bad('names no known compression');
  if (typeof m.ivmVersion !== 'string' || typeof m.createdAt !== 'string' || Number.isNaN(Date.parse(m.createdAt))) bad('has no version or time');
  if (!Array.isArray(m.files)) bad('has no file list');
  const seen = new Set<string>();
  for (const entry of m.files as unknown[]) {
    const f = (entry ?? {}) as Record<string, unknown>;
    if (typeof f.name !== 'string' || !/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(f.name) || seen.has(f.name)) bad('lists a file with a bad or repeated name');
    if (typeof f.mode !== 'string' || !MODE.test(f.mode) || typeof f.base64 !== 'string') bad(`lists ${String(f.name)} without its mode or content`);
    seen.add(f.name as string);
  }
  return value as BackupManifest;
}

/** What `ivm backup list` shows of one file. */
export interface BackupEntry {
  file: string;
  /** The file's length. */
  bytes: number;
  /** True when every byte checked out. */
  ok: boolean;
  /** Why not, when not. */
  problem?: string;
  machine?: string;
  machineId?: string;
  createdAt?: string;
  base?: string | null;
  varVirtualSize?: number;
  imageSha256?: string;
  compression?: string;
  ivmVersion?: string;
}

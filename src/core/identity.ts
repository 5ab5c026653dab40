// Per-machine identity in machines/<name>/: generated once, never overwritten. The same files are
// copied onto the /var disk by create (and resynced by upgrade); identity-files.json lists them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, RefusedError } from '../errors.ts';
import type { Context } from './context.ts';
import { IDENTITY_FILES, KNOWN_HOSTS_FILE } from './identity-files.ts';
import { formatPrivateKey, formatPublicKey, generateKeyPair, parsePrivateKey } from './openssh-key.ts';
import { octalMode } from './file-mode.ts';

const KEY = 'ssh_host_ed25519_key';
const PUB = `${KEY}.pub`;

/** A file `ivm identity` would write, with its content (secret content is never printed). */
export interface IdentityWrite {
  name: string;
  path: string;
  mode: number;
  content: string;
  secret: boolean;
}

/** What is missing in a machine's folder, with the content to write. Reads, never writes. */
export function planIdentity(dir: string, name: string): IdentityWrite[] {
  const has = (file: string) => fs.existsSync(path.join(dir, file));
  const writes: IdentityWrite[] = [];
  const add = (file: string, content: string, mode = 0o644, secret = false) =>
    writes.push({ name: file, path: path.join(dir, file), mode, content, secret });

  if (!has('machine-id')) add('machine-id', `${crypto.randomBytes(16).toString('hex')}\n`);
  if (!has('hostname')) add('hostname', `${name}\n`);

  let publicKey: Uint8Array;
  if (has(KEY)) {
    publicKey = parsePrivateKey(fs.readFileSync(path.join(dir, KEY), 'utf8'), path.join(dir, KEY)).publicKey;
  } else {
    if (has(PUB)) {
      throw new BadInputError(
        `${path.join(dir, PUB)} exists but its private key ${KEY} does not`,
        'restore the private key, or remove the .pub (and known_hosts) to make a new host key',
      );
    }
    const pair = generateKeyPair();
    publicKey = pair.publicKey;
    add(KEY, formatPrivateKey(pair, `root@${name}`), 0o600, true);
  }
  const pub = formatPublicKey(publicKey, `root@${name}`);
  if (!has(PUB)) add(PUB, pub);
  if (!has(KNOWN_HOSTS_FILE)) add(KNOWN_HOSTS_FILE, knownHostsLine(name, pub));
  return writes;
}

/** The known_hosts line that pins the VM's host key under its machine name (ssh -o HostKeyAlias=NAME). */
export function knownHostsLine(name: string, publicKeyLine: string): string {
  const [type, blob] = publicKeyLine.trim().split(/\s+/);
  return `${name} ${type} ${blob}\n`;
}

/**
 * Creates the identity files a machine lacks (prints them under --dry-run) and returns what it
 * wrote or would write. Never replaces a file.
 */
export function ensureIdentity(ctx: Context, dir: string, name: string): IdentityWrite[] {
  const writes = planIdentity(dir, name);
  if (!ctx.runner.dryRun) writeIdentity(writes);
  for (const write of writes) {
    ctx.say(`${ctx.runner.dryRun ? 'would write' : 'wrote'} ${write.path} (mode ${octalMode(write.mode)})`);
  }
  return writes;
}

/** Writes planned files; 'wx' refuses to replace a file that appeared meanwhile. */
export function writeIdentity(writes: IdentityWrite[]): void {
  for (const write of writes) {
    fs.writeFileSync(write.path, write.content, { mode: write.mode, flag: 'wx' });
    fs.chmodSync(write.path, write.mode);
  }
}

/** A file of the identity table present in the machine's folder, to be copied onto /var. */
export interface IdentitySource {
  name: string;
  local: string;
  /** Mode on the /var disk, from identity-files.json. */
  mode: string;
}

/**
 * The identity files to copy. Generated ones must exist (see ensureIdentity), or be `pending`: planned
 * by a dry run that did not write them.
 */
export function identitySources(dir: string, pending: string[] = []): IdentitySource[] {
  const sources: IdentitySource[] = [];
  for (const file of IDENTITY_FILES) {
    const local = path.join(dir, file.name);
    if (fs.existsSync(local) || pending.includes(file.name)) sources.push({ name: file.name, local, mode: file.mode });
    else if (file.kind === 'generated') throw new BadInputError(`${local} is missing`, `run: ivm identity ${path.basename(dir)}`);
  }
  return sources;
}

/**
 * The machine-id, after checking that every generated identity file is there. For operations on an
 * existing VM, whose identity is on its /var disk: generating a missing file would replace it.
 */
export function requireIdentity(dir: string, name: string): string {
  const missing = IDENTITY_FILES.filter((f) => f.kind === 'generated' && !fs.existsSync(path.join(dir, f.name))).map((f) => f.name);
  if (missing.length > 0) {
    throw new RefusedError(
      `${dir} lacks ${missing.join(', ')}: the VM's identity is on its /var disk, and a new file would replace it there; nothing was changed`,
      `restore the files (from a backup, or from the disk with guestfish --ro), or start afresh with: ivm recreate ${name}`,
    );
  }
  return machineIdFrom(dir);
}

export function machineIdFrom(dir: string): string {
  const file = path.join(dir, 'machine-id');
  const text = fs.readFileSync(file, 'utf8').trim();
  if (!/^[0-9a-f]{32}$/.test(text)) throw new BadInputError(`${file}: a machine-id is 32 lowercase hex digits`);
  return text;
}

function digest(label: string, machineId: string): Buffer {
  return crypto.createHash('sha256').update(`ivm:${label}:${machineId}`).digest();
}

/** The libvirt uuid: derived from the machine-id, so redefining the VM keeps it. */
export function domainUuid(machineId: string): string {
  const b = digest('uuid', machineId).subarray(0, 16);
  b[6] = (b[6]! & 0x0f) | 0x40;
  b[8] = (b[8]! & 0x3f) | 0x80;
  const hex = b.toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The MAC address (QEMU's 52:54:00 prefix), derived from the machine-id: stable DHCP leases. */
export function macAddress(machineId: string): string {
  const b = digest('mac', machineId);
  return ['52', '54', '00', ...[0, 1, 2].map((i) => b[i]!.toString(16).padStart(2, '0'))].join(':');
}

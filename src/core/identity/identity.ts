// Per-machine identity in machines/<name>/: generated once, never overwritten. The same files are
// copied onto the /var disk by create (and resynced by upgrade); identity-files.json lists them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, RefusedError } from '../../errors.ts';
import type { Context } from '../context.ts';
import { IDENTITY_FILES, KNOWN_HOSTS_FILE, SECRETS_DIR, SECRETS_FOLDER } from './identity-files.ts';
import { formatPrivateKey, formatPublicKey, generateKeyPair, parsePrivateKey } from './openssh-key.ts';
import { octalMode } from '../file-mode.ts';
import { networkConf, type Machine } from '../machine/machine.ts';
import { createFileExclusive, folderExists, readRegularFile, readRegularText, regularFileExists } from '../safe-files.ts';
import { makePrivateFolder } from '../private-folder.ts';

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
  const has = (file: string) => regularFileExists(path.join(dir, file));
  const writes: IdentityWrite[] = [];
  const add = (file: string, content: string, mode = 0o644, secret = false) =>
    writes.push({ name: file, path: path.join(dir, file), mode, content, secret });

  if (!has('machine-id')) add('machine-id', `${crypto.randomBytes(16).toString('hex')}\n`);
  if (!has('hostname')) add('hostname', `${name}\n`);

  let publicKey: Uint8Array;
  if (has(KEY)) {
    publicKey = parsePrivateKey(readRegularText(path.join(dir, KEY)), path.join(dir, KEY)).publicKey;
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

/** Writes planned files, each whole and never replacing anything (not even a link) that appeared meanwhile. */
export function writeIdentity(writes: IdentityWrite[]): void {
  for (const write of writes) {
    try {
      createFileExclusive(write.path, write.content, write.mode);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      throw new RefusedError(`${write.path} appeared while ivm was writing the identity: it was left as it is`, 'run the command again');
    }
  }
}

/** A file of the identity table present in the machine's folder, to be copied onto /var. */
export interface IdentitySource {
  name: string;
  /**
   * The file the tools read: a private copy made by stageSources (what guestfish, run through SUDO,
   * is given), or the machine's own file before staging and under --dry-run (printed only).
   */
  local: string;
  /** Mode on the /var disk, from identity-files.json. */
  mode: string;
  /** The content, read once by this user (undefined for a file a dry run only planned). */
  content: Buffer | undefined;
}

/**
 * The identity files to copy, read now as the invoking user, each a regular file and not a link (or
 * refused, exit 2). Generated ones must exist (see ensureIdentity), or be `pending`: planned by a dry
 * run that did not write them.
 */
export function identitySources(dir: string, pending: string[] = []): IdentitySource[] {
  const sources: IdentitySource[] = [];
  for (const file of IDENTITY_FILES) {
    const local = path.join(dir, file.name);
    if (regularFileExists(local)) sources.push({ name: file.name, local, mode: file.mode, content: readRegularFile(local) });
    else if (pending.includes(file.name)) sources.push({ name: file.name, local, mode: file.mode, content: undefined });
    else if (file.kind === 'generated') throw new BadInputError(`${local} is missing`, `run: ivm identity ${path.basename(dir)}`);
  }
  return [...sources, ...secretSources(dir)];
}

/**
 * A machine's identity sources: its files (identitySources) and what meta.nix makes part of the
 * identity: the network.conf of a static address on a bridge. A network.conf of its own as well is
 * refused (exit 2): one of them would silently win.
 */
export function machineSources(machine: Machine, pending: string[] = []): IdentitySource[] {
  const sources = identitySources(machine.dir, pending);
  const staticNetwork = machine.meta.staticNetwork;
  if (!staticNetwork) return sources;
  if (sources.some((source) => source.name === NETWORK_CONF)) {
    throw new BadInputError(
      `${path.join(machine.dir, NETWORK_CONF)} and the static address in ${machine.metaFile} both say the VM's address`,
      `keep one: remove ${NETWORK_CONF}, or ipAddress/gateway/dns from meta.nix`,
    );
  }
  const entry = IDENTITY_FILES.find((file) => file.name === NETWORK_CONF);
  const content = Buffer.from(networkConf(staticNetwork));
  // Not a file of the project: shown (dry run) as what it is made from.
  return [...sources, { name: NETWORK_CONF, local: `${machine.metaFile} (ipAddress, gateway, dns)`, mode: entry?.mode ?? '0644', content }];
}

const NETWORK_CONF = 'network.conf';

/** A secret's name: a file name a systemd credential can carry (no dot first, no slash or colon). */
const SECRET_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,254}$/;

/**
 * The files of machines/NAME/secrets/ (git-ignored), as sources named `secrets/FILE` at the secrets'
 * mode (0600): copied to /var/identity/secrets/ by create and every upgrade, like the other
 * identity files. The folder and each file are checked as every project file is (no link, no odd
 * file); a name a credential cannot carry is refused.
 */
export function secretSources(dir: string): IdentitySource[] {
  const folder = path.join(dir, SECRETS_FOLDER);
  if (!folderExists(folder)) return [];
  return fs
    .readdirSync(folder)
    .sort()
    .map((name) => {
      const local = path.join(folder, name);
      if (!SECRET_NAME.test(name)) {
        throw new BadInputError(`${local}: a secret's name is letters, digits and _.+- (not first: a dot), at most 255 characters`, 'rename it (it becomes a systemd credential name)');
      }
      return { name: `${SECRETS_FOLDER}/${name}`, local, mode: SECRETS_DIR.fileMode, content: readRegularFile(local) };
    });
}

/** Identity sources copied into a private folder, for the privileged tools; remove() when done. */
export interface StagedSources {
  sources: IdentitySource[];
  remove: () => void;
}

/**
 * Writes the sources' content (read by this user) into a new 0700 folder under `parent`, so that
 * guestfish, running as root, reads only files ivm wrote there, never a path of the project. Under
 * --dry-run nothing is written and the machine's own paths are shown.
 */
export function stageSources(sources: IdentitySource[], parent: string, dryRun: boolean): StagedSources {
  if (dryRun) return { sources, remove: () => undefined };
  const folder = makePrivateFolder(parent);
  try {
    const staged = sources.map((source) => {
      if (source.content === undefined) throw new Error(`internal: ${source.name} has no content to stage`);
      const local = path.join(folder.dir, source.name);
      fs.mkdirSync(path.dirname(local), { recursive: true, mode: 0o700 });
      fs.writeFileSync(local, source.content, { mode: 0o600, flag: 'wx' });
      return { ...source, local };
    });
    return { sources: staged, remove: folder.remove };
  } catch (error) {
    folder.remove();
    throw error;
  }
}

/**
 * The machine-id, after checking that every generated identity file is there. For operations on an
 * existing VM, whose identity is on its /var disk: generating a missing file would replace it.
 */
export function requireIdentity(dir: string, name: string): string {
  const missing = IDENTITY_FILES.filter((f) => f.kind === 'generated' && !regularFileExists(path.join(dir, f.name))).map((f) => f.name);
  if (missing.length > 0) {
    throw new RefusedError(
      `${dir} lacks ${missing.join(', ')}: the VM's identity is on its /var disk, and a new file would replace it there; nothing was changed`,
      `restore the files (from a backup, or from the disk with guestfish --ro), or start afresh with: ivm recreate ${name}`,
    );
  }
  return machineIdFrom(dir);
}

/** True when the machine has a machine-id (a regular file; a link is refused). */
export function hasMachineId(dir: string): boolean {
  return regularFileExists(path.join(dir, 'machine-id'));
}

export function machineIdFrom(dir: string): string {
  const file = path.join(dir, 'machine-id');
  const text = readRegularText(file).trim();
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

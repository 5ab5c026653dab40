// Per-machine identity in machines/<name>/: generated once, never overwritten. The same files are
// copied onto the /var disk by create (and resynced by upgrade); identity-files.json lists them.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { BadInputError, RefusedError } from "../errors.js";
import { IDENTITY_FILES, KNOWN_HOSTS_FILE } from "./identity-files.js";
import { formatPrivateKey, formatPublicKey, generateKeyPair, parsePrivateKey } from "./openssh-key.js";
import { octalMode } from "./file-mode.js";
import { createFileExclusive, makePrivateFolder, readRegularFile, readRegularText, regularFileExists } from "./safe-files.js";
const KEY = 'ssh_host_ed25519_key';
const PUB = `${KEY}.pub`;
/** What is missing in a machine's folder, with the content to write. Reads, never writes. */
export function planIdentity(dir, name) {
    const has = (file) => regularFileExists(path.join(dir, file));
    const writes = [];
    const add = (file, content, mode = 0o644, secret = false) => writes.push({ name: file, path: path.join(dir, file), mode, content, secret });
    if (!has('machine-id'))
        add('machine-id', `${crypto.randomBytes(16).toString('hex')}\n`);
    if (!has('hostname'))
        add('hostname', `${name}\n`);
    let publicKey;
    if (has(KEY)) {
        publicKey = parsePrivateKey(readRegularText(path.join(dir, KEY)), path.join(dir, KEY)).publicKey;
    }
    else {
        if (has(PUB)) {
            throw new BadInputError(`${path.join(dir, PUB)} exists but its private key ${KEY} does not`, 'restore the private key, or remove the .pub (and known_hosts) to make a new host key');
        }
        const pair = generateKeyPair();
        publicKey = pair.publicKey;
        add(KEY, formatPrivateKey(pair, `root@${name}`), 0o600, true);
    }
    const pub = formatPublicKey(publicKey, `root@${name}`);
    if (!has(PUB))
        add(PUB, pub);
    if (!has(KNOWN_HOSTS_FILE))
        add(KNOWN_HOSTS_FILE, knownHostsLine(name, pub));
    return writes;
}
/** The known_hosts line that pins the VM's host key under its machine name (ssh -o HostKeyAlias=NAME). */
export function knownHostsLine(name, publicKeyLine) {
    const [type, blob] = publicKeyLine.trim().split(/\s+/);
    return `${name} ${type} ${blob}\n`;
}
/**
 * Creates the identity files a machine lacks (prints them under --dry-run) and returns what it
 * wrote or would write. Never replaces a file.
 */
export function ensureIdentity(ctx, dir, name) {
    const writes = planIdentity(dir, name);
    if (!ctx.runner.dryRun)
        writeIdentity(writes);
    for (const write of writes) {
        ctx.say(`${ctx.runner.dryRun ? 'would write' : 'wrote'} ${write.path} (mode ${octalMode(write.mode)})`);
    }
    return writes;
}
/** Writes planned files, each whole and never replacing anything (not even a link) that appeared meanwhile. */
export function writeIdentity(writes) {
    for (const write of writes) {
        try {
            createFileExclusive(write.path, write.content, write.mode);
        }
        catch (error) {
            if (error.code !== 'EEXIST')
                throw error;
            throw new RefusedError(`${write.path} appeared while ivm was writing the identity: it was left as it is`, 'run the command again');
        }
    }
}
/**
 * The identity files to copy, read now as the invoking user, each a regular file and not a link (or
 * refused, exit 2). Generated ones must exist (see ensureIdentity), or be `pending`: planned by a dry
 * run that did not write them.
 */
export function identitySources(dir, pending = []) {
    const sources = [];
    for (const file of IDENTITY_FILES) {
        const local = path.join(dir, file.name);
        if (regularFileExists(local))
            sources.push({ name: file.name, local, mode: file.mode, content: readRegularFile(local) });
        else if (pending.includes(file.name))
            sources.push({ name: file.name, local, mode: file.mode, content: undefined });
        else if (file.kind === 'generated')
            throw new BadInputError(`${local} is missing`, `run: ivm identity ${path.basename(dir)}`);
    }
    return sources;
}
/**
 * Writes the sources' content (read by this user) into a new 0700 folder under `parent`, so that
 * guestfish, running as root, reads only files ivm wrote there, never a path of the project. Under
 * --dry-run nothing is written and the machine's own paths are shown.
 */
export function stageSources(sources, parent, dryRun) {
    if (dryRun)
        return { sources, remove: () => undefined };
    const folder = makePrivateFolder(parent);
    try {
        const staged = sources.map((source) => {
            if (source.content === undefined)
                throw new Error(`internal: ${source.name} has no content to stage`);
            const local = path.join(folder.dir, source.name);
            fs.writeFileSync(local, source.content, { mode: 0o600, flag: 'wx' });
            return { ...source, local };
        });
        return { sources: staged, remove: folder.remove };
    }
    catch (error) {
        folder.remove();
        throw error;
    }
}
/**
 * The machine-id, after checking that every generated identity file is there. For operations on an
 * existing VM, whose identity is on its /var disk: generating a missing file would replace it.
 */
export function requireIdentity(dir, name) {
    const missing = IDENTITY_FILES.filter((f) => f.kind === 'generated' && !regularFileExists(path.join(dir, f.name))).map((f) => f.name);
    if (missing.length > 0) {
        throw new RefusedError(`${dir} lacks ${missing.join(', ')}: the VM's identity is on its /var disk, and a new file would replace it there; nothing was changed`, `restore the files (from a backup, or from the disk with guestfish --ro), or start afresh with: ivm recreate ${name}`);
    }
    return machineIdFrom(dir);
}
/** True when the machine has a machine-id (a regular file; a link is refused). */
export function hasMachineId(dir) {
    return regularFileExists(path.join(dir, 'machine-id'));
}
export function machineIdFrom(dir) {
    const file = path.join(dir, 'machine-id');
    const text = readRegularText(file).trim();
    if (!/^[0-9a-f]{32}$/.test(text))
        throw new BadInputError(`${file}: a machine-id is 32 lowercase hex digits`);
    return text;
}
function digest(label, machineId) {
    return crypto.createHash('sha256').update(`ivm:${label}:${machineId}`).digest();
}
/** The libvirt uuid: derived from the machine-id, so redefining the VM keeps it. */
export function domainUuid(machineId) {
    const b = digest('uuid', machineId).subarray(0, 16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = b.toString('hex');
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
/** The MAC address (QEMU's 52:54:00 prefix), derived from the machine-id: stable DHCP leases. */
export function macAddress(machineId) {
    const b = digest('mac', machineId);
    return ['52', '54', '00', ...[0, 1, 2].map((i) => b[i].toString(16).padStart(2, '0'))].join(':');
}

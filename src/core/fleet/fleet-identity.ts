// The identity last synced onto a VM's /var disk, remembered in the project (.ivm/synced/NAME.json)
// by create and upgrade (and the verbs that resync a /var disk through upgrade's code), so that
// `ivm plan` can tell whether machines/NAME/ changed since, without opening every /var disk with
// guestfish (~17 s each under TCG). It is a record of what ivm wrote, not of what the disk holds
// now: `ivm plan --deep` reads the disks themselves.
//
// Each file is kept as a salted sha256 of its name, mode and content (the record is 0600 and
// holds no content: secrets and the host key are files of the identity too).
import crypto from 'node:crypto';
import path from 'node:path';
import type { IdentitySource } from '../identity/identity.ts';
import type { Project } from '../machine/project.ts';
import { ensureFolder, readRegularText, regularFileExists, removeFile, writeFileAtomic } from '../safe-files.ts';

interface SyncedRecord {
  salt: string;
  /** Identity file name (secrets as secrets/NAME) -> digest. */
  files: Record<string, string>;
}

export function syncedRecordFile(project: Project, name: string): string {
  return path.join(project.stateDir, 'synced', `${name}.json`);
}

function digest(salt: string, source: { name: string; mode: string; content: Buffer }): string {
  return crypto.createHash('sha256').update(`${salt}\0${source.name}\0${source.mode}\0`).update(source.content).digest('hex');
}

/**
 * Remembers `sources` as what NAME's /var disk now holds in /identity. Called once a create or an
 * upgrade succeeded (`of`: the sources, or how to read them again). The record only spares `ivm plan` a disk read: if it cannot be written, the
 * old one goes, and the next plan says the identity is unknown (an upgrade then reads the disk).
 */
export function recordSyncedIdentity(project: Project, name: string, of: IdentitySource[] | (() => IdentitySource[])): void {
  const file = syncedRecordFile(project, name);
  try {
    const sources = typeof of === 'function' ? of() : of;
    if (sources.some((source) => source.content === undefined)) throw new Error('a source without content (a dry run)');
    const salt = crypto.randomBytes(16).toString('hex');
    const files: Record<string, string> = {};
    for (const source of sources) files[source.name] = digest(salt, { name: source.name, mode: source.mode, content: source.content! });
    ensureFolder(path.dirname(file), 0o700);
    writeFileAtomic(file, `${JSON.stringify({ salt, files } satisfies SyncedRecord)}\n`, 0o600);
  } catch {
    try {
      removeFile(file);
    } catch {
      /* nothing there, or nothing ivm may remove: the plan then reads it as unknown or refuses it */
    }
  }
}

export interface IdentityAgainstRecord {
  /** "unknown": no record (a VM made before ivm kept one, or a record ivm could not write). */
  state: 'in sync' | 'differs' | 'unknown';
  added: string[];
  changed: string[];
  removed: string[];
}

function readRecord(project: Project, name: string): SyncedRecord | undefined {
  const file = syncedRecordFile(project, name);
  if (!regularFileExists(file)) return undefined;
  try {
    const value = JSON.parse(readRegularText(file)) as Partial<SyncedRecord>;
    if (typeof value.salt !== 'string' || typeof value.files !== 'object' || value.files === null) return undefined;
    if (!Object.values(value.files).every((entry) => typeof entry === 'string')) return undefined;
    // Its names are printed in plan's lines ("removed NAME"): one with a control character is no
    // name ivm wrote (an escape sequence would act on the terminal), so the record says nothing.
    // eslint-disable-next-line no-control-regex
    if (Object.keys(value.files).some((file) => /[\u0000-\u001f\u007f-\u009f]/.test(file))) return undefined;
    return { salt: value.salt, files: value.files };
  } catch {
    // A record that does not parse says nothing: unknown, and the next upgrade writes a good one.
    return undefined;
  }
}

/** machines/NAME/ now (its identity sources) against the identity last synced onto its /var disk. */
export function identityAgainstRecord(project: Project, name: string, sources: IdentitySource[]): IdentityAgainstRecord {
  const record = readRecord(project, name);
  if (!record) return { state: 'unknown', added: [], changed: [], removed: [] };
  const added: string[] = [];
  const changed: string[] = [];
  for (const source of sources) {
    const was = record.files[source.name];
    if (was === undefined) added.push(source.name);
    else if (source.content === undefined || digest(record.salt, { name: source.name, mode: source.mode, content: source.content }) !== was) changed.push(source.name);
  }
  const now = new Set(sources.map((source) => source.name));
  const removed = Object.keys(record.files).filter((file) => !now.has(file)).sort();
  const state = added.length + changed.length + removed.length === 0 ? 'in sync' : 'differs';
  return { state, added, changed, removed };
}

export function describeAgainstRecord(diff: IdentityAgainstRecord): string {
  const parts: string[] = [];
  if (diff.added.length) parts.push(`added ${diff.added.join(', ')}`);
  if (diff.changed.length) parts.push(`changed ${diff.changed.join(', ')}`);
  if (diff.removed.length) parts.push(`removed ${diff.removed.join(', ')}`);
  return parts.join('; ');
}

/**
 * Forgets what was last synced onto NAME's /var disk: for a disk that was put in place or changed
 * other than by an identity sync (a restore). Until the next sync records it again, `ivm plan`
 * says the identity is unknown (an upgrade then reads the disk), never that it is in sync.
 */
export function forgetSyncedIdentity(project: Project, name: string): void {
  removeFile(syncedRecordFile(project, name));
}

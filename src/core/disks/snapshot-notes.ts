// The notes of a VM's /var snapshots. qcow2 keeps a name and a time for each internal snapshot but
// no text, so `--note` lives in the project: .ivm/snapshots/NAME.json. qemu-img's snapshot table
// stays the truth of which snapshots exist; a note is shown only for the snapshot it was written
// for, matched by name AND creation time (seconds and nanoseconds), so a note never shows on a later
// snapshot that took the same name (one deleted with qemu-img by hand, or a /var disk made anew).
import path from 'node:path';
import { BadInputError } from '../../errors.ts';
import type { Project } from '../machine/project.ts';
import { ensureFolder, readRegularText, regularFileExists, writeFileAtomic } from '../safe-files.ts';

export interface SnapshotKey {
  name: string;
  dateSec: number;
  dateNsec: number;
}

export interface SnapshotNote extends SnapshotKey {
  note: string;
}

/** The longest note ivm keeps (one line of a listing, not a document). */
export const NOTE_MAX_LENGTH = 200;

export function notesFile(project: Project, machine: string): string {
  return path.join(project.stateDir, 'snapshots', `${machine}.json`);
}

/** One line of printable text (it is printed in a table, on a terminal), at most NOTE_MAX_LENGTH characters. */
function isNoteText(note: string): boolean {
  // eslint-disable-next-line no-control-regex
  return !/[\u0000-\u001f\u007f-\u009f]/.test(note) && note.trim() !== '' && [...note].length <= NOTE_MAX_LENGTH;
}

/** A note: one line of printable text (it is printed in a table), at most NOTE_MAX_LENGTH characters. */
export function validateNote(note: string): string {
  if (!isNoteText(note)) {
    throw new BadInputError(`invalid snapshot note ${JSON.stringify(note)}`, `a note is one line of text, 1 to ${NOTE_MAX_LENGTH} characters, no control characters`);
  }
  return note;
}

// A record read back is checked as --note is: one edited by hand (or planted) must not put escape
// sequences on the terminal that `snapshot list` prints to.
const isNote = (value: unknown): value is SnapshotNote => {
  const v = value as Partial<SnapshotNote> | null;
  return (
    typeof v === 'object' &&
    v !== null &&
    typeof v.name === 'string' &&
    typeof v.note === 'string' &&
    isNoteText(v.note) &&
    Number.isInteger(v.dateSec) &&
    Number.isInteger(v.dateNsec)
  );
};

/** The notes recorded for a machine's snapshots (none when there is no record). A link or a bad record is refused. */
export function readNotes(project: Project, machine: string): SnapshotNote[] {
  const file = notesFile(project, machine);
  if (!regularFileExists(file)) return [];
  let parsed: unknown;
  try {
    parsed = JSON.parse(readRegularText(file));
  } catch {
    throw new BadInputError(`${file} is not valid JSON`, 'it holds only the notes of the snapshots (qemu-img keeps the snapshots themselves): fix or remove it');
  }
  const notes = (parsed as { notes?: unknown } | null)?.notes;
  if (!Array.isArray(notes) || !notes.every(isNote)) {
    throw new BadInputError(
      `${file} is not a snapshot note record ({"notes": [{"name", "dateSec", "dateNsec", "note"}]}, each note one line of text without control characters)`,
      'fix or remove it (it holds only the notes)',
    );
  }
  return notes.map(({ name, dateSec, dateNsec, note }) => ({ name, dateSec, dateNsec, note }));
}

export const sameSnapshot = (a: SnapshotKey, b: SnapshotKey): boolean => a.name === b.name && a.dateSec === b.dateSec && a.dateNsec === b.dateNsec;

/** The note of this very snapshot (name and creation time), if any. */
export function noteOf(notes: SnapshotNote[], snapshot: SnapshotKey): string | undefined {
  return notes.find((entry) => sameSnapshot(entry, snapshot))?.note;
}

/**
 * Writes the record: the notes of the snapshots that exist (`existing`, from qemu-img), with `add`
 * added and `remove` dropped. Notes of snapshots that are gone are dropped on the way.
 */
export function updateNotes(project: Project, machine: string, existing: SnapshotKey[], change: { add?: SnapshotNote; remove?: SnapshotKey }): void {
  const kept = readNotes(project, machine).filter(
    (entry) => existing.some((snapshot) => sameSnapshot(snapshot, entry)) && !(change.remove && sameSnapshot(change.remove, entry)) && !(change.add && sameSnapshot(change.add, entry)),
  );
  if (change.add) kept.push(change.add);
  const file = notesFile(project, machine);
  if (kept.length === 0 && !regularFileExists(file)) return;
  ensureFolder(path.dirname(file));
  writeFileAtomic(file, `${JSON.stringify({ notes: kept }, null, 2)}\n`);
}

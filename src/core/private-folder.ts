// Private folders (0700, made by this user) for the copies ivm hands to privileged tools (the
// identity it uploads, the /var tree mkfs reads), so that SUDO only ever reads paths ivm chose and
// files ivm wrote. Each is named after the run that made it (pid, start time, host), so that one a
// killed run left (it holds copies of host private keys) is removed by the next run, and a running
// one's never is.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { holderAlive, processStartTime } from './lock.ts';
import { ensureFolder } from './safe-files.ts';

const STAGE = /^stage-(\d+)\.(\d+)\.([0-9a-f]{8})-/;
const hostTag = (host: string) => crypto.createHash('sha256').update(host).digest('hex').slice(0, 8);

/** Removes the stage folders under `root` whose run is certainly gone (this host's only). */
export function removeStaleStages(root: string): string[] {
  const removed: string[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync(root);
  } catch {
    return removed;
  }
  const here = hostTag(os.hostname());
  for (const entry of entries) {
    const match = STAGE.exec(entry);
    if (!match || match[3] !== here) continue;
    if (holderAlive({ pid: Number(match[1]), startTime: match[2], host: os.hostname(), verb: '', since: '' })) continue;
    const dir = path.join(root, entry);
    // A folder of this user's only (a link or anything else there is not one of these).
    const st = fs.lstatSync(dir, { throwIfNoEntry: false });
    if (!st?.isDirectory() || st.uid !== process.getuid?.()) continue;
    fs.rmSync(dir, { recursive: true, force: true });
    removed.push(dir);
  }
  return removed;
}

/** A new private folder under `parent` (the project's .ivm/, which the host sees at the same path through HOST_CMD), else the system's temp. */
export function makePrivateFolder(parent?: string): { dir: string; remove: () => void } {
  const root = parent ?? os.tmpdir();
  ensureFolder(root, 0o700);
  removeStaleStages(root);
  const dir = fs.mkdtempSync(path.join(root, `stage-${process.pid}.${processStartTime(process.pid) ?? 0}.${hostTag(os.hostname())}-`));
  fs.chmodSync(dir, 0o700);
  return { dir, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

// Reading and writing files on a /var disk from tests. Writes go through guestfish (as a user
// would); reads use e2fsprogs' debugfs on a raw copy, which needs no appliance (milliseconds).
import { execa } from 'execa';
import { fishLine } from '../../src/host/guestfish.ts';
import { VAR_DIRS, VAR_IDENTITY_DIR, VAR_LABEL } from '../../src/core/identity/identity-files.ts';
import type { IdentitySource } from '../../src/core/identity/identity.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Writes `content` at `file` (absolute, on the /var filesystem), making its parent folders. */
export async function writeVarFile(varDisk: string, file: string, content: Buffer): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-var-'));
  const local = path.join(dir, 'content');
  fs.writeFileSync(local, content);
  try {
    await execa('guestfish', ['--no-progress-bars'], {
      input: [`add-drive ${varDisk} format:qcow2`, 'run', 'mount /dev/sda /', `mkdir-p ${path.dirname(file)}`, `upload ${local} ${file}`].join('\n'),
      env: { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' },
    });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The bytes of `file` on the /var filesystem, or undefined when it does not exist. */
export async function readVarFile(varDisk: string, file: string): Promise<Buffer | undefined> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-var-'));
  try {
    const raw = path.join(dir, 'var.raw');
    await execa('qemu-img', ['convert', '-U', '-O', 'raw', varDisk, raw]);
    const out = path.join(dir, 'out');
    await execa('debugfs', ['-R', `dump -p ${file} ${out}`, raw]);
    return fs.existsSync(out) ? fs.readFileSync(out) : undefined;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Waits until no process (an orphaned guestfish appliance) has the disk open. */
export async function waitUntilUnused(disk: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { exitCode } = await execa('pgrep', ['-f', disk], { reject: false });
    if (exitCode !== 0) return;
    if (Date.now() > deadline) throw new Error(`${disk} is still open after ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/**
 * The /var disk as a guestfish appliance makes it (as ivm create did before it made /var without
 * one): the reference test/var-image.e2e.test.ts compares the appliance-free /var with.
 */
export function initVarScript(varDisk: string, sources: IdentitySource[]): string[] {
  const script = [
    fishLine('add-drive', varDisk, 'format:qcow2'),
    'run',
    fishLine('mkfs', 'ext4', '/dev/sda', `label:${VAR_LABEL}`),
    fishLine('mount', '/dev/sda', '/'),
  ];
  for (const dir of VAR_DIRS) {
    script.push(fishLine('mkdir-p', dir.path), fishLine('chmod', dir.mode, dir.path), fishLine('chown', '0', '0', dir.path));
  }
  for (const source of sources) {
    const target = `${VAR_IDENTITY_DIR}/${source.name}`;
    script.push(fishLine('upload', source.local, target), fishLine('chown', '0', '0', target), fishLine('chmod', source.mode, target));
  }
  script.push('umount-all');
  return script;
}

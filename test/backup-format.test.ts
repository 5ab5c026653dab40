// The tar headers ivm writes into a backup itself (the image goes straight into the backup file, so
// tar never copies it): byte for byte the header GNU tar writes for the same member, and read back by
// the real tar, sizes from 8 GiB on included (GNU base-256). No VM.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import { BLOCK, manifestBlocksFor, manifestText, tarHeader, type BackupManifest } from '../src/core/disks/backup-format.ts';
import { hostRangeSha256 } from '../src/core/disks/backup-io.ts';
import { Runner } from '../src/host/runner.ts';
import { readSettings } from '../src/host/settings.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ivm-tarheader-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const list = (file: string) => execFileSync('tar', ['-t', '-v', '--block-number', '--numeric-owner', '-f', file], { env: { ...process.env, LC_ALL: 'C' } }).toString();

describe('the tar headers of a backup', () => {
  it('are the ones GNU tar writes (--format=gnu --owner=0 --group=0 --numeric-owner --mode=0600)', () => {
    for (const [name, bytes] of [['var.qcow2', 1536], ['manifest.json', 512], ['SHA256SUMS', 512]] as const) {
      fs.writeFileSync(path.join(dir, name), Buffer.alloc(bytes, 7));
      const tarFile = path.join(dir, `${name}.tar`);
      execFileSync('tar', ['-c', '--format=gnu', '--owner=0', '--group=0', '--numeric-owner', '--mode=0600', '--mtime=@1700000000', '-f', tarFile, '-C', dir, '--', name]);
      const gnu = fs.readFileSync(tarFile).subarray(0, BLOCK);
      expect(tarHeader(name, bytes, 1_700_000_000).equals(gnu), name).toBe(true);
    }
  });

  it('give a size of 8 GiB or more in base-256, which tar reads back', () => {
    const bytes = 9 * 1024 ** 3;
    const file = path.join(dir, 'big.tar');
    fs.writeFileSync(file, tarHeader('var.qcow2', bytes, 1_700_000_000));
    // Sparse: the member's data and the two end blocks read as zeros.
    fs.truncateSync(file, BLOCK + bytes + 2 * BLOCK);
    expect(list(file)).toMatch(new RegExp(`^block 0: -rw------- 0/0 +${bytes} \\S+ \\S+ var\\.qcow2\\nblock ${1 + bytes / BLOCK}: \\*\\* Block of NULs \\*\\*\\n$`));
  });

  it('the manifest gets room for the longest checksum and length before they are known, and fills it exactly', () => {
    const manifest: BackupManifest = {
      format: 'ivm-backup', formatVersion: 1, machine: 'web', machineId: '0'.repeat(32), base: '/b/x.qcow2', varVirtualSize: 1 << 30,
      image: { file: 'var.qcow2', sha256: 'a'.repeat(64), bytes: 512, compression: 'zstd' },
      ivmVersion: '0.1.0', createdAt: new Date(0).toISOString(), files: [{ name: 'hostname', mode: '0644', base64: 'd2ViCg==' }],
    };
    const room = manifestBlocksFor(manifest);
    expect(room % BLOCK).toBe(0);
    for (const bytes of [0, 512, Number.MAX_SAFE_INTEGER - 511]) {
      const text = manifestText({ ...manifest, image: { ...manifest.image, bytes } }, room);
      expect(Buffer.byteLength(text)).toBe(room);
      expect(JSON.parse(text).image.bytes).toBe(bytes);
    }
  });
});

describe('a byte range of a file ivm may not read itself', () => {
  it('is hashed from what dd prints as root (here through HOST_CMD=env: the host-side path), exactly that range', async () => {
    const file = path.join(dir, 'range.bin');
    const data = crypto.randomBytes(5 * 1024 * 1024 + 123);
    fs.writeFileSync(file, data);
    const runner = new Runner(readSettings({ ...process.env, HOST_CMD: 'env', SUDO: '' }), { dryRun: false, verbose: false });
    const want = (offset: number, length: number) => crypto.createHash('sha256').update(data.subarray(offset, offset + length)).digest('hex');
    for (const [offset, length] of [[0, data.length], [2048, 4 * 1024 * 1024 + 7], [data.length - 10, 10]] as const) {
      expect(await hostRangeSha256(runner, file, offset, length), `${offset}+${length}`).toBe(want(offset, length));
    }
    // A range past the end (a file cut short since its length was read) is an error, not a digest.
    await expect(hostRangeSha256(runner, file, data.length - 10, 20)).rejects.toThrow(/dd read 10 bytes of .* not 20/);
  });
});

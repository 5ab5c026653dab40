// The appliance-free /var disk (mkfs.ext4 -d, debugfs, qemu-img convert) against the one a guestfish
// appliance makes (mkfs, mkdir, upload, chown, chmod): the same filesystem for the guest. Both are
// read back with one read-only guestfish session: every path, its content, mode and owner, the
// label, the type and the ext4 features the NixOS modules rely on. Then the stand-in guest boots
// from an appliance-free /var (test/create.e2e.test.ts, since create now makes /var this way).
import { execa } from 'execa';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Runner } from '../src/host/runner.ts';
import { readSettings } from '../src/host/settings.ts';
import { guestfishCommand } from '../src/host/guestfish.ts';
import { createDiskCommand } from '../src/host/qemu-img.ts';
import { initVarScript } from './support/var-disk.ts';
import { copyIntoDiskCommand, mkfsCommand, ownershipCommand, stageVarTree } from '../src/core/disks/var-image.ts';
import type { IdentitySource } from '../src/core/identity/identity.ts';
import identityData from '../identity-files.json' with { type: 'json' };
import { makeScratchDir } from './support/libvirt.ts';

interface Entry {
  mode: string;
  uid: number;
  gid: number;
  sha256?: string;
}

interface Described {
  label: string;
  type: string;
  features: string[];
  blockSize: string;
  inodeSize: string;
  entries: Record<string, Entry>;
}

const env = { LIBGUESTFS_BACKEND: 'direct', LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg' };

/** Reads both disks in one guestfish launch: label, type, tune2fs features, then every path. */
async function describeDisks(disks: string[]): Promise<Described[]> {
  // A first pass lists the paths (find0 into a local file each: NUL-separated, exact).
  const lists = disks.map((d) => `${d}.paths`);
  await execa('guestfish', ['--no-progress-bars', '--ro'], {
    input: `${disks.map((d) => `add-drive ${d} format:qcow2`).join('\n')}\nrun\n${disks
      .map((_, i) => `mount-ro /dev/sd${'ab'[i]} /\nfind0 / ${lists[i]}\numount /`)
      .join('\n')}\n`,
    env,
  });
  const pathsOf = (i: number) =>
    fs
      .readFileSync(lists[i]!, 'utf8')
      .split('\0')
      .filter((p) => p !== '')
      .map((p) => `/${p}`);
  const script: string[] = [...disks.map((d) => `add-drive ${d} format:qcow2 readonly:true`), 'run'];
  const plan: { disk: number; kind: 'label' | 'type' | 'tune' | 'stat' | 'sum'; path?: string }[] = [];
  disks.forEach((_, i) => {
    const dev = `/dev/sd${'ab'[i]}`;
    script.push(`vfs-label ${dev}`, 'echo ::item::', `vfs-type ${dev}`, 'echo ::item::', `tune2fs-l ${dev}`, 'echo ::item::', `mount-ro ${dev} /`);
    plan.push({ disk: i, kind: 'label' }, { disk: i, kind: 'type' }, { disk: i, kind: 'tune' });
    for (const p of ['/', ...pathsOf(i)]) {
      script.push(`lstatns "${p}"`, 'echo ::item::');
      plan.push({ disk: i, kind: 'stat', path: p });
      // Only the identity files are regular files here (the rest are folders): no failing command
      // in the script whose error could disturb what is read.
      if (/^\/identity\/[^/]+$/.test(p)) {
        script.push(`checksum sha256 "${p}"`, 'echo ::item::');
        plan.push({ disk: i, kind: 'sum', path: p });
      }
    }
    script.push('umount /');
  });
  // stripFinalNewline off: the last item ends in "::item::\n" like every other, whichever path
  // find0 happened to list last (ext4's hashed folder order differs from one mkfs to the next).
  const r = await execa('guestfish', ['--no-progress-bars'], { input: `${script.join('\n')}\n`, env, reject: false, stripFinalNewline: false });
  expect(r.exitCode, r.stderr).toBe(0);
  const items = r.stdout.split('::item::\n');
  const result: Described[] = disks.map(() => ({ label: '', type: '', features: [], blockSize: '', inodeSize: '', entries: {} }));
  plan.forEach((step, n) => {
    const text = items[n] ?? '';
    const d = result[step.disk]!;
    if (step.kind === 'label') d.label = text.trim();
    else if (step.kind === 'type') d.type = text.trim();
    else if (step.kind === 'tune') {
      const field = (key: string) => new RegExp(`^${key}: (.*)$`, 'm').exec(text)?.[1]?.trim() ?? '';
      d.features = field('Filesystem features').split(/\s+/).sort();
      d.blockSize = field('Block size');
      d.inodeSize = field('Inode size');
    } else if (step.kind === 'stat') {
      const num = (key: string) => Number(new RegExp(`^${key}: (\\d+)$`, 'm').exec(text)?.[1]);
      d.entries[step.path!] = { mode: (num('st_mode') & 0o177777).toString(8), uid: num('st_uid'), gid: num('st_gid') };
    } else if (/^[0-9a-f]{64}$/.test(text.trim())) {
      d.entries[step.path!]!.sha256 = text.trim();
    }
  });
  return result;
}

describe('a /var made without an appliance is the /var guestfish makes', () => {
  let dir: string;
  const sources: IdentitySource[] = [];

  beforeAll(async () => {
    dir = await makeScratchDir('ivm-varimage-');
    fs.mkdirSync(path.join(dir, 'src'));
    // Every file of the identity table, with content of its own.
    for (const file of identityData.files) {
      const content = Buffer.from(file.name === 'machine-id' ? `${crypto.randomBytes(16).toString('hex')}\n` : `${file.name} ${crypto.randomBytes(8).toString('hex')}\n`);
      const local = path.join(dir, 'src', file.name);
      fs.writeFileSync(local, content);
      sources.push({ name: file.name, local, mode: file.mode, content });
    }
  });

  afterAll(async () => {
    await fs.promises.rm(dir, { recursive: true, force: true });
  });

  it('same paths, contents, modes, owners, label, type and ext4 features', async () => {
    const runner = new Runner(readSettings({ ...process.env, ...env, SUDO: '' }), { dryRun: false, verbose: false });
    const viaAppliance = path.join(dir, 'appliance.qcow2');
    await runner.run(createDiskCommand(viaAppliance, '128M'));
    await runner.run(guestfishCommand(initVarScript(viaAppliance, sources)));

    const viaMkfs = path.join(dir, 'mkfs.qcow2');
    const stage = stageVarTree(dir, sources, false);
    // As a user who is not root stages it (session mode): mkfs copies that uid, debugfs must fix it.
    await execa('chown', ['-R', 'nobody:nogroup', stage.tree]);
    const started = Date.now();
    await runner.run(mkfsCommand(stage, '128M'));
    await runner.run(ownershipCommand(stage));
    await runner.run(createDiskCommand(viaMkfs, '128M'));
    await runner.run(copyIntoDiskCommand(stage, viaMkfs));
    const ms = Date.now() - started;
    stage.remove();
    console.log(`appliance-free /var: ${ms} ms`);

    const [a, b] = await describeDisks([viaAppliance, viaMkfs]);
    expect(b!.label).toBe('ivm-var');
    expect(b!.type).toBe('ext4');
    expect(b!.features).toEqual(a!.features);
    expect([b!.blockSize, b!.inodeSize]).toEqual([a!.blockSize, a!.inodeSize]);
    // Every path both ways (lost+found included), then each one's content, mode and owner.
    expect(Object.keys(b!.entries).sort()).toEqual(Object.keys(a!.entries).sort());
    expect(Object.keys(b!.entries)).toContain('/identity/ssh_host_ed25519_key');
    expect(b!.entries).toEqual(a!.entries);
    // Each identity file was read on both disks (a sum lost in parsing must not compare equal).
    for (const d of [a!, b!]) {
      for (const [p, e] of Object.entries(d.entries)) if (/^\/identity\/[^/]+$/.test(p)) expect(e.sha256, p).toMatch(/^[0-9a-f]{64}$/);
    }
    expect(b!.entries['/identity/ssh_host_ed25519_key']).toMatchObject({ mode: '100600', uid: 0, gid: 0 });
    expect(b!.entries['/']).toMatchObject({ mode: '40755', uid: 0, gid: 0 });
    expect(b!.entries['/root']).toMatchObject({ mode: '40700', uid: 0, gid: 0 });
  });

  it('debugfs failing inside its script (it exits 0 then) is a failure, not a silent success', async () => {
    const runner = new Runner(readSettings({ ...process.env, SUDO: '' }), { dryRun: false, verbose: false });
    const stage = stageVarTree(dir, sources, false);
    try {
      await runner.run(mkfsCommand(stage, '64M'));
      const bad = { ...stage, paths: ['/no/such/path'] };
      await expect(runner.run(ownershipCommand(bad))).rejects.toThrow(/debugfs[\s\S]*\/no\/such\/path: File not found/);
    } finally {
      stage.remove();
    }
  });
});

// The Justfile: `just` lists the recipes and variables; a recipe is a thin call of ivm that honours
// the override variables; `just create-vm web` works on this repository's own machines (shown with
// --dry-run, which still evaluates machines/web/meta.nix with the real nix and asks libvirt).
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureLibvirt, virsh } from './support/libvirt.ts';
import { repoRoot, standinNix } from './support/standin.ts';

const just = path.join(repoRoot, 'node_modules', '.bin', 'just');

async function runJust(args: string[], env: Record<string, string> = {}) {
  return execa(just, ['--justfile', path.join(repoRoot, 'Justfile'), ...args], {
    cwd: repoRoot,
    env: { IVM_BASE_DIR: '/nonexistent/ivm-base', IVM_VM_DIR: '/nonexistent/ivm-images', ...env },
    reject: false,
  });
}

describe('Justfile', () => {
  beforeAll(async () => {
    await ensureLibvirt();
  });

  it('lists the recipes and the variables with their defaults when given no recipe', async () => {
    const result = await runJust([], { SUDO: '' });
    expect(result.exitCode, result.stderr).toBe(0);
    for (const recipe of ['build', 'build-libvirt-xml', 'create-vm name', 'define-vm name', 'start-vm name', 'list', 'stop-vm', 'destroy-vm', 'console']) {
      expect(result.stdout).toContain(recipe);
    }
    // A recipe for every verb used day to day, each listed with its arguments.
    const everyDay = [
      'upgrade-vm name *flags', 'rollback-vm name *flags', 'recreate-vm name *flags', 'status name *flags', 'gc *flags',
      'ip name *flags', 'wait name *flags', 'ssh name *command', 'ssh-admin name *command', 'doctor *flags', 'host-setup *flags',
      'net-create name *flags', 'net-list *flags', 'net-destroy name *flags', 'net-reserve machine *flags', 'completion shell *flags', 'new-vm name *flags', 'profiles *flags',
      'grow-vm name *flags', 'reboot-vm name *flags',
      'snapshot name *args', 'snapshots name *flags', 'snapshot-restore name snap *flags', 'snapshot-delete name snap *flags',
      'export-vm name *args',
      'backup name *flags', 'backups name *flags', 'backup-restore name file *flags', 'clone-vm src new *flags',
      'plan *args', 'apply *args',
    ];
    for (const recipe of everyDay) expect(result.stdout).toMatch(new RegExp(`^ +${recipe.replace(/\*/g, '\\*')} +# `, 'm'));
    for (const variable of ['HOST_CMD', 'SUDO', 'JUST', 'NIX', 'VIRSH', 'QEMU_IMG', 'GUESTFISH', 'CP', 'READLINK', 'SSH', 'APPARMOR_PARSER', 'LIBGUESTFS_BACKEND', 'LIBVIRT_URI', 'OVMF_CODE', 'OVMF_VARS']) {
      expect(result.stdout).toMatch(new RegExp(`^${variable} +:= `, 'm'));
    }
    expect(result.stdout).toMatch(/^LIBVIRT_URI +:= "qemu:\/\/\/system"$/m);
  });

  it('every recipe that runs ivm passes extra flags through (its last parameter takes any number of words)', async () => {
    // README: "Extra flags go through". A recipe ending in a plain parameter would make
    // `just start-vm web --dry-run` look for a recipe named --dry-run.
    const dump = await runJust(['--dump', '--dump-format', 'json']);
    expect(dump.exitCode, dump.stderr).toBe(0);
    const recipes = (JSON.parse(dump.stdout) as { recipes: Record<string, { parameters: { kind: string }[] }> }).recipes;
    const fixed = Object.entries(recipes).filter(([name, r]) => name !== 'default' && r.parameters.at(-1)?.kind !== 'star').map(([name]) => name);
    expect(fixed).toEqual([]);
    expect(Object.keys(recipes).length).toBeGreaterThan(40);
    const started = await runJust(['start-vm', 'web', '--dry-run'], { SUDO: '' });
    expect(started.stderr).not.toMatch(/does not contain recipe/);
  });

  it('create-vm web plans the whole creation on a fresh checkout, touching nothing', async () => {
    const before = fs.readdirSync(path.join(repoRoot, 'machines', 'web')).sort();
    const result = await runJust(['create-vm', 'web', '--dry-run'], { NIX: standinNix, IVM_STANDIN_OUT: '/nonexistent' });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain(`build --extra-experimental-features 'nix-command flakes' 'git+file://${repoRoot}#nixosConfigurations.web.config.system.build.ivmImage'`);
    expect(result.stdout).toContain('qemu-img create -q -f qcow2 -b');
    expect(result.stdout).toContain('/nonexistent/ivm-images/web-var.qcow2.new 20G');
    expect(result.stdout).toContain('chmod 0600 /nonexistent/ivm-images/web-var.qcow2.new');
    expect(result.stdout).toContain('ln -T /nonexistent/ivm-images/web-var.qcow2.new /nonexistent/ivm-images/web-var.qcow2');
    expect(result.stdout).toContain('mkfs.ext4 -q -F -t ext4 -L ivm-var');
    expect(result.stdout).toMatch(/virsh -c qemu:\/\/\/system define .*libvirt\/web\.xml/);
    expect(fs.readdirSync(path.join(repoRoot, 'machines', 'web')).sort()).toEqual(before);
  });

  it('ssh NAME COMMAND...: every word after the name is the remote command, options too', async () => {
    // machines/web has no identity in a checkout: ivm gets as far as the pinned key, so the words
    // reached it as a command (an option -l would have been refused by the argument parser, exit 2).
    for (const recipe of ['ssh', 'ssh-admin']) {
      const result = await runJust([recipe, 'web', 'ls', '-l', '--all']);
      expect(result.stderr).not.toMatch(/unknown option/);
      expect(result.stderr).toContain('machines/web/known_hosts is missing: there is no pinned host key for web');
      expect(result.exitCode).not.toBe(0);
    }
  });

  it('net-create passes its flags through to ivm (a --dry-run: nothing is defined)', async () => {
    const result = await runJust(['net-create', 'ivmjustnet', '--kind', 'isolated', '--cidr', '10.254.7.0/24', '--dry-run'], { SUDO: '' });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toContain('<name>ivmjustnet</name>');
    expect(result.stdout).toContain("<ip address='10.254.7.1' netmask='255.255.255.0'>");
    expect(result.stdout).not.toContain('<forward');
    expect(result.stdout).toMatch(/^virsh -c qemu:\/\/\/system net-start ivmjustnet$/m);
    expect(await virsh(['net-list', '--all', '--name'])).not.toContain('ivmjustnet');
  });

  it('passes HOST_CMD and the tool variables through to every command', async () => {
    const result = await runJust(['list'], { HOST_CMD: 'env', SUDO: '', VIRSH: '' });
    expect(result.exitCode, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^web +\S/m);
    const verbose = await runJust(['create-vm', 'web', '--dry-run', '--verbose'], { HOST_CMD: 'env', SUDO: '', NIX: '', VIRSH: '' });
    expect(verbose.stderr).toMatch(/^\+ env nix eval /m);
    // virsh's words are parsed: through a HOST_CMD it runs in the C locale (env LC_ALL=C).
    expect(verbose.stderr).toMatch(/^\+ env env LC_ALL=C virsh -c qemu:\/\/\/system list --all$/m);
  });

  it('with SUDO=sudo, the commands on root\'s files get sudo, and the /var filesystem is built as the user', async () => {
    const result = await runJust(['create-vm', 'web', '--dry-run'], {
      SUDO: 'sudo',
      NIX: standinNix,
      IVM_STANDIN_OUT: '/nonexistent',
      LIBGUESTFS_BACKEND_SETTINGS: 'force_tcg',
    });
    expect(result.exitCode, result.stderr).toBe(0);
    // mkfs.ext4 and debugfs work on the user's own raw file in a private folder: no root needed.
    expect(result.stdout).toMatch(/^mkfs\.ext4 -q -F /m);
    expect(result.stdout).toMatch(/^debugfs -w -f - /m);
    expect(result.stdout).toMatch(/^sudo qemu-img convert -q -n -f raw -O qcow2 /m);
    expect(result.stdout).not.toMatch(/guestfish/);
    expect(result.stdout).toMatch(/^sudo virsh -c qemu:\/\/\/system define /m);
  });
});

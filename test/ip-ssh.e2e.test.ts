// ivm ip, ssh and wait with real tools.
//   - One boot: a NAT network made with `ivm net create`, a machine on it with a static ipAddress
//     (a DHCP reservation), `ivm create --start`. The machine's name ends in "-agent", so the
//     stand-in guest first answers the QEMU guest agent protocol with 192.0.2.77 on eth0 (an
//     address no lease can give): `ivm ip` asked while it runs gets that, from the agent. Then the
//     guest runs udhcpc and serves SSH (Debian's sshd, configured as ivm's NixOS modules configure
//     it: host key and authorized keys from /var/identity): `ivm wait`, then `ivm ssh` as user and
//     as admin log in with the pinned host key. The admin login lets the guest power off, and
//     `ivm ip` finds the reserved address in the network's DHCP lease table after the fact.
//   - No VM: real sshd processes on loopback, one serving the machine's own host key, one another
//     key; ivm ssh builds the pinned argv, and ivm ssh/wait refuse the mismatching host. The same
//     from a project whose path holds blanks, % and a backslash (quoted and escaped for ssh).
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanupDomain, ensureLibvirt, guestNetworkPrefix, virsh, waitForState } from './support/libvirt.ts';
import { freePort, waitForPort } from './support/ports.ts';
import { makeTestProject, type TestProject } from './support/ivm.ts';
import { parseStandinLog } from './support/standin.ts';
import { macAddress } from '../src/core/identity/identity.ts';

const NET = 'ivmt-ipnet';
const VM = 'e2e-ip-agent';
/** What the stand-in's guest agent reports on eth0 (see build-standin-image.sh). */
const AGENT_IP = '192.0.2.77';
const STATIC = '192.168.215.50';

async function removeNetwork(name: string): Promise<void> {
  await virsh(['net-destroy', name]).catch(() => undefined);
  await virsh(['net-undefine', name]).catch(() => undefined);
}

describe('ivm ip: the DHCP lease of the stand-in guest (one boot)', () => {
  let project: TestProject;
  let create: { exitCode: number; stdout: string; stderr: string };
  let whileRunning: { exitCode: number; stdout: string; stderr: string } | undefined;
  const logins: Record<'wait' | 'user' | 'admin', { exitCode: number; stdout: string; stderr: string } | undefined> = {
    wait: undefined,
    user: undefined,
    admin: undefined,
  };

  beforeAll(async () => {
    await ensureLibvirt();
    await cleanupDomain(VM);
    await removeNetwork(NET);
    project = await makeTestProject('ivm-ip-');
    await project.useStandinBase('a');
    const made = await project.ivm(['net', 'create', NET, '--kind', 'nat', '--cidr', '192.168.215.0/24']);
    expect(made.exitCode, made.stderr).toBe(0);
    // The client key the logins use; its public half is both accounts' authorized key.
    const key = path.join(project.root, 'client_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ivm-test-client', '-f', key]);
    const pub = fs.readFileSync(`${key}.pub`, 'utf8');
    project.addMachine(
      VM,
      `{ system = "x86_64-linux"; virtType = "qemu"; memory = 512; vcpus = 1; varSize = "128M"; network = "${NET}"; ipAddress = "${STATIC}"; }\n`,
      { user_authorized_keys: pub, admin_authorized_keys: pub },
    );
    // ssh from where the network's bridge is, with that key only, never asking anything.
    const sshEnv = { SSH: [...(await guestNetworkPrefix()), 'ssh', '-i', key, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'ConnectTimeout=10'].join(' ') };
    create = await project.ivm(['create', VM, '--start']);
    if (create.exitCode === 0) {
      whileRunning = await project.ivm(['--verbose', 'ip', VM, '--wait', '90']);
      logins.wait = await project.ivm(['wait', VM, '--timeout', '150'], sshEnv);
      logins.user = await project.ivm(['ssh', VM, '--', 'id -un; cat /var/identity/hostname'], sshEnv);
      logins.admin = await project.ivm(['ssh', VM, '--admin', '--', 'id -un >/tmp/ivm-ssh-done'], sshEnv);
      await waitForState(VM, 'shut off', 240_000);
    }
  });

  afterAll(async () => {
    await cleanupDomain(VM);
    await removeNetwork(NET);
    await project?.remove();
  });

  it('create made the DHCP reservation of the static address and started the VM', async () => {
    expect(create.exitCode, create.stderr).toBe(0);
    const mac = macAddress(fs.readFileSync(path.join(project.root, 'machines', VM, 'machine-id'), 'utf8').trim());
    expect(create.stdout).toContain(`${NET}: DHCP reservation ${STATIC} for ${VM} (${mac})`);
    expect(await virsh(['net-dumpxml', NET])).toContain(`<host mac='${mac}' name='${VM}' ip='${STATIC}'/>`);
  });

  it('ivm ip asks the guest agent first while the VM runs, and says so with --verbose', () => {
    expect(whileRunning?.exitCode, whileRunning?.stderr).toBe(0);
    expect(whileRunning!.stdout.trim()).toBe(AGENT_IP);
    expect(whileRunning!.stderr).toMatch(/virsh -c \S+ domifaddr e2e-ip-agent --source agent/);
    expect(whileRunning!.stderr).toMatch(new RegExp(`ivm: ${AGENT_IP.replace(/\./g, '\\.')} from the guest agent \\(virsh domifaddr --source agent\\), interface 52:54:00:`));
    const log = parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${VM}-serial.log`), 'utf8'));
    expect(log.agentIp).toBe(AGENT_IP);
    expect(log.errors).toEqual([]);
  });

  it('ivm wait, then ivm ssh as user and as admin, log in to the guest with its pinned host key', () => {
    expect(logins.wait?.exitCode, logins.wait?.stderr).toBe(0);
    expect(logins.wait!.stdout).toContain(`${VM} answers on ${STATIC} with its pinned host key`);
    expect(logins.user?.exitCode, logins.user?.stderr).toBe(0);
    expect(logins.user!.stdout.trim()).toBe(`user\n${VM}`);
    expect(logins.admin?.exitCode, logins.admin?.stderr).toBe(0);
    const log = parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${VM}-serial.log`), 'utf8'));
    expect(log.sshDoneBy).toBe('admin');
  });

  it('the guest got the reserved address by DHCP', () => {
    const log = parseStandinLog(fs.readFileSync(path.join(project.vmDir, `${VM}-serial.log`), 'utf8'));
    expect(log.dhcpIp).toBe(STATIC);
  });

  it('ivm ip finds it in the lease table after the guest powered off, and says so with --verbose', async () => {
    const r = await project.ivm(['--verbose', 'ip', VM]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(STATIC);
    expect(r.stderr).toMatch(new RegExp(`ivm: ${STATIC.replace(/\./g, '\\.')} from the DHCP leases of network ${NET} \\(52:54:00:[0-9a-f:]+, expires `));
    // shut off: the guest agent and ARP (which need a running domain) were not asked
    expect(r.stderr).not.toContain('--source agent');
    const plain = await project.ivm(['ip', VM, '--wait', '5']);
    expect(plain.stdout).toBe(`${STATIC}`);
  });

  it('a VM that is not defined is refused (exit 3); a bad --wait is bad input', async () => {
    project.addMachine('nodomain', `{ system = "x86_64-linux"; network = "${NET}"; }\n`);
    await project.ivm(['identity', 'nodomain']);
    const r = await project.ivm(['ip', 'nodomain']);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('nodomain is not defined in libvirt');
    const bad = await project.ivm(['ip', VM, '--wait', 'soon']);
    expect(bad.exitCode).toBe(2);
  });
});


describe('ivm ssh and ivm wait against real sshd on loopback', () => {
  const SSH_VM = 'e2e-ssh';
  let project: TestProject;
  let knownHosts: string;
  const daemons: ResultPromise[] = [];
  let goodPort: number;
  let badPort: number;

  async function startSshd(hostKey: string): Promise<number> {
    const port = await freePort();
    fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
    const sshd = execa(
      '/usr/sbin/sshd',
      [
        '-D', '-e', '-f', '/dev/null',
        '-o', `HostKey=${hostKey}`,
        '-o', 'ListenAddress=127.0.0.1',
        '-o', `Port=${port}`,
        '-o', 'PidFile=none',
        '-o', 'UsePAM=no',
        '-o', 'PasswordAuthentication=no',
        '-o', 'KbdInteractiveAuthentication=no',
        '-o', `AuthorizedKeysFile=${path.join(project.root, 'no-authorized-keys')}`,
      ],
      { reject: false, stdin: 'ignore' },
    );
    daemons.push(sshd);
    await waitForPort(port);
    return port;
  }

  beforeAll(async () => {
    project = await makeTestProject('ivm-ssh-');
    project.addMachine(SSH_VM, '{ system = "x86_64-linux"; }\n');
    expect((await project.ivm(['identity', SSH_VM])).exitCode).toBe(0);
    knownHosts = path.join(project.root, 'machines', SSH_VM, 'known_hosts');
    goodPort = await startSshd(path.join(project.root, 'machines', SSH_VM, 'ssh_host_ed25519_key'));
    const other = path.join(project.root, 'other_host_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'impostor', '-f', other]);
    badPort = await startSshd(other);
  });

  afterAll(async () => {
    for (const sshd of daemons) sshd.kill('SIGTERM');
    await Promise.allSettled(daemons);
    await project?.remove();
  });

  it('builds the pinned argv: HostKeyAlias, its known_hosts only, StrictHostKeyChecking=yes, user or admin', async () => {
    const r = await project.ivm(['--dry-run', 'ssh', SSH_VM, '--address', '127.0.0.1', '--port', '2222', '--', 'uname', '-a']);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(
      `ssh -o HostKeyAlias=${SSH_VM} -o 'UserKnownHostsFile="${knownHosts}"' -o GlobalKnownHostsFile=/dev/null ` +
        '-o StrictHostKeyChecking=yes -o UpdateHostKeys=no -o CheckHostIP=no -p 2222 -l user -- 127.0.0.1 uname -a',
    );
    const admin = await project.ivm(['--dry-run', 'ssh', SSH_VM, '--admin', '--address', '192.0.2.7']);
    expect(admin.stdout).toContain('-l admin -- 192.0.2.7');
    expect(admin.stdout).not.toMatch(/StrictHostKeyChecking=(no|accept-new)/);
    expect(fs.readFileSync(knownHosts, 'utf8')).toMatch(new RegExp(`^${SSH_VM} ssh-ed25519 \\S+\\n$`));
  });

  it('connects through the pinned key to the sshd serving the machine\'s host key (the login itself is refused: no such user here)', async () => {
    const r = await project.ivm(['ssh', SSH_VM, '--address', '127.0.0.1', '--port', String(goodPort), '--', 'true']);
    expect(r.stderr).not.toMatch(/^Host key verification failed/m);
    expect(r.stderr).toMatch(/^user@127\.0\.0\.1: Permission denied \(publickey\)/m);
    expect(r.exitCode).toBe(1);
    const wait = await project.ivm(['wait', SSH_VM, '--address', '127.0.0.1', '--port', String(goodPort), '--timeout', '20']);
    expect(wait.exitCode, wait.stderr).toBe(0);
    expect(wait.stdout).toContain(`${SSH_VM} answers on 127.0.0.1:${goodPort} with its pinned host key`);
    expect(wait.stderr).toContain(`the login as user was refused: put your public key in machines/${SSH_VM}/user_authorized_keys`);
  });

  it('pins the key from a project whose path holds blanks, % and a backslash (ssh would split and expand it)', async () => {
    // The same machine (identity files and all) in a project under such a folder: the sshd serving
    // its host key must be accepted from there too.
    const odd = await makeTestProject('ivm-ssh with space %d \\x-');
    try {
      fs.cpSync(path.join(project.root, 'machines', SSH_VM), path.join(odd.root, 'machines', SSH_VM), { recursive: true });
      const r = await odd.ivm(['ssh', SSH_VM, '--address', '127.0.0.1', '--port', String(goodPort), '--', 'true']);
      expect(r.stderr).not.toMatch(/^(Host key verification failed|No \S+ host key is known)/m);
      expect(r.stderr).toMatch(/^user@127\.0\.0\.1: Permission denied \(publickey\)/m);
      expect(r.exitCode).toBe(1);
      const wait = await odd.ivm(['wait', SSH_VM, '--address', '127.0.0.1', '--port', String(goodPort), '--timeout', '20']);
      expect(wait.exitCode, wait.stderr).toBe(0);
      expect(wait.stdout).toContain(`${SSH_VM} answers on 127.0.0.1:${goodPort} with its pinned host key`);
      // ...and from there, too, a host serving another key is refused.
      const bad = await odd.ivm(['wait', SSH_VM, '--address', '127.0.0.1', '--port', String(badPort), '--timeout', '20']);
      expect(bad.exitCode, bad.stderr).toBe(3);
    } finally {
      await odd.remove();
    }
  });

  it('refuses a project path ssh cannot be given (a double quote): bad input, no ssh run', async () => {
    const quoted = await makeTestProject('ivm-ssh "q"-');
    try {
      fs.cpSync(path.join(project.root, 'machines', SSH_VM), path.join(quoted.root, 'machines', SSH_VM), { recursive: true });
      const r = await quoted.ivm(['--verbose', 'ssh', SSH_VM, '--address', '127.0.0.1', '--port', String(goodPort), '--', 'true']);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain('ssh cannot be given the path');
      expect(r.stderr).not.toMatch(/^\+ ssh /m);
    } finally {
      await quoted.remove();
    }
  });

  it('refuses a host serving a different key: ssh fails host key verification, wait exits 3 at once', async () => {
    const r = await project.ivm(['ssh', SSH_VM, '--address', '127.0.0.1', '--port', String(badPort), '--', 'true']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^Host key verification failed\.$/m);
    expect(r.stderr).toContain(`ivm: ssh to ${SSH_VM} (user@127.0.0.1) failed (exit 255)`);
    expect(r.stderr).not.toMatch(/Permission denied/);
    const started = Date.now();
    const wait = await project.ivm(['wait', SSH_VM, '--address', '127.0.0.1', '--port', String(badPort), '--timeout', '60']);
    expect(wait.exitCode).toBe(3);
    expect(wait.stderr).toContain(`the host key of 127.0.0.1 is not the one pinned for ${SSH_VM} in ${knownHosts}: refusing to connect`);
    expect(Date.now() - started).toBeLessThan(20_000);
    // known_hosts untouched: nothing was learnt or replaced
    expect(fs.readFileSync(knownHosts, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('wait gives up after its timeout when nothing answers (exit 1)', async () => {
    const closed = await freePort();
    const r = await project.ivm(['wait', SSH_VM, '--address', '127.0.0.1', '--port', String(closed), '--timeout', '3']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`${SSH_VM} did not answer on SSH within 3 s`);
    expect(r.stderr).toMatch(/Connection refused/);
  });

  it('without a pinned key there is no ssh', async () => {
    project.addMachine('nokey', '{ system = "x86_64-linux"; }\n');
    const r = await project.ivm(['ssh', 'nokey', '--address', '127.0.0.1']);
    expect(r.exitCode).toBe(3);
    expect(r.stderr).toContain('known_hosts is missing: there is no pinned host key for nokey');
  });
});

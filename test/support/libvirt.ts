// libvirt for end-to-end tests. On the test machines there is no systemd, so
// the daemons are started by hand (see the test-host notes): virtlogd, then
// libvirtd inside a network namespace so NAT bridges stay off the host.
// Everything here is idempotent and safe to call from several test files; the
// daemons are left running.
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';

export const LIBVIRT_URI = process.env.IVM_TEST_LIBVIRT_URI ?? 'qemu:///system';
/** Network namespace libvirtd runs in when the tests start it. */
export const TEST_NETNS = 'ivmtest';
/** Pid files and daemon logs of daemons started by ensureLibvirt. */
export const TEST_RUN_DIR = '/run/ivmtest';

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs `virsh -c LIBVIRT_URI ARGS...` and returns its stdout (trailing newline removed). */
export async function virsh(args: string[], opts: { input?: string } = {}): Promise<string> {
  const r = await execa('virsh', ['-c', LIBVIRT_URI, ...args], {
    input: opts.input,
    reject: false,
    env: { LC_ALL: 'C' },
  });
  if (r.exitCode !== 0) {
    const msg = (r.stderr || r.stdout).trim();
    throw new Error(`virsh ${args.join(' ')} failed (exit ${r.exitCode}): ${msg}`);
  }
  return r.stdout;
}

async function virshWorks(): Promise<string | null> {
  const r = await execa('virsh', ['-c', LIBVIRT_URI, 'list', '--all'], { reject: false, timeout: 20_000 });
  return r.exitCode === 0 ? null : (r.stderr || r.stdout || `exit ${r.exitCode}`).trim();
}

/**
 * Whether the pid file names a live process running `program`. /run may outlive the daemons
 * (a machine restarted without clearing it), so a pid alone is not proof: it may be reused.
 */
async function pidAlive(pidFile: string, program: string): Promise<boolean> {
  try {
    const pid = Number((await readFile(pidFile, 'utf8')).trim());
    if (!Number.isInteger(pid) || pid <= 0) return false;
    // /proc/PID/stat: "PID (COMM) STATE ..."; a zombie (Z) still has its name but is gone.
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const m = /^\d+ \((.*)\) (\S)/.exec(stat);
    return m !== null && m[1] === program && m[2] !== 'Z';
  } catch {
    return false;
  }
}

/** virtlogd's socket; `virsh start` fails without a virtlogd listening on it. */
const VIRTLOGD_SOCK = '/run/libvirt/virtlogd-sock';

/**
 * Whether something accepts connections on the unix socket. A socket file left behind by a daemon
 * that is gone answers "Connection refused", so its existence proves nothing.
 */
export function socketAnswers(file: string, timeoutMs = 2_000): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(file);
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

async function run(cmd: string, args: string[], logFile?: string): Promise<string | null> {
  const r = await execa(cmd, args, {
    reject: false,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: logFile ? { file: logFile, append: true } : 'pipe',
    timeout: 30_000,
  });
  if (r.exitCode === 0) return null;
  const err = logFile ? await readFile(logFile, 'utf8').catch(() => '') : String(r.stderr ?? '');
  return `${cmd} ${args.join(' ')}: exit ${r.exitCode}${r.timedOut ? ' (timed out)' : ''} ${err.trim().slice(-500)}`;
}

async function startVirtlogd(): Promise<string | null> {
  const pidFile = path.join(TEST_RUN_DIR, 'virtlogd.pid');
  if (await pidAlive(pidFile, 'virtlogd')) return null;
  await rm(pidFile, { force: true });
  return run('virtlogd', ['-d', '--pid-file', pidFile], path.join(TEST_RUN_DIR, 'virtlogd.log'));
}

/**
 * Runs `fn` while the virtlogd that ensureLibvirt started is stopped, then starts it again.
 * Returns false, running nothing, when virtlogd was not started by the tests (a host's own
 * virtlogd is never stopped).
 */
export async function withoutTestVirtlogd(fn: () => Promise<void>): Promise<boolean> {
  const pidFile = path.join(TEST_RUN_DIR, 'virtlogd.pid');
  if (!(await pidAlive(pidFile, 'virtlogd'))) return false;
  const pid = Number((await readFile(pidFile, 'utf8')).trim());
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 100 && (await socketAnswers(VIRTLOGD_SOCK)); i++) await sleep(100);
  try {
    await fn();
  } finally {
    const e = await startVirtlogd();
    if (e) throw new Error(`virtlogd could not be started again: ${e}`);
    for (let i = 0; i < 100 && !(await socketAnswers(VIRTLOGD_SOCK)); i++) await sleep(100);
    if (!(await socketAnswers(VIRTLOGD_SOCK))) throw new Error(`virtlogd was started again but ${VIRTLOGD_SOCK} does not answer`);
  }
  return true;
}

/**
 * The words to put before a command that must reach a VM's network: the tests' libvirtd runs in
 * the network namespace TEST_NETNS, and so do the bridges of its networks. Empty when libvirtd
 * was not started by the tests (its networks are then the host's).
 */
export async function guestNetworkPrefix(): Promise<string[]> {
  return (await pidAlive(path.join(TEST_RUN_DIR, 'libvirtd.pid'), 'libvirtd')) ? ['ip', 'netns', 'exec', TEST_NETNS] : [];
}

let ensured: Promise<void> | undefined;

/**
 * Makes `virsh -c qemu:///system` work. If it already answers, does nothing. Otherwise starts
 * virtlogd (`virtlogd -d`) and libvirtd inside the network namespace `ivmtest`
 * (`ip netns exec ivmtest libvirtd -d`) and waits until virsh answers.
 */
export function ensureLibvirt(timeoutMs = 60_000): Promise<void> {
  ensured ??= doEnsureLibvirt(timeoutMs).catch((e: unknown) => {
    ensured = undefined;
    throw e;
  });
  return ensured;
}

async function doEnsureLibvirt(timeoutMs: number): Promise<void> {
  if ((await virshWorks()) === null) {
    // A libvirtd started some other way may lack virtlogd ("virsh start" would then fail).
    if (!(await socketAnswers(VIRTLOGD_SOCK)) && process.getuid?.() === 0 && LIBVIRT_URI === 'qemu:///system') {
      await mkdir(TEST_RUN_DIR, { recursive: true });
      const e = await startVirtlogd();
      if (e) throw new Error(`libvirtd answers but virtlogd is not running and could not be started: ${e}`);
    }
    return;
  }
  if (LIBVIRT_URI !== 'qemu:///system') {
    throw new Error(`libvirt at ${LIBVIRT_URI} does not answer and only qemu:///system is started by the tests`);
  }
  if (process.getuid?.() !== 0) {
    throw new Error('libvirt (qemu:///system) does not answer, and starting libvirtd for the tests needs root');
  }
  await mkdir(TEST_RUN_DIR, { recursive: true });
  const problems: string[] = [];

  // virtlogd: without it `virsh start` fails (serial logs go through it).
  if (!(await socketAnswers(VIRTLOGD_SOCK))) {
    const e = await startVirtlogd();
    if (e) problems.push(e);
  }

  // The network namespace keeps libvirt's NAT bridges and firewall rules off the host.
  const netns = await execa('ip', ['netns', 'list'], { reject: false });
  const haveNs = String(netns.stdout ?? '')
    .split('\n')
    .some((l) => l.split(/\s+/)[0] === TEST_NETNS);
  // A name left in /run/netns without its namespace (the mount gone) cannot be entered: remake it.
  if (haveNs && (await run('ip', ['netns', 'exec', TEST_NETNS, 'true'])) !== null) {
    await run('ip', ['netns', 'delete', TEST_NETNS]);
    await rm(path.join('/run/netns', TEST_NETNS), { force: true });
  }
  if (!haveNs || (await run('ip', ['netns', 'exec', TEST_NETNS, 'true'])) !== null) {
    const e = await run('ip', ['netns', 'add', TEST_NETNS]);
    if (e && !/exists/i.test(e)) problems.push(e);
  }
  const lo = await run('ip', ['netns', 'exec', TEST_NETNS, 'ip', 'link', 'set', 'lo', 'up']);
  if (lo) problems.push(lo);

  const libvirtdPid = path.join(TEST_RUN_DIR, 'libvirtd.pid');
  if (!(await pidAlive(libvirtdPid, 'libvirtd'))) {
    await rm(libvirtdPid, { force: true });
    const e = await run(
      'ip',
      ['netns', 'exec', TEST_NETNS, 'libvirtd', '-d', '--pid-file', libvirtdPid],
      path.join(TEST_RUN_DIR, 'libvirtd.log'),
    );
    if (e) problems.push(e);
  }

  const deadline = Date.now() + timeoutMs;
  let last: string | null = 'not tried';
  while (Date.now() < deadline) {
    last = await virshWorks();
    if (last === null && !(await socketAnswers(VIRTLOGD_SOCK))) last = `nothing answers on ${VIRTLOGD_SOCK}`;
    if (last === null) return;
    await sleep(200);
  }
  throw new Error(
    `libvirt did not answer within ${timeoutMs} ms after starting virtlogd and libvirtd ` +
      `(netns ${TEST_NETNS}; logs in ${TEST_RUN_DIR}).\nLast virsh error: ${last}` +
      (problems.length ? `\nStart problems:\n${problems.join('\n')}` : ''),
  );
}

/** The `default` NAT network (libvirt's stock definition if missing), defined and active. */
export async function ensureNetwork(name = 'default', xml?: string): Promise<void> {
  await ensureLibvirt();
  let info: string;
  try {
    info = await virsh(['net-info', name]);
  } catch {
    const def =
      xml ??
      (name === 'default'
        ? `<network><name>default</name><forward mode='nat'/><bridge name='virbr0' stp='on' delay='0'/>` +
          `<ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/></dhcp></ip></network>`
        : undefined);
    if (!def) throw new Error(`libvirt network ${name} is not defined and no XML was given`);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'ivm-net-'));
    const file = path.join(dir, 'net.xml');
    await writeFile(file, def);
    try {
      await virsh(['net-define', file]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    info = await virsh(['net-info', name]);
  }
  if (/^Active:\s+yes/m.test(info)) return;
  try {
    await virsh(['net-start', name]);
  } catch (e) {
    if (!/already active/i.test(String(e))) throw e;
  }
}

/** The domain's state as `virsh domstate` prints it ("running", "shut off", ...), or null if there is no such domain. */
export async function domainState(domain: string): Promise<string | null> {
  const r = await execa('virsh', ['-c', LIBVIRT_URI, 'domstate', domain], { reject: false, env: { LC_ALL: 'C' } });
  if (r.exitCode !== 0) {
    if (/failed to get domain|not found/i.test(r.stderr)) return null;
    throw new Error(`virsh domstate ${domain} failed: ${r.stderr.trim()}`);
  }
  return r.stdout.trim();
}

/** Polls until the domain is in `state` (e.g. "shut off"); throws after timeoutMs. */
export async function waitForState(domain: string, state: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let cur: string | null = null;
  for (;;) {
    try {
      cur = await domainState(domain);
    } catch (error) {
      // A slow or restarting daemon ("Cannot recv data"): asked again until the deadline.
      if (Date.now() >= deadline) throw error;
      await sleep(1_000);
      continue;
    }
    if (cur === state) return;
    if (Date.now() >= deadline) break;
    await sleep(250);
  }
  throw new Error(`domain ${domain} is ${cur === null ? 'not defined' : `"${cur}"`}, not "${state}", after ${timeoutMs} ms`);
}

const notThere = /failed to get domain|domain not found|not found|not running|domain is not running/i;

/** Destroys and undefines a domain (with its NVRAM), ignoring "not found" / "not running". */
export async function cleanupDomain(name: string): Promise<void> {
  if ((await domainState(name)) === null) return;
  try {
    await virsh(['destroy', name]);
  } catch (e) {
    if (!notThere.test(String(e))) throw e;
  }
  try {
    await virsh(['undefine', '--nvram', name]);
  } catch (e) {
    if (notThere.test(String(e))) return;
    // Domains without NVRAM on older libvirt: plain undefine.
    try {
      await virsh(['undefine', name]);
    } catch (e2) {
      if (!notThere.test(String(e2))) throw e2;
    }
  }
}

/**
 * A fresh scratch directory that the qemu process (user libvirt-qemu under the DAC driver) can
 * traverse: mode 0755, under $IVM_TEST_SCRATCH or the OS temp dir.
 */
export async function makeScratchDir(prefix = 'ivm-test-'): Promise<string> {
  const base = process.env.IVM_TEST_SCRATCH ?? os.tmpdir();
  await mkdir(base, { recursive: true });
  const dir = await mkdtemp(path.join(base, prefix));
  await chmod(dir, 0o755);
  return dir;
}

import { type Command, InvalidArgumentError } from 'commander';
import type { ContextFactory } from '../cli.ts';
import { parseIpv4 } from '../core/network/cidr.ts';
import { hostContextOf } from './host-context.ts';
import { wholeSeconds } from './options.ts';

const seconds = wholeSeconds(0);

function port(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InvalidArgumentError('a TCP port (1-65535)');
  return n;
}

function address(value: string): string {
  if (parseIpv4(value) === undefined && !/^[A-Za-z0-9][A-Za-z0-9.-]*$/.test(value)) throw new InvalidArgumentError('an IPv4 address or a host name');
  return value;
}

export function registerAddress(program: Command, _context: ContextFactory): void {
  const context = hostContextOf(program);
  program
    .command('ip')
    .argument('<name>', 'machine name')
    .description("print the VM's IPv4 address: from the guest agent, else its network's DHCP leases, else the ARP table (matched by its MAC); --verbose says which source answered")
    .option('-w, --wait <seconds>', 'keep polling this long while no source knows the address', seconds, 0)
    .action(async (name: string, options: { wait: number }) => {
      const { findAddress, loadTarget } = await import('../core/network/address.ts');
      const ctx = context();
      const found = await findAddress(ctx, await loadTarget(ctx, name), options.wait);
      if (ctx.runner.verbose) process.stderr.write(`ivm: ${found.address} from ${found.detail}\n`);
      ctx.say(found.address);
    });
  program
    .command('ssh')
    .argument('<name>', 'machine name')
    .argument('[command...]', 'command to run on the VM (after --)')
    .description(
      'ssh to the VM as `user` (or `admin`), its host key pinned from machines/<name>/known_hosts (StrictHostKeyChecking=yes): ' +
        "a changed host key is refused. The remote command's exit code is ivm's.",
    )
    .option('--admin', 'log in as admin instead of user')
    .option('-w, --wait <seconds>', 'wait this long for an address', seconds, 0)
    .option('--address <addr>', 'connect to this address instead of looking it up (e.g. a port forward)', address)
    .option('-p, --port <port>', 'SSH port (default 22)', port)
    .action(async (name: string, command: string[], options: { admin?: boolean; wait: number; address?: string; port?: number }) =>
      (await import('../core/network/ssh.ts')).sshVm(context(), name, { admin: Boolean(options.admin), waitSeconds: options.wait, address: options.address, port: options.port }, command),
    );
  program
    .command('wait')
    .argument('<name>', 'machine name')
    .description('wait until the VM answers on SSH with its pinned host key (a login refused for want of your key counts); a changed host key is an error')
    .option('-t, --timeout <seconds>', 'give up after this long', seconds, 120)
    .option('--admin', 'probe as admin instead of user')
    .option('--address <addr>', 'probe this address instead of looking it up', address)
    .option('-p, --port <port>', 'SSH port (default 22)', port)
    .action(async (name: string, options: { timeout: number; admin?: boolean; address?: string; port?: number }) =>
      (await import('../core/network/ssh.ts')).waitVm(context(), name, { admin: Boolean(options.admin), timeoutSeconds: options.timeout, address: options.address, port: options.port }),
    );
}

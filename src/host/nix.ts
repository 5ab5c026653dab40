// nix: evaluate a machine's meta.nix and build its image. The experimental features are passed on
// the command line so that ivm never depends on the user's nix.conf.
import { BadInputError } from '../errors.ts';
import type { Command, Runner } from './runner.ts';

const FEATURES = ['--extra-experimental-features', 'nix-command flakes'];

export function evalJsonFileCommand(file: string): Command {
  return { tool: 'nix', args: ['eval', ...FEATURES, '--json', '--file', file], mutates: false };
}

export function buildCommand(installable: string): Command {
  return { tool: 'nix', args: ['build', ...FEATURES, installable, '--no-link', '--print-out-paths'], mutates: true };
}

/** Evaluates a Nix file to JSON; a Nix error becomes a BadInputError naming the file. */
export async function evalJsonFile(runner: Runner, file: string): Promise<unknown> {
  const result = await runner.run(evalJsonFileCommand(file), { allowFailure: true });
  if (result.exitCode !== 0) {
    throw new BadInputError(`${file} does not evaluate:\n${nixErrorText(result.stderr)}`);
  }
  try {
    return JSON.parse(result.stdout);
  } catch {
    throw new BadInputError(`${file}: nix eval printed no JSON`);
  }
}

/** Nix's error message without its warnings. */
export function nixErrorText(stderr: string): string {
  const lines = stderr.split('\n').filter((line) => !line.startsWith('warning:'));
  return lines.join('\n').trim().split('\n').slice(0, 12).map((l) => `  ${l}`).join('\n');
}

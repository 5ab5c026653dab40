// nix: evaluate a machine's meta.nix and build its image. The experimental features are passed on
// the command line so that ivm never depends on the user's nix.conf. Only flags every supported nix
// understands (MIN_NIX_VERSION and later) are used: `build --json --no-link`, not
// `--print-out-paths`, which nix 2.8 rejects.
import { BadInputError, IvmError } from '../errors.ts';
import type { Command, Runner } from './runner.ts';

const FEATURES = ['--extra-experimental-features', 'nix-command flakes'];

export function evalJsonFileCommand(file: string): Command {
  return { tool: 'nix', args: ['eval', ...FEATURES, '--json', '--file', file], mutates: false };
}

/** nix build prints its log and progress on stderr: shown as it comes (the runner keeps its tail for an error). */
export function buildCommand(installable: string): Command {
  return { tool: 'nix', args: ['build', ...FEATURES, installable, '--json', '--no-link'], mutates: true, streamStderr: true };
}

const BUILD_JSON_SHAPE = '[{"drvPath": "...", "outputs": {"out": "/nix/store/..."}}]';

/**
 * The output path in what `nix build --json` printed for one installable: the `out` output of the
 * single element of `[{"drvPath":"...","outputs":{"out":"/nix/store/..."}}]` (nix 2.8 and later;
 * later versions add fields such as startTime, which are ignored). Anything else is an IvmError.
 */
export function buildOutPath(stdout: string): string {
  const text = stdout.trim();
  const got = text === '' ? 'nothing' : JSON.stringify(text.length > 300 ? `${text.slice(0, 300)}...` : text);
  const bad = (why: string) => new IvmError(`nix build --json printed ${got}: ${why}; expected ${BUILD_JSON_SHAPE}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bad('not JSON');
  }
  if (!Array.isArray(parsed) || parsed.length !== 1) {
    throw bad(Array.isArray(parsed) ? `${parsed.length} results, not one` : 'not a list');
  }
  const outputs = (parsed[0] as { outputs?: unknown } | null)?.outputs;
  const out = outputs !== null && typeof outputs === 'object' ? (outputs as Record<string, unknown>).out : undefined;
  if (typeof out !== 'string' || !out.startsWith('/')) throw bad('no absolute path at outputs.out');
  return out;
}

/** The oldest nix ivm supports: the oldest the tests run (Debian 12's), with every flag ivm uses. */
export const MIN_NIX_VERSION = '2.8';

export interface NixVersion {
  major: number;
  minor: number;
  patch: number;
  /** The version as printed, e.g. "2.18.1" or "2.25.0pre20241101_dirty". */
  text: string;
}

/**
 * The version in `nix --version`'s first line: "nix (Nix) 2.8.0", and forks' "nix (Lix, like Nix)
 * 2.91.1" or "nix (Determinate Nix 3.6.2) 2.29.0" (the number after the parenthesis is the Nix
 * version). Undefined when there is none.
 */
export function parseNixVersion(output: string): NixVersion | undefined {
  const line = output.trim().split('\n')[0] ?? '';
  const m = /\)\s+v?(\d+)\.(\d+)(?:\.(\d+))?(\S*)/.exec(line) ?? /(?:^|\s)v?(\d+)\.(\d+)(?:\.(\d+))?(\S*)/.exec(line);
  if (!m) return undefined;
  const [major, minor, patch] = [m[1], m[2], m[3] ?? '0'].map(Number) as [number, number, number];
  return { major, minor, patch, text: `${m[1]}.${m[2]}${m[3] === undefined ? '' : `.${m[3]}`}${m[4] ?? ''}` };
}

/** Whether `version` is `min` ("2.8", "2.8.1") or later; a pre-release counts as its version. */
export function nixVersionAtLeast(version: NixVersion, min: string = MIN_NIX_VERSION): boolean {
  const want = min.split('.').map(Number);
  const have = [version.major, version.minor, version.patch];
  for (let i = 0; i < 3; i++) {
    const a = have[i] ?? 0;
    const b = want[i] ?? 0;
    if (a !== b) return a > b;
  }
  return true;
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

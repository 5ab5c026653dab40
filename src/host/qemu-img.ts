// qemu-img: overlays, blank disks and backing-chain queries. Backing paths are always absolute and
// the backing format always given (-F), since qemu-img refuses to guess it.
import { IvmError } from '../errors.ts';
import type { Command, Runner } from './runner.ts';

export function createOverlayCommand(base: string, overlay: string): Command {
  return { tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay], mutates: true };
}

export function createDiskCommand(path: string, size: string): Command {
  return { tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', path, size], mutates: true };
}

export interface ImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  'full-backing-filename'?: string;
}

/** The image and its backing files, overlay first (read-only; runs under --dry-run too). */
export async function backingChain(runner: Runner, path: string): Promise<ImageInfo[]> {
  const command: Command = {
    tool: 'qemu-img',
    args: ['info', '--output=json', '--backing-chain', '-U', path],
    mutates: false,
  };
  const result = await runner.run(command);
  return parseImageJson(result.stdout, { what: 'qemu-img info --backing-chain', file: path, chain: true, commandLine: runner.describe(command) });
}

/**
 * One image's own header, without opening its backing file: works when that file is gone (the
 * case status, rollback and doctor must be able to report). Read-only; runs under --dry-run too.
 */
export async function imageInfo(runner: Runner, path: string): Promise<ImageInfo> {
  const command: Command = { tool: 'qemu-img', args: ['info', '--output=json', '-U', path], mutates: false };
  const result = await runner.run(command);
  return parseImageJson(result.stdout, { what: 'qemu-img info', file: path, chain: false, commandLine: runner.describe(command) });
}

/**
 * What `qemu-img info --output=json` printed: one image (an object with its filename), or with
 * --backing-chain a non-empty list of them. Anything else (a QEMU_IMG that is not qemu-img, a
 * wrapper that prints more) is an IvmError naming the command and the file, not a stack trace.
 */
export function parseImageJson(stdout: string, of: { what: string; file: string; chain: true; commandLine?: string }): ImageInfo[];
export function parseImageJson(stdout: string, of: { what: string; file: string; chain: false; commandLine?: string }): ImageInfo;
export function parseImageJson(stdout: string, of: { what: string; file: string; chain: boolean; commandLine?: string }): ImageInfo | ImageInfo[] {
  const text = stdout.trim();
  const printed = text === '' ? 'nothing' : JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text);
  const hint = `${of.commandLine ? `the command was: ${of.commandLine}; ` : ''}QEMU_IMG, when set, must be the whole qemu-img command`;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new IvmError(`${of.what} printed no JSON for ${of.file}: it printed ${printed}`, { hint });
  }
  const isImage = (value: unknown): value is ImageInfo =>
    typeof value === 'object' && value !== null && !Array.isArray(value) && typeof (value as { filename?: unknown }).filename === 'string';
  const ok = of.chain ? Array.isArray(parsed) && parsed.length > 0 && parsed.every(isImage) : isImage(parsed);
  if (!ok) {
    throw new IvmError(`${of.what} printed JSON that is not ${of.chain ? 'a list of images' : 'an image'} for ${of.file}: ${printed}`, { hint });
  }
  return parsed as ImageInfo | ImageInfo[];
}

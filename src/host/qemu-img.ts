// qemu-img: overlays, blank disks and backing-chain queries. Backing paths are always absolute and
// the backing format always given (-F), since qemu-img refuses to guess it.
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
  const result = await runner.run({
    tool: 'qemu-img',
    args: ['info', '--output=json', '--backing-chain', '-U', path],
    mutates: false,
  });
  return JSON.parse(result.stdout) as ImageInfo[];
}

/**
 * One image's own header, without opening its backing file: works when that file is gone (the
 * case status, rollback and doctor must be able to report). Read-only; runs under --dry-run too.
 */
export async function imageInfo(runner: Runner, path: string): Promise<ImageInfo> {
  const result = await runner.run({ tool: 'qemu-img', args: ['info', '--output=json', '-U', path], mutates: false });
  return JSON.parse(result.stdout) as ImageInfo;
}

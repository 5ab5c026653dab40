// qemu-img: overlays, blank disks and backing-chain queries. Backing paths are always absolute and
// the backing format always given (-F), since qemu-img refuses to guess it.
import { IvmError } from "../errors.js";
export function createOverlayCommand(base, overlay) {
    return { tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', overlay], mutates: true };
}
export function createDiskCommand(path, size) {
    return { tool: 'qemu-img', args: ['create', '-q', '-f', 'qcow2', path, size], mutates: true };
}
/** The image and its backing files, overlay first (read-only; runs under --dry-run too). */
export async function backingChain(runner, path) {
    const command = {
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
export async function imageInfo(runner, path) {
    const command = { tool: 'qemu-img', args: ['info', '--output=json', '-U', path], mutates: false };
    const result = await runner.run(command);
    return parseImageJson(result.stdout, { what: 'qemu-img info', file: path, chain: false, commandLine: runner.describe(command) });
}
export function parseImageJson(stdout, of) {
    const text = stdout.trim();
    const printed = text === '' ? 'nothing' : JSON.stringify(text.length > 200 ? `${text.slice(0, 200)}...` : text);
    const hint = `${of.commandLine ? `the command was: ${of.commandLine}; ` : ''}QEMU_IMG, when set, must be the whole qemu-img command`;
    let parsed;
    try {
        parsed = JSON.parse(text);
    }
    catch {
        throw new IvmError(`${of.what} printed no JSON for ${of.file}: it printed ${printed}`, { hint });
    }
    const isImage = (value) => typeof value === 'object' && value !== null && !Array.isArray(value) && typeof value.filename === 'string';
    const ok = of.chain ? Array.isArray(parsed) && parsed.length > 0 && parsed.every(isImage) : isImage(parsed);
    if (!ok) {
        throw new IvmError(`${of.what} printed JSON that is not ${of.chain ? 'a list of images' : 'an image'} for ${of.file}: ${printed}`, { hint });
    }
    return parsed;
}

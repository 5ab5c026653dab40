// The files of a VM in IVM_VM_DIR (and the base images in IVM_BASE_DIR), as the host sees them.
// ivm decides from these what to make, move or remove, so each is looked at without following a
// link, and a link or an odd file where a disk belongs is refused (exit 2), never used: the tools
// that act on them run as root. With HOST_CMD the tools run in another filesystem view (distrobox),
// so the question goes through the runner to the host (stat), not to ivm's own view.
import fs from 'node:fs';
import { kindOf, UnsafeFileError } from "./safe-files.js";
const STAT_KINDS = {
    'regular file': 'file',
    'regular empty file': 'file',
    directory: 'folder',
    'symbolic link': 'link',
};
/** What is at `file` on the host, without following a link there. Read-only: runs under --dry-run too. */
export async function hostFile(runner, file) {
    if (runner.settings.hostCmd.length === 0) {
        const kind = kindOf(file);
        if (kind === 'missing')
            return { kind, id: undefined };
        const st = fs.lstatSync(file);
        return { kind, id: `${st.dev}:${st.ino}` };
    }
    const result = await runner.run({ tool: 'stat', args: ['-c', '%F|%d:%i', '--', file], mutates: false }, { allowFailure: true });
    if (result.exitCode !== 0) {
        if (/No such file or directory|Not a directory/.test(result.stderr))
            return { kind: 'missing', id: undefined };
        throw runner.failure({ tool: 'stat', args: ['-c', '%F|%d:%i', '--', file], mutates: false }, result.exitCode, result.stderr);
    }
    const [type = '', id] = result.stdout.trim().split('|');
    return { kind: STAT_KINDS[type] ?? 'other', id };
}
/** True when a regular file is at `file` on the host, false when nothing is; a link or anything else is refused. */
export async function hostFileExists(runner, file) {
    const { kind } = await hostFile(runner, file);
    if (kind === 'missing')
        return false;
    if (kind === 'file')
        return true;
    throw new UnsafeFileError(file, kind === 'link' ? 'a symbolic link' : kind === 'folder' ? 'a folder' : 'a special file');
}
/** The files of `files` that exist on the host (each a regular file, or refused). */
export async function existingHostFiles(runner, files) {
    const found = [];
    for (const file of files)
        if (await hostFileExists(runner, file))
            found.push(file);
    return found;
}
/** True when both names are one file (hard links), as the host sees them. */
export async function sameHostFile(runner, a, b) {
    const [x, y] = [await hostFile(runner, a), await hostFile(runner, b)];
    return x.id !== undefined && x.id === y.id;
}

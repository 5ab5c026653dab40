/** The canonical path of a file (readlink -f); read-only, so it runs under --dry-run too. */
export async function readlink(runner, file) {
    const result = await runner.run({ tool: 'readlink', args: ['-f', '--', file], mutates: false });
    return result.stdout.trim() || file;
}
export function removeCommand(...files) {
    return { tool: 'rm', args: ['-f', '--', ...files], mutates: true };
}

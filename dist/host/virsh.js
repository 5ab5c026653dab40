export function virshCommand(runner, args, mutates, interactive = false) {
    return { tool: 'virsh', args: ['-c', runner.settings.libvirtUri, ...args], mutates, interactive };
}
/** Every domain and its state, from one `virsh list --all` call. */
export async function listDomains(runner) {
    const result = await runner.run(virshCommand(runner, ['list', '--all'], false));
    return parseDomainList(result.stdout);
}
export function parseDomainList(text) {
    const domains = new Map();
    for (const line of text.split('\n').slice(2)) {
        const match = /^\s*(\S+)\s+(\S+)\s+(\S.*?)\s*$/.exec(line);
        if (match)
            domains.set(match[2], match[3]);
    }
    return domains;
}
/** The state of one domain, or undefined when there is none of that name. */
export async function domainState(runner, name) {
    return (await domainQuery(runner, ['domstate', name]))?.trim();
}
/** A read-only virsh query about one domain: its stdout, or undefined when there is no such domain. */
async function domainQuery(runner, args) {
    const command = virshCommand(runner, args, false);
    const result = await runner.run(command, { allowFailure: true });
    if (result.exitCode !== 0) {
        if (/failed to get domain|Domain not found/i.test(result.stderr))
            return undefined;
        throw runner.failure(command, result.exitCode, result.stderr);
    }
    return result.stdout;
}
/** State, uuid and managed-save image of one domain, from one `virsh dominfo`; undefined when there is none. */
export async function domainInfo(runner, name) {
    const text = await domainQuery(runner, ['dominfo', name]);
    return text === undefined ? undefined : parseDomainInfo(text);
}
export function parseDomainInfo(text) {
    const fields = new Map();
    for (const line of text.split('\n')) {
        const match = /^([^:]+):\s*(.*?)\s*$/.exec(line);
        if (match)
            fields.set(match[1].trim().toLowerCase(), match[2]);
    }
    return { state: fields.get('state') ?? 'unknown', uuid: fields.get('uuid') ?? '', managedSave: fields.get('managed save') === 'yes' };
}

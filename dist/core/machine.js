// machines/<name>/ -> a validated Machine. meta.nix is evaluated with nix (never parsed by hand) and
// checked key by key; a mistake names the file and the key.
import path from 'node:path';
import { BadInputError } from "../errors.js";
import { evalJsonFile } from "../host/nix.js";
import { parseIpv4 } from "./cidr.js";
import { validateMachineName } from "./names.js";
import { machineNames } from "./project.js";
import { folderExists, regularFileExists } from "./safe-files.js";
export const SYSTEMS = ['x86_64-linux', 'aarch64-linux'];
const DEFAULTS = { memory: 2048, vcpus: 2, varSize: '20G', virtType: 'kvm' };
const KNOWN_KEYS = ['system', 'memory', 'vcpus', 'varSize', 'network', 'bridge', 'virtType', 'ipAddress'];
const SIZE = /^([1-9][0-9]*)([KMGT]?)$/;
const MIN_VAR_BYTES = 64 * 1024 * 1024;
export function sizeInBytes(size) {
    const match = SIZE.exec(size);
    if (!match)
        return Number.NaN;
    const power = { '': 0, K: 1, M: 2, G: 3, T: 4 }[match[2]];
    return Number(match[1]) * 1024 ** power;
}
/** Checks the JSON that meta.nix evaluated to. Throws BadInputError naming the file and the key. */
export function validateMeta(file, value) {
    const fail = (what) => {
        throw new BadInputError(`${file}: ${what}`, `meta.nix keys: ${KNOWN_KEYS.join(', ')} (see README.md, "Machines")`);
    };
    if (typeof value !== 'object' || value === null || Array.isArray(value))
        fail('must evaluate to an attribute set');
    const meta = value;
    const unknown = Object.keys(meta).filter((key) => !KNOWN_KEYS.includes(key));
    if (unknown.length > 0)
        fail(`unknown key${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}`);
    const system = meta.system;
    if (system === undefined)
        fail('`system` is required (e.g. "x86_64-linux")');
    if (typeof system !== 'string' || !SYSTEMS.includes(system)) {
        fail(`\`system\` must be one of ${SYSTEMS.join(', ')}, not ${JSON.stringify(system)}`);
    }
    const positiveInt = (key, fallback) => {
        const v = meta[key] ?? fallback;
        if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
            fail(`\`${key}\` must be a positive integer, not ${JSON.stringify(v)}`);
        return v;
    };
    const name = (key) => {
        const v = meta[key];
        if (v === undefined)
            return undefined;
        if (typeof v !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/.test(v))
            fail(`\`${key}\` must be a libvirt ${key} name, not ${JSON.stringify(v)}`);
        return v;
    };
    const memory = positiveInt('memory', DEFAULTS.memory);
    const vcpus = positiveInt('vcpus', DEFAULTS.vcpus);
    const varSize = meta.varSize ?? DEFAULTS.varSize;
    if (typeof varSize !== 'string' || !SIZE.test(varSize))
        fail(`\`varSize\` must be a size like "20G" or "512M", not ${JSON.stringify(varSize)}`);
    if (sizeInBytes(varSize) < MIN_VAR_BYTES)
        fail(`\`varSize\` must be at least 64M, not ${JSON.stringify(varSize)}`);
    const virtType = meta.virtType ?? DEFAULTS.virtType;
    if (virtType !== 'kvm' && virtType !== 'qemu')
        fail(`\`virtType\` must be "kvm" or "qemu" (TCG, where KVM is unusable), not ${JSON.stringify(virtType)}`);
    const bridge = name('bridge');
    const network = name('network');
    if (bridge !== undefined && network !== undefined)
        fail('set `network` or `bridge`, not both');
    const ipAddress = meta.ipAddress;
    if (ipAddress !== undefined && (typeof ipAddress !== 'string' || parseIpv4(ipAddress) === undefined)) {
        fail(`\`ipAddress\` must be an IPv4 address like "192.168.100.10", not ${JSON.stringify(ipAddress)}`);
    }
    if (ipAddress !== undefined && bridge !== undefined) {
        fail("`ipAddress` is a DHCP reservation on a libvirt network; with `bridge` the LAN's DHCP server decides the address");
    }
    return {
        system: system,
        memory,
        vcpus,
        varSize: varSize,
        network: bridge === undefined ? (network ?? 'default') : undefined,
        bridge,
        virtType: virtType,
        ipAddress: ipAddress,
    };
}
/** The folder of a machine, after checking the name; throws when there is no such machine. */
export function machineDir(project, name) {
    validateMachineName(name);
    const dir = path.join(project.machinesDir, name);
    // machines/ and machines/NAME are real folders (a link is refused: ivm reads and writes in them).
    const present = folderExists(project.machinesDir) && folderExists(dir) && regularFileExists(path.join(dir, 'meta.nix'));
    if (!present) {
        const known = machineNames(project);
        throw new BadInputError(`unknown machine ${JSON.stringify(name)}: ${path.join(dir, 'meta.nix')} does not exist`, known.length > 0 ? `machines here: ${known.join(', ')}` : `create ${path.join(project.machinesDir, name)}/meta.nix and default.nix`);
    }
    return dir;
}
export async function loadMachine(runner, project, name) {
    const dir = machineDir(project, name);
    const metaFile = path.join(dir, 'meta.nix');
    const meta = validateMeta(metaFile, await evalJsonFile(runner, metaFile));
    return { name, dir, metaFile, meta };
}

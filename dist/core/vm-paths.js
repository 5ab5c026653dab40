// Where a VM's files live. Names derive from the machine name only, so every command agrees.
import path from 'node:path';
export function vmPaths(settings, project, name) {
    const at = (file) => path.join(settings.vmDir, file);
    return {
        boot: at(`${name}-boot.qcow2`),
        bootPrevious: at(`${name}-boot-prev.qcow2`),
        var: at(`${name}-var.qcow2`),
        nvram: at(`${name}_VARS.fd`),
        serialLog: at(`${name}-serial.log`),
        xml: path.join(project.libvirtDir, `${name}.xml`),
    };
}

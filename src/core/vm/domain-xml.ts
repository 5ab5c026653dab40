// Machine + paths -> libvirt domain XML, from the handlebars template beside this file. Every value
// goes through handlebars' escaping ({{x}}), so no name or path can break the XML; and no value goes
// into an XML comment, where nothing is escaped and a "--" (a name such as a--b) is illegal.
import fs from 'node:fs';
import Handlebars from 'handlebars';
import type { Settings } from '../../host/settings.ts';
import { domainUuid, macAddress } from '../identity/identity.ts';
import type { Machine } from '../machine/machine.ts';
import type { VmPaths } from '../disks/vm-paths.ts';

const template = Handlebars.compile(fs.readFileSync(new URL('./domain.xml.hbs', import.meta.url), 'utf8'), {
  strict: false,
});

export function renderDomainXml(machine: Machine, machineId: string, paths: VmPaths, settings: Settings): string {
  const x86 = machine.meta.system === 'x86_64-linux';
  return template({
    name: machine.name,
    uuid: domainUuid(machineId),
    mac: macAddress(machineId),
    virtType: machine.meta.virtType,
    kvm: machine.meta.virtType === 'kvm',
    memory: machine.meta.memory,
    vcpus: machine.meta.vcpus,
    arch: x86 ? 'x86_64' : 'aarch64',
    machineType: x86 ? 'q35' : 'virt',
    x86,
    ovmf: settings.ovmf,
    nvram: paths.nvram,
    boot: paths.boot,
    var: paths.var,
    serialLog: paths.serialLog,
    network: machine.meta.network,
    bridge: machine.meta.bridge,
    // Session mode cannot use libvirt's virtual networks (they need root): user-mode networking instead.
    userNet: settings.mode === 'session' && machine.meta.bridge === undefined,
  });
}

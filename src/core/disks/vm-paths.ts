// Where a VM's files live. Names derive from the machine name only, so every command agrees.
import path from 'node:path';
import type { Settings } from '../../host/settings.ts';
import type { Project } from '../machine/project.ts';

export interface VmPaths {
  /** qcow2 overlay backed by the shared base image; attached read-only as vda. */
  boot: string;
  /** The overlay on the base before the last upgrade or rollback: what `ivm rollback` returns to. */
  bootPrevious: string;
  /** qcow2 holding the ext4 /var filesystem; vdb. Never removed unless asked for exactly that. */
  var: string;
  /** UEFI variable store, made by libvirt from the firmware's template at first start. */
  nvram: string;
  /** The serial console, logged by libvirt (virtlogd). */
  serialLog: string;
  /** The rendered domain XML (libvirt/<name>.xml in the project). */
  xml: string;
  /** Where `ivm backup` writes this VM's backups unless told otherwise (<vmDir>/backups/<name>). */
  backupDir: string;
}

export function vmPaths(settings: Settings, project: Project, name: string): VmPaths {
  const at = (file: string) => path.join(settings.vmDir, file);
  return {
    boot: at(`${name}-boot.qcow2`),
    bootPrevious: at(`${name}-boot-prev.qcow2`),
    var: at(`${name}-var.qcow2`),
    nvram: at(`${name}_VARS.fd`),
    serialLog: at(`${name}-serial.log`),
    xml: path.join(project.libvirtDir, `${name}.xml`),
    backupDir: path.join(settings.vmDir, 'backups', name),
  };
}

// The /var disk: a whole-disk ext4 filesystem (no partition table) labelled ivm-var, which the NixOS
// modules mount by label. One guestfish session makes it and writes the identity.
import { fishLine } from '../host/guestfish.ts';
import { VAR_DIRS, VAR_IDENTITY_DIR, VAR_LABEL } from './identity-files.ts';
import type { IdentitySource } from './identity.ts';

/** The guestfish script that formats a new /var disk and writes the identity onto it. */
export function initVarScript(varDisk: string, sources: IdentitySource[]): string[] {
  const script = [
    fishLine('add-drive', varDisk, 'format:qcow2'),
    'run',
    fishLine('mkfs', 'ext4', '/dev/sda', `label:${VAR_LABEL}`),
    fishLine('mount', '/dev/sda', '/'),
  ];
  for (const dir of VAR_DIRS) {
    script.push(fishLine('mkdir-p', dir.path), fishLine('chmod', dir.mode, dir.path), fishLine('chown', '0', '0', dir.path));
  }
  for (const source of sources) {
    const target = `${VAR_IDENTITY_DIR}/${source.name}`;
    script.push(fishLine('upload', source.local, target), fishLine('chown', '0', '0', target), fishLine('chmod', source.mode, target));
  }
  script.push('umount-all');
  return script;
}

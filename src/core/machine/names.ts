import { BadInputError } from '../../errors.ts';

/**
 * A machine name: it becomes a file name, a libvirt domain name and a hostname, so it is an RFC 1123
 * label (a letter first, no dash last, at most 63 characters).
 */
export const MACHINE_NAME = /^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/;

export function validateMachineName(name: string): string {
  if (!MACHINE_NAME.test(name)) {
    throw new BadInputError(
      `invalid machine name ${JSON.stringify(name)}`,
      'a name is a hostname label: a lowercase letter, then lowercase letters, digits or dashes, not ending in a dash, at most 63 characters',
    );
  }
  return name;
}

import { BadInputError } from '../errors.ts';

/** A machine name: it becomes a file name, a libvirt domain name and a hostname. */
export const MACHINE_NAME = /^[a-z][a-z0-9-]{0,62}$/;

export function validateMachineName(name: string): string {
  if (!MACHINE_NAME.test(name)) {
    throw new BadInputError(
      `invalid machine name ${JSON.stringify(name)}`,
      'a name starts with a lowercase letter, then up to 62 lowercase letters, digits or dashes',
    );
  }
  return name;
}

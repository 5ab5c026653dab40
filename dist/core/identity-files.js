// The identity layout, from identity-files.json: the single source that the CLI (create, upgrade)
// and the NixOS modules (builtins.fromJSON) both read.
import data from '../../identity-files.json' with { type: 'json' };
export const IDENTITY_FILES = data.files;
export const VAR_LABEL = data.varLabel;
/** Where identity lives on the /var filesystem (its root), i.e. /var/identity in the guest. */
export const VAR_IDENTITY_DIR = data.varIdentityDir;
export const VAR_DIRS = data.varDirs;
export const KNOWN_HOSTS_FILE = 'known_hosts';

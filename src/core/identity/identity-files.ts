// The identity layout, from identity-files.json: the single source that the CLI (create, upgrade)
// and the NixOS modules (builtins.fromJSON) both read.
import data from '../../../identity-files.json' with { type: 'json' };

export interface IdentityFile {
  name: string;
  /** Octal mode on the /var disk, e.g. "0444". */
  mode: string;
  kind: 'generated' | 'optional';
  secret?: boolean;
  description: string;
}

export const IDENTITY_FILES: readonly IdentityFile[] = data.files as IdentityFile[];
export const VAR_LABEL: string = data.varLabel;
/** Where identity lives on the /var filesystem (its root), i.e. /var/identity in the guest. */
export const VAR_IDENTITY_DIR: string = data.varIdentityDir;
export const VAR_DIRS: readonly { path: string; mode: string }[] = data.varDirs;
export const KNOWN_HOSTS_FILE = 'known_hosts';
/**
 * Free-form per-VM secrets: machines/NAME/secrets/* (git-ignored) are copied into this folder of the
 * /var filesystem (the guest's /var/identity/secrets), each file at fileMode; modules/secrets.nix
 * hands them to services as systemd credentials.
 */
export const SECRETS_DIR: { path: string; mode: string; fileMode: string } = data.secretsDir;
/** The folder of machines/NAME/ the secrets are read from; also their prefix among identity sources. */
export const SECRETS_FOLDER = 'secrets';

# secrets.nix: free-form per-VM secrets, handed to services as systemd credentials.
#
# The CLI copies the files of machines/NAME/secrets/ (git-ignored: they never reach the flake or
# the store) into /var/identity/secrets/ on the VM's /var disk, the folder mode 0700 and each
# file 0600, root's (identity-files.json, secretsDir), at create and at every upgrade. Nothing
# here names a secret: a machine says which service gets which file,
#
#   ivm.secrets.myapp = [ "db-password" "api-token" ];
#
# and systemd.services.myapp gets `LoadCredential=db-password:/var/identity/secrets/db-password`
# (one per name). systemd copies each file into the service's private credentials folder when
# it starts; the service reads it at $CREDENTIALS_DIRECTORY/db-password (systemd-creds cat
# db-password), whatever user it runs as, and the file itself stays 0600 root. A secret listed
# here whose file is missing on the VM makes the service fail to start ("Failed to set up
# credentials"), which is the point: no service starts without its secret. The service must
# exist (defined by another module or the machine's configuration); a name here only adds the
# credentials to it, and RequiresMountsFor=/var/identity/secrets (ordering it after var.mount),
# which suits every ordinary service; not a unit that must run before local-fs-pre.target.
#
# Checked in sources: systemd.exec(5) (LoadCredential=ID:PATH, an absolute path read when the
# unit starts, $CREDENTIALS_DIRECTORY), nixos/lib/systemd-unit-options.nix (serviceConfig values
# that are lists become repeated directives; list definitions of unitConfig merge).
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  dir = ids.secretsDir.guestPath;
  cfg = config.ivm.secrets;
in
{
  imports = [ ./filesystem.nix ];

  options.ivm.secrets = lib.mkOption {
    # A credential name: no "/" or ":" (LoadCredential= splits at ":"), no leading dot (so no
    # "." or ".."), a file name the CLI can copy from machines/NAME/secrets/.
    type = lib.types.attrsOf (lib.types.listOf (lib.types.strMatching "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"));
    default = { };
    example = {
      myapp = [
        "db-password"
        "api-token"
      ];
    };
    description = ''
      Per-VM secrets for services: `ivm.secrets.<service> = [ "name" ... ]` hands each file
      ${dir}/<name> (copied by the CLI from machines/NAME/secrets/<name>) to
      systemd.services.<service> as the systemd credential <name>
      (`LoadCredential=<name>:${dir}/<name>`), read at $CREDENTIALS_DIRECTORY/<name>.
    '';
  };

  config = {
    systemd.services = lib.mapAttrs (_service: names: {
      serviceConfig.LoadCredential = map (name: "${name}:${dir}/${name}") names;
      unitConfig.RequiresMountsFor = [ dir ];
    }) cfg;
  };
}

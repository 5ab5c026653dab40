# ssh-identity.nix: sshd with the VM's own host key, from /var/identity, never a key generated in
# (or baked into) the image.
#
# - services.openssh.hostKeys names only the identity file; sshd reads it at start.
# - NixOS 25.05 generates missing host keys in sshd-keygen.service ("SSH host key generation has
#   been separated into the dedicated systemd service sshd-keygen.service", 25.05 release notes;
#   the unit runs when a configured key is missing and creates its folder with mode 0755). It is
#   masked: a VM without its key must not quietly get a new one (the host's known_hosts pins the
#   key `ivm identity` made).
# - sshd itself only starts when the key exists (ConditionPathExists), after /var/identity is
#   mounted; without the key it is skipped rather than restarted in a loop, and
#   ivm-identity-check.service (identity.nix) reports the missing file.
# - Password and keyboard-interactive logins are off; root cannot log in. Who may log in with
#   which keys is users.nix.
#
# Checked in sources: nixos/modules/services/networking/ssh/sshd.nix (services.openssh.{enable,
# hostKeys, settings.PasswordAuthentication, settings.KbdInteractiveAuthentication,
# settings.PermitRootLogin, openFirewall}; sshd.service wants and is ordered after
# sshd-keygen.service), nixos/doc/manual/release-notes/rl-2505.section.md.
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  key = ids.roles.sshHostKey;
  cfg = config.ivm.ssh;
in
{
  imports = [ ./filesystem.nix ];

  options.ivm.ssh = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Run sshd (port 22, opened in the firewall) with the ed25519 host key from the VM's
        identity files.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.openssh = {
      enable = true;
      hostKeys = [
        {
          type = "ed25519";
          path = key.path;
        }
      ];
      settings = {
        PasswordAuthentication = lib.mkDefault false;
        KbdInteractiveAuthentication = lib.mkDefault false;
        PermitRootLogin = lib.mkDefault "no";
      };
    };

    systemd.services.sshd-keygen.enable = false;

    systemd.services.sshd.unitConfig = {
      ConditionPathExists = key.path;
      RequiresMountsFor = [ ids.dir ];
    };
  };
}

# journald.nix: a persistent journal in /var/log/journal, on the VM's /var disk.
#
# journald starts in the initrd (journal in /run/log/journal) and is flushed to
# /var/log/journal/<machine-id> by systemd-journal-flush once /var is writable; /var is mounted in
# the initrd and the machine-id is the VM's own (identity.nix), so each VM keeps one journal
# folder across reboots. Storage=persistent creates /var/log/journal when it is missing.
#
# Checked in sources: nixos/modules/system/boot/systemd/journald.nix (services.journald.storage,
# services.journald.extraConfig).
{ config, lib, ... }:
let
  cfg = config.ivm.journald;
in
{
  imports = [ ./filesystem.nix ];

  options.ivm.journald = {
    systemMaxUse = lib.mkOption {
      type = lib.types.strMatching "[0-9]+[KMGT]?";
      default = "1G";
      example = "500M";
      description = ''
        Most disk space the persistent journal may take on /var (journald.conf `SystemMaxUse=`).
      '';
    };
  };

  config = {
    services.journald.storage = lib.mkDefault "persistent";
    services.journald.extraConfig = ''
      SystemMaxUse=${cfg.systemMaxUse}
    '';
  };
}

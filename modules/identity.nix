# identity.nix: the VM's machine-id and hostname, from /var/identity, with nothing per-VM in the
# image.
#
# Placeholder + bind mount: the image's /etc (immutable overlay, overlay-etc.nix) holds empty
# /etc/machine-id and /etc/hostname files; the initrd binds the VM's own files over them, read-only,
# right after it has mounted /var and /etc and before it switches to the real root. systemd of
# the real root then reads both when it starts (machine_id_setup and hostname_setup run again
# after switch-root), so it never makes a transient machine-id and the static hostname is the
# VM's. networking.hostName is empty, so NixOS writes no hostname anywhere in the image.
#
# networking.hostName is set with lib.mkOverride 900: above the option's default ("nixos") and
# any mkDefault (1000) elsewhere, below a plain definition (100). A machine's default.nix that
# sets a hostname therefore wins the merge, and the assertion below fails with a message saying
# where the hostname comes from, instead of the bare "conflicting definition values" error a
# second plain definition would give. journald.nix decides from the same binding whether the
# journal is persistent.
#
# The files are "generated" ones: `ivm create` always writes them. The binds are nofail (with an
# explicit Before=initrd-fs.target, which nofail would otherwise drop) so that a /var without
# them still boots, with a transient machine-id and no hostname, and ivm-identity-check.service
# fails and says which file is missing.
#
# Checked in sources: nixos/modules/tasks/filesystems.nix (neededForBoot entries go into the initrd
# fstab, given to systemd as SYSTEMD_SYSROOT_FSTAB, with "x-initrd.mount"); systemd's
# fstab-generator (in the initrd it prefixes mount points and bind sources with /sysroot, the
# latter since systemd 255; x-systemd.before=, nofail);
# systemd src/core/main.c (after switch-root the setup, including hostname_setup and
# machine_id_setup, runs again);
# nixos/modules/system/boot/systemd/initrd.nix (the initrd's own /etc/hostname is
# networking.hostName, empty here); nixos/modules/tasks/network-interfaces.nix (/etc/hostname is
# only written when networking.hostName is not empty; the option's type accepts ""); lib/modules.nix
# (mkOverride: the definitions of the lowest priority number win, mkDefault is 1000, a plain
# definition 100, an option default 1500); nixos/modules/misc/assertions.nix (assertions, shown
# with their message when evaluation fails).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  ids = import ./identity-files.nix;
  inherit (ids.roles) machineId hostname;
  secrets = ids.secretsDir;
  cfg = config.ivm.identity;

  # An initrd bind mount of an identity file over its /etc placeholder.
  bindIdentity = role: {
    device = role.path;
    fsType = "none";
    options = [
      "bind"
      "ro"
      "nofail"
      "x-systemd.before=initrd-fs.target"
    ];
    neededForBoot = true;
  };
in
{
  imports = [
    ./overlay-etc.nix
    ./filesystem.nix
  ];

  options.ivm.identity = {
    check.enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Check the identity files in ${ids.dir} at every boot (ivm-identity-check.service): a
        missing file that `ivm create` always writes fails the unit, a file whose mode differs
        from identity-files.json (including the secrets folder and its files) is logged as a
        warning.
      '';
    };
  };

  config = {
    # The hostname comes from the VM's identity only; a name here would be baked into the image.
    networking.hostName = lib.mkOverride 900 "";

    assertions = [
      {
        assertion = config.networking.hostName == "";
        message = ''
          ivm: networking.hostName is set to "${config.networking.hostName}", but an ivm image carries
          no hostname: every VM gets its hostname at boot from ${hostname.path} (bound over
          /etc/hostname), which `ivm identity NAME` writes into machines/NAME/hostname and
          `ivm create` copies onto the VM's /var disk. The machine's name is its hostname: remove
          networking.hostName from the machine's configuration (machines/NAME/default.nix).
        '';
      }
    ];

    # /etc/machine-id and /etc/hostname are systemd's paths (machine-id(5), hostname(5)).
    environment.etc."machine-id" = {
      text = "";
      mode = machineId.mode;
    };
    environment.etc."hostname" = {
      text = "";
      mode = hostname.mode;
    };

    fileSystems."/etc/machine-id" = bindIdentity machineId;
    fileSystems."/etc/hostname" = bindIdentity hostname;

    systemd.services.ivm-identity-check = lib.mkIf cfg.check.enable {
      description = "Check the VM's identity files in ${ids.dir}";
      wantedBy = [ "multi-user.target" ];
      unitConfig.RequiresMountsFor = [ ids.dir ];
      path = [ pkgs.coreutils ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        status=0
        check() { # path mode kind
          if [ ! -e "$1" ]; then
            if [ "$3" = generated ]; then
              echo "<3>missing $1 (ivm create writes it)"
              status=1
            fi
            return 0
          fi
          actual=$(stat -c %a "$1")
          if [ "$((8#$actual))" != "$((8#$2))" ]; then
            echo "<4>$1 has mode $actual, identity-files.json says $2"
          fi
        }
        ${lib.concatMapStrings (
          f:
          "check ${lib.escapeShellArg f.path} ${lib.escapeShellArg f.mode} ${lib.escapeShellArg f.kind}\n"
        ) ids.files}
        if [ -d ${lib.escapeShellArg secrets.guestPath} ]; then
          check ${lib.escapeShellArg secrets.guestPath} ${secrets.mode} optional
          for f in ${lib.escapeShellArg secrets.guestPath}/*; do
            if [ -e "$f" ]; then check "$f" ${secrets.fileMode} optional; fi
          done
        fi
        exit "$status"
      '';
    };
  };
}

# console-login.nix: admin may log in on the console with the password hash of the identity file admin_password_hash
#
# A machine selects it with `ivm.profiles.console-login.enable = true;`; a VM whose /var has the
# optional identity file admin_password_hash (one line: a crypt(3) hash, as `mkpasswd` prints
# it) then lets admin log in on the serial console (`ivm console NAME`) or the screen with that
# password, for when SSH is broken. SSH stays key-only (ssh-identity.nix turns password and
# keyboard-interactive logins off), root stays locked. Without the file admin has no password:
# no password login anywhere, as without the profile.
#
# How: users.users.admin.hashedPasswordFile, which userborn (overlay-etc.nix) reads at every
# boot when it writes /var/lib/nixos/shadow, names /run/ivm/admin-password-hash, a file
# ivm-admin-password.service writes just before userborn runs: the identity file's hash when
# it is one valid line, else "!*" (userborn's own "locked and invalid" value). Why not the
# identity file itself: userborn reads hashedPasswordFile with read_to_string and, when that
# fails, logs "Failed to create user" / "Failed to update user" and skips that account's shadow
# entry (src/main.rs ensure_shadow, src/password.rs from_config), leaving a new admin without a
# shadow line and an existing one with the password of the previous boot: a VM whose file was
# removed would keep accepting the old password. The /run file always exists, so a removed
# identity file locks the password at the next boot.
#
# Ordering: before userborn.service, which runs before local-fs-pre.target (userborn.nix orders it
# before systemd-tmpfiles-setup-dev.service, which systemd orders before local-fs-pre.target); so
# this unit has no RequiresMountsFor on /var (that would order it after var.mount, itself after
# local-fs-pre.target: a cycle) and relies, like userborn, on /var being mounted in the initrd.
#
# The console login prompt is systemd's serial-getty@ttyS0 (ttyAMA0 on aarch64) on the console
# boot.nix puts on the kernel command line, and getty@tty1 on the screen.
#
# Checked in sources: nixos/modules/config/users-groups.nix (hashedPasswordFile: nullOr str,
# "read on each system activation"; it counts for the lock-out assertion), nixos/modules/
# services/system/userborn.nix (passes hashedPasswordFile to userborn; userborn.service runs in
# sysinit, DefaultDependencies=false, before systemd-tmpfiles-setup-dev.service), systemd's
# units/systemd-tmpfiles-setup-dev.service (Before=local-fs-pre.target) and systemd.mount(5)
# (local mounts are ordered after local-fs-pre.target), nikstur/userborn rust/userborn/src/password.rs
# (hashedPasswordFile first, read and trimmed; a read error is returned) and src/main.rs
# (per-user errors logged, the other users still written), src/shadow.rs ("!*" is
# PASSWORD_LOCKED_AND_INVALID, and not warned about as a weak hash).
{
  config,
  lib,
  ...
}:
let
  ids = import ../identity-files.nix;
  role = ids.roles.adminPasswordHash;
  cfg = config.ivm.profiles.console-login;
  admin = config.ivm.users.admin.name;
  runtimeDir = "/run/ivm";
  runtimeHash = "${runtimeDir}/admin-password-hash";
in
{
  imports = [ ../users.nix ];

  options.ivm.profiles.console-login = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "admin may log in on the console with the password hash of the identity file admin_password_hash";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.services.userborn.enable;
        message = ''
          ivm.profiles.console-login needs userborn (services.userborn.enable, set by
          overlay-etc.nix): it reads admin's password hash from ${runtimeHash} at every boot.
        '';
      }
    ];

    users.users.${admin}.hashedPasswordFile = runtimeHash;

    systemd.services.ivm-admin-password = {
      description = "admin's console password hash from the VM's identity";
      wantedBy = [ "userborn.service" ];
      before = [
        "userborn.service"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      # No RequiresMountsFor=/var/identity: it would order this unit after var.mount, and
      # var.mount comes after local-fs-pre.target, which userborn.service precedes (through
      # systemd-tmpfiles-setup-dev.service): an ordering cycle. /var is mounted in the initrd
      # (filesystem.nix), which is what userborn relies on for /var/lib/nixos too.
      unitConfig.DefaultDependencies = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        UMask = "0077";
      };
      script = ''
        src=${lib.escapeShellArg role.path}
        hash='!*'
        if [ -e "$src" ]; then
          lines=0
          line=
          while IFS= read -r l || [ -n "$l" ]; do
            lines=$((lines + 1))
            line="$l"
          done < "$src"
          line="''${line%$'\r'}"
          mcf='^[$][A-Za-z0-9./$=,+-]+$'
          if [ "$lines" = 1 ] && [[ "$line" =~ $mcf ]]; then
            hash="$line"
            echo "ivm: admin may log in on the console with the password of $src"
          else
            echo "<3>ivm: $src is not one crypt(3) hash line (as mkpasswd prints it): admin's password stays locked"
          fi
        else
          echo "ivm: no $src: admin has no password"
        fi
        install -d -m 0755 ${runtimeDir}
        printf '%s\n' "$hash" > ${runtimeHash}.tmp
        chmod 0600 ${runtimeHash}.tmp
        mv ${runtimeHash}.tmp ${runtimeHash}
      '';
    };
  };
}

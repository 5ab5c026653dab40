# users.nix: an `admin` account with sudo (wheel) and a `user` account without; no passwords.
# Their SSH keys are read when they log in, from the VM's identity (admin_authorized_keys,
# user_authorized_keys: both optional), so one image serves VMs with different keys.
#
# - users.mutableUsers = false with userborn (overlay-etc.nix): passwd/group/shadow are generated
#   at boot into /var/lib/nixos from this configuration; the fixed uids keep file ownership on /var
#   stable.
# - No account has a password, so the lock-out assertion of users-groups.nix ("Neither the root
#   account nor any wheel user has a password or SSH authorized key") is switched off with
#   users.allowNoPasswordLogin (the keys exist, but only at runtime; mkDefault, so that a machine
#   that gives an account a password can turn the check back on), and sudo does not ask for
#   the password nobody has. Root stays locked; logins are SSH keys or the console's emergency
#   access, if the host configures one.
# - users.users.<name>.openssh.authorizedKeys.keyFiles is read at BUILD time (its text ends up in
#   /etc/ssh/authorized_keys.d): unusable for per-VM keys. Instead sshd_config gets a Match block
#   per account naming the identity file (sshd reads AuthorizedKeysFile per login; the file and
#   /var/identity are root-owned and not group/world-writable, as StrictModes wants). The files in
#   /etc/ssh/authorized_keys.d stay accepted, for keys one deliberately bakes into an image.
#
# Checked in sources: nixos/modules/config/users-groups.nix (users.mutableUsers,
# users.allowNoPasswordLogin and the assertion it disables, isNormalUser, uid, extraGroups),
# nixos/modules/services/system/userborn.nix (home directories made by tmpfiles),
# nixos/modules/services/networking/ssh/sshd.nix (services.openssh.extraConfig is appended after
# the generated settings; `sshd -G -T` checks the result when the system is built),
# nixos/modules/security/sudo.nix (security.sudo.wheelNeedsPassword).
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  cfg = config.ivm.users;

  account = role: defaultName: defaultUid: {
    name = lib.mkOption {
      type = lib.types.strMatching "[a-z_][a-z0-9_-]{0,31}";
      default = defaultName;
      description = "Login name of the ${role} account.";
    };
    uid = lib.mkOption {
      type = lib.types.int;
      default = defaultUid;
      description = "Numeric user id of the ${role} account (fixed, so that ownership on /var is stable).";
    };
  };
in
{
  imports = [
    ./overlay-etc.nix
    ./filesystem.nix
  ];

  options.ivm.users = {
    admin = account "administrator (sudo)" "admin" 1000;
    user = account "unprivileged" "user" 1001;
  };

  config = {
    users.mutableUsers = false;
    users.allowNoPasswordLogin = lib.mkDefault true;

    users.users.${cfg.admin.name} = {
      isNormalUser = true;
      uid = cfg.admin.uid;
      extraGroups = [ "wheel" ];
      description = "Administrator (sudo); SSH keys from ${ids.roles.adminAuthorizedKeys.path}";
    };

    users.users.${cfg.user.name} = {
      isNormalUser = true;
      uid = cfg.user.uid;
      description = "User; SSH keys from ${ids.roles.userAuthorizedKeys.path}";
    };

    security.sudo.wheelNeedsPassword = lib.mkDefault false;

    services.openssh.extraConfig = lib.mkIf config.services.openssh.enable (
      lib.mkAfter ''
        Match User ${cfg.admin.name}
          AuthorizedKeysFile ${ids.roles.adminAuthorizedKeys.path} /etc/ssh/authorized_keys.d/%u
        Match User ${cfg.user.name}
          AuthorizedKeysFile ${ids.roles.userAuthorizedKeys.path} /etc/ssh/authorized_keys.d/%u
      ''
    );
  };
}

# podman.nix: Podman with its storage on /var (/var/lib/containers); rootless containers for user
#
# A machine selects it with `ivm.profiles.podman.enable = true;`.
#
# - Podman (virtualisation.podman) with the containers storage (storage.conf) graphroot
#   /var/lib/containers/storage on the VM's /var disk and runroot /run/containers/storage.
#   storage.conf, containers.conf, registries.conf and policy.json are generated into the image's
#   /etc at build time (virtualisation.containers): the same on every VM, nothing written at
#   runtime.
# - Rootless containers for the accounts of `ivm.profiles.podman.rootlessUsers` (user): they keep
#   their images and containers in ~/.local/share/containers, in /home on /var. Rootless podman
#   needs subordinate ids in /etc/subuid and /etc/subgid (read by the setuid newuidmap and
#   newgidmap, which NixOS puts in /run/wrappers). On a mutable /etc NixOS's perl user script
#   writes those files from users.users.<name>.subUidRanges / autoSubUidGidRange at activation.
#   Here /etc is the immutable overlay and users are made by userborn, which writes only passwd,
#   group and shadow (into /var/lib/nixos, linked from /etc) and ignores sub-id ranges (its
#   nixpkgs module passes none; nikstur/userborn#7). So this profile writes both files into the
#   image itself (environment.etc, mode 0644: real files, as newuidmap opens them with
#   O_NOFOLLOW), one range of 65536 ids per account from 100000 on. That is right on every VM,
#   since the accounts and their uids are fixed in the image (users.nix).
# - rootful podman (sudo podman) uses the same storage under /var/lib/containers.
#
# Checked in sources: nixos/modules/virtualisation/podman/default.nix (virtualisation.podman.enable;
# it enables virtualisation.containers; /run/wrappers in the package's path for newuidmap),
# nixos/modules/virtualisation/containers.nix (storage.settings.storage driver "overlay",
# graphroot "/var/lib/containers/storage", runroot "/run/containers/storage", all mkDefault;
# environment.etc."containers/*"), nixos/modules/services/system/userborn.nix (the config it
# passes: name, uid, group, description, home, passwords, isNormal, shell: no sub-ids; files
# linked from passwordFilesLocation), nixos/modules/config/users-groups.nix (subUidRanges,
# autoSubUidGidRange, handled by update-users-groups.pl, which userborn replaces).
{
  config,
  lib,
  ...
}:
let
  cfg = config.ivm.profiles.podman;

  firstSubId = 100000;
  subIdCount = 65536;
  subIds = lib.concatStrings (
    lib.imap0 (
      i: name: "${name}:${toString (firstSubId + i * subIdCount)}:${toString subIdCount}\n"
    ) cfg.rootlessUsers
  );
in
{
  imports = [ ../users.nix ];

  options.ivm.profiles.podman = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Podman with its storage on /var (/var/lib/containers); rootless containers for user";
    };

    rootlessUsers = lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "[a-z_][a-z0-9_-]{0,31}");
      default = [ config.ivm.users.user.name ];
      defaultText = "[ config.ivm.users.user.name ]";
      description = ''
        Accounts that run rootless containers: each gets 65536 subordinate uids and gids in
        /etc/subuid and /etc/subgid, from 100000 on, written into the image.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    virtualisation.podman.enable = true;

    virtualisation.containers.storage.settings.storage = {
      driver = lib.mkDefault "overlay";
      graphroot = lib.mkDefault "/var/lib/containers/storage";
      runroot = lib.mkDefault "/run/containers/storage";
    };

    environment.etc.subuid = {
      text = subIds;
      mode = "0644";
    };
    environment.etc.subgid = {
      text = subIds;
      mode = "0644";
    };
  };
}

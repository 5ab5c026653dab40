# docker.nix: Docker with its state on /var (/var/lib/docker); admin in the docker group
#
# A machine selects it with `ivm.profiles.docker.enable = true;`.
#
# - dockerd (virtualisation.docker) with data-root /var/lib/docker, on the VM's /var disk: images,
#   containers and volumes are per-VM data and survive upgrades. Its daemon.json is generated
#   into the store and passed with --config-file, so nothing is written under /etc; its socket
#   and runtime state are in /run. The storage driver is overlay2 (on /var's ext4).
# - The accounts of `ivm.profiles.docker.users` (admin) join the docker group: membership is
#   root-equivalent, so `user` is not in it by default. The group's gid is NixOS's fixed one
#   (ids.gids.docker), which userborn writes into /var/lib/nixos/group at boot.
# - Docker adds its own iptables chains at start; it works with the iptables NixOS firewall that
#   base.nix enables (docker's forwarding sysctls come from nixpkgs' module). With the
#   block-private-networks profile, containers' traffic goes through FORWARD, which that profile
#   filters too.
# - Rootless Docker (virtualisation.docker.rootless) is not set up: the podman profile is the
#   rootless one.
#
# Checked in sources: nixos/modules/virtualisation/docker.nix (virtualisation.docker.enable,
# storageDriver (enum with "overlay2"), daemon.settings (freeform, serialized to daemon.json and
# passed with --config-file), users.groups.docker.gid = config.ids.gids.docker, docker.socket
# with SocketGroup docker), nixos/modules/config/users-groups.nix (extraGroups).
{
  config,
  lib,
  ...
}:
let
  cfg = config.ivm.profiles.docker;
in
{
  imports = [ ../users.nix ];

  options.ivm.profiles.docker = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Docker with its state on /var (/var/lib/docker); admin in the docker group";
    };

    users = lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "[a-z_][a-z0-9_-]{0,31}");
      default = [ config.ivm.users.admin.name ];
      defaultText = "[ config.ivm.users.admin.name ]";
      description = ''
        Accounts in the docker group, who may use the docker command without sudo. Membership
        is root-equivalent.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    virtualisation.docker = {
      enable = true;
      storageDriver = lib.mkDefault "overlay2";
      daemon.settings.data-root = lib.mkDefault "/var/lib/docker";
    };

    users.users = builtins.listToAttrs (
      map (name: {
        inherit name;
        value.extraGroups = [ "docker" ];
      }) cfg.users
    );
  };
}

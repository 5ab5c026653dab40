# base.nix: what every ivm VM has in common. Nothing machine-specific: the image must be the same
# for every machine that selects the same modules (hostname, keys, ports and the like come from
# /var/identity at runtime, see the identity modules).
#
# - virtio drivers in the initrd (nixpkgs' qemu-guest profile).
# - Networking: systemd-networkd with DHCP on every ethernet interface and systemd-resolved
#   (dns-identity.nix); network-online as soon as one interface is up.
# - Nix itself is off: the store is read-only and shared, nothing on the VM may build, collect
#   garbage (nix.gc.automatic = false) or keep registries, channels or a copy of nixpkgs (which
#   would also pull the nixpkgs source into the image).
#
# Checked in sources: nixos/modules/profiles/qemu-guest.nix, nixos/modules/services/misc/nix-gc.nix
# (nix.gc.automatic), nixos/modules/config/nix.nix (nix.enable),
# nixos/modules/config/nix-channel.nix (nix.channel.enable), nixos/modules/misc/nixpkgs-flake.nix
# (nixpkgs.flake.setNixPath, setFlakeRegistry), nixos/modules/tasks/network-interfaces-systemd.nix
# (networking.useNetworkd, useDHCP), nixos/modules/system/boot/networkd.nix
# (systemd.network.wait-online.anyInterface).
{ lib, modulesPath, ... }:
{
  imports = [ (modulesPath + "/profiles/qemu-guest.nix") ];

  config = {
    system.stateVersion = lib.mkDefault "25.05";

    nix.enable = lib.mkDefault false;
    nix.gc.automatic = false;
    nix.optimise.automatic = lib.mkDefault false;
    nix.channel.enable = lib.mkDefault false;
    nixpkgs.flake.setNixPath = lib.mkDefault false;
    nixpkgs.flake.setFlakeRegistry = lib.mkDefault false;

    documentation.nixos.enable = lib.mkDefault false;

    networking.useNetworkd = lib.mkDefault true;
    networking.useDHCP = lib.mkDefault true;
    systemd.network.wait-online.anyInterface = lib.mkDefault true;
    networking.firewall.enable = lib.mkDefault true;

    time.timeZone = lib.mkDefault "UTC";
  };
}

# image.nix: `system.build.ivmImage`, the base image the CLI builds and installs.
#
# Contract with the CLI: `nix build <flake>#nixosConfigurations.<name>.config.system.build.ivmImage`
# gives a folder holding exactly one *.qcow2 (here ivm.qcow2, next to nix-support/): a GPT disk
# with an ESP (vfat, "ESP", systemd-boot installed, boot.nix) and the ext4 root
# (`ivm.filesystem.rootLabel`) holding the system's closure, booted read-only (filesystem.nix).
#
# Why make-disk-image directly and not `config.system.build.images.qemu-efi`: in NixOS 25.05 the
# qemu-efi variant is nixos/modules/virtualisation/disk-image.nix applied through extendModules.
# That module sets ALL of fileSystems with lib.mkImageMediaOverride (priority 60), which drops the
# ordinary-priority entries of filesystem.nix (/var, /home, /root, the identity bind mounts) from
# the image's configuration, and it turns boot.growPartition on. Calling make-disk-image (what
# disk-image.nix itself calls) with this configuration builds an image of exactly
# `nixosConfigurations.<name>.config`, whose toplevel is the one `nix flake check` evaluates.
#
# make-disk-image (nixos/lib/make-disk-image.nix) arguments used, all present in the 25.05-era
# source: format "qcow2", partitionTableType "efi" (ESP from 8 MiB to bootSize, root after it),
# baseName (file name "${baseName}.qcow2"; 25.05 release notes: names now known at evaluation
# time), label (root filesystem label), diskSize "auto" + additionalSpace, installBootLoader (runs
# `switch-to-configuration boot` in the build VM, which is why system.switch stays enabled),
# touchEFIVars false (no efi-vars.fd in the output), copyChannel false (no nixpkgs copy in the
# image), memSize, contents.
#
# `contents` puts empty folders in the root filesystem for every mount point the read-only root
# needs at boot: systemd cannot create a missing mount point on it. The image builder's own
# activation makes some of them; listing them all does not depend on that.
#
# It also puts /etc/os-release and /etc/NIXOS in the root filesystem's own /etc, which the /etc
# overlay hides at boot. They are for the boot loader installation in the build VM:
# switch-to-configuration refuses to run ("This is not a NixOS installation!") without one of
# them, and bootctl takes its entry token from os-release when there is no machine-id (and
# writes it to /etc/kernel/entry-token, on this writable /etc). Since NixOS/nixpkgs#364239 (Dec
# 2024, in 25.05) the activation run by nixos-enter would mount the /etc overlay over this /etc,
# and the installation would then fail on the read-only overlay and its empty /etc/machine-id;
# overlay-etc.nix skips that snippet inside nixos-enter (point 7 of its header), so this plain
# /etc is what the installation always sees, whatever the build VM's kernel can mount.
#
# The build runs in a QEMU VM (vmTools.runInLinuxVM): the building host needs the `kvm` system
# feature, and builds for the host's own architecture.
{
  config,
  lib,
  pkgs,
  modulesPath,
  ...
}:
let
  cfg = config.ivm.image;

  mountPoint = target: mode: {
    source = pkgs.emptyDirectory;
    inherit target mode;
  };
in
{
  imports = [
    ./filesystem.nix
    ./boot.nix
  ];

  options.ivm.image = {
    bootSize = lib.mkOption {
      type = lib.types.strMatching "[0-9]+[KMG]";
      default = "256M";
      description = "End of the ESP on the image's disk (make-disk-image `bootSize`; the ESP starts at 8 MiB).";
    };

    additionalSpace = lib.mkOption {
      type = lib.types.strMatching "[0-9]+[KMG]";
      default = "128M";
      description = ''
        Free space left on the root filesystem beyond the system's closure. The root is mounted
        read-only, so little is needed.
      '';
    };

    memSize = lib.mkOption {
      type = lib.types.int;
      default = 1024;
      description = "Memory (MiB) of the VM that builds the image.";
    };
  };

  config = {
    system.build.ivmImage = import (modulesPath + "/../lib/make-disk-image.nix") {
      inherit lib config pkgs;
      name = "ivm-image";
      baseName = "ivm";
      format = "qcow2";
      partitionTableType = "efi";
      label = config.ivm.filesystem.rootLabel;
      diskSize = "auto";
      inherit (cfg) additionalSpace bootSize memSize;
      installBootLoader = true;
      touchEFIVars = false;
      copyChannel = false;
      contents = [
        (mountPoint "/var" "0755")
        (mountPoint "/home" "0755")
        (mountPoint "/root" "0700")
        (mountPoint "/tmp" "1777")
        (mountPoint "/srv" "0755")
        (mountPoint "/boot" "0755")
        (mountPoint "/proc" "0555")
        (mountPoint "/sys" "0555")
        (mountPoint "/dev" "0755")
        (mountPoint "/run" "0755")
        {
          source = config.environment.etc."os-release".source;
          target = "/etc/os-release";
          mode = "0444";
        }
        {
          source = pkgs.writeText "NIXOS" "";
          target = "/etc/NIXOS";
          mode = "0444";
        }
      ];
    };
  };
}

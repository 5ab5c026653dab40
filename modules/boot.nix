# boot.nix: UEFI with systemd-boot, and nothing that writes to the ESP or the root at boot.
#
# The boot loader is installed once, into the image, when image.nix builds it
# (`switch-to-configuration boot` inside the image builder's VM). Every VM boots the same ESP,
# read-only: EFI variables are never touched (each VM's NVRAM stays as the firmware made it) and
# no unit may try to update the loader, its random seed or boot counters.
#
# Checked in nixpkgs sources (NixOS 25.05 era, through the search tool):
# - nixos/modules/system/boot/loader/systemd-boot/systemd-boot.nix and efi.nix:
#   boot.loader.systemd-boot.{enable, editor}, boot.loader.efi.canTouchEfiVariables (false: the
#   installer passes --no-variables), boot.loader.timeout.
# - nixos/modules/system/boot/systemd.nix: "systemd-boot-random-seed.service" and
#   "systemd-bless-boot.service" are among the upstream units when systemd is built with the boot
#   loader; random-seed rewrites loader/random-seed on the ESP at every boot and fails on a
#   read-only ESP. Both are masked (`enable = false` makes NixOS link the unit to /dev/null).
#   No system token EFI variable is ever written (see above); older systemd-boot then ignores the
#   seed file `bootctl install` leaves on the shared ESP, newer ones may mix it with the firmware's
#   RNG output. Not checked for the pinned systemd (docs/flake.md); neither stops the boot.
# - nixos/modules/system/boot/grow-partition.nix: boot.growPartition grows the partition of / at
#   boot (growpart); the qemu-efi image variant turns it on by default. Off: / is read-only.
# - Secure Boot: NixOS's systemd-boot is unsigned; the host must give firmware without Secure
#   Boot (the CLI's domain XML does).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.ivm.boot;
  serialConsole =
    if pkgs.stdenv.hostPlatform.isAarch64 then "console=ttyAMA0,115200" else "console=ttyS0,115200";
in
{
  options.ivm.boot = {
    serialConsole = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Send kernel and boot messages to the first serial port as well as the screen
        (`console=tty0` and `console=ttyS0`, `ttyAMA0` on aarch64), so that
        {command}`virsh console` and serial logs show the boot.
      '';
    };
  };

  config = {
    boot.loader.systemd-boot.enable = true;
    boot.loader.systemd-boot.editor = lib.mkDefault false;
    boot.loader.efi.canTouchEfiVariables = false;
    boot.loader.grub.enable = lib.mkDefault false;
    boot.loader.timeout = lib.mkDefault 1;

    boot.kernelParams = lib.mkIf cfg.serialConsole [
      "console=tty0"
      serialConsole
    ];

    boot.growPartition = false;

    # Writers to the ESP at boot.
    systemd.services.systemd-boot-random-seed.enable = false;
    systemd.services.systemd-bless-boot.enable = false;
  };
}

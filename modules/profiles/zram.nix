# zram.nix: Compressed swap in memory (zram), up to half of the RAM
#
# A machine selects it with `ivm.profiles.zram.enable = true;`.
#
# - zramSwap: a zram device used as swap, compressed with zstd, sized to
#   `ivm.profiles.zram.memoryPercent` (50) percent of the RAM (the most it may hold
#   uncompressed). NixOS sets it up with zram-generator: its configuration
#   (/etc/systemd/zram-generator.conf) is in the image, the device is made at boot by
#   systemd-zram-setup@zram0.service. Nothing is written to a disk: no swap file on /var, no
#   partition.
#
# Checked in sources: nixos/modules/config/zram.nix (zramSwap.enable, memoryPercent (int, 50),
# algorithm (default "zstd"), priority; zram-generator settings with zram-size
# "<memoryPercent> / 100 * ram").
{
  config,
  lib,
  ...
}:
let
  cfg = config.ivm.profiles.zram;
in
{
  options.ivm.profiles.zram = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Compressed swap in memory (zram), up to half of the RAM";
    };

    memoryPercent = lib.mkOption {
      type = lib.types.ints.between 1 100;
      default = 50;
      description = "Largest amount of data the zram swap may hold, in percent of the RAM.";
    };
  };

  config = lib.mkIf cfg.enable {
    zramSwap = {
      enable = true;
      memoryPercent = cfg.memoryPercent;
      algorithm = lib.mkDefault "zstd";
    };
  };
}

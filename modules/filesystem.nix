# filesystem.nix: read-only / and /boot, /var from the VM's own disk, /home and /root bound from
# /var, /tmp on tmpfs.
#
# Layout (the CLI's side of it is identity-files.json):
#   /      ext4 labelled `ivm.filesystem.rootLabel` ("nixos"), read-only. The VM sees its boot disk
#          read-only (a qcow2 overlay on the shared base image, attached <readonly/>), so nothing may
#          write to it, not even fsck: noCheck.
#   /boot  the ESP (vfat, label "ESP"), read-only, nofail.
#   /var   the whole-disk ext4 (no partition table) labelled `varLabel` from identity-files.json
#          ("ivm-var"), written by `ivm create`; mounted in the initrd (needed for boot), grown to
#          fill its disk when the disk was enlarged (one mechanism: autoResize, see the last point).
#   /home, /root  bind mounts of /var/home and /var/root.
#   /tmp   tmpfs.
#
# Checked in nixpkgs sources (NixOS 25.05 era, read with the search tool; the pinned commit itself
# is not in the index, so each fact comes from a nearby version):
# - nixos/modules/tasks/filesystems.nix: fileSystems.<name>.{device, fsType, options, autoResize,
#   noCheck, neededForBoot}; autoResize adds "x-systemd.growfs" to the options; noCheck gives fsck
#   pass 0; file systems needed for boot also get "x-initrd.mount" and go into the initrd's fstab.
# - nixos/lib/utils.nix: "/var" is in pathsNeededForBoot, so /var is mounted in the initrd;
#   neededForBoot = true says so explicitly.
# - nixos/modules/tasks/filesystems.nix hands the initrd the needed-for-boot entries as a plain
#   fstab (SYSTEMD_SYSROOT_FSTAB); systemd's fstab-generator prefixes their mount points, and the
#   sources of bind mounts (systemd >= 255), with /sysroot (identity.nix relies on this too).
# - nixos/lib/make-disk-image.nix: root ext4 labelled by its `label` argument (default "nixos"),
#   ESP made with `mkfs.vfat -n ESP`. image.nix passes `ivm.filesystem.rootLabel` as `label`.
# - nixos/modules/virtualisation/disk-image.nix (the qemu-efi image variant) replaces ALL of
#   fileSystems with lib.mkImageMediaOverride; this is why image.nix calls make-disk-image itself
#   instead (see its header).
# - nixos/modules/system/activation/activation-script.nix and config/shells-environment.nix:
#   the `usrbinenv` and `binsh` activation snippets re-create /usr/bin/env and /bin/sh on every
#   activation; on a read-only root they fail (logged, boot goes on). They are replaced below by
#   versions that only write when the link is missing or wrong, i.e. when the image is built.
# - nixos/modules/config/stub-ld.nix and ldso.nix: environment.stub-ld.enable (default true) makes
#   systemd-tmpfiles create /lib64/ld-linux-x86-64.so.2 (and /lib/ld-linux.so.2 on x86_64) at every
#   boot, `d` + `L+` rules. nixos-enter runs systemd-tmpfiles in the image build VM, but with the
#   root filesystem's own /etc, which has no tmpfiles.d (overlay-etc.nix, point 7), so the links
#   are not in the image and these rules fail at each boot on the read-only root. Off by default
#   here: the rules become `r` (remove if present), a no-op. The stub only printed a friendlier
#   error for foreign binaries.
# - Growing /var: ONE mechanism, `autoResize` (NixOS's own). filesystems.nix turns it into the
#   fstab option "x-systemd.growfs", in /etc/fstab and in the initrd's fstab alike. In the real
#   root, systemd-fstab-generator hooks systemd-growfs@var.service (the template is among the
#   upstream units of nixos/modules/system/boot/systemd.nix: "systemd-growfs@.service",
#   "systemd-growfs-root.service") to var.mount; /var is already mounted at switch-root, and the
#   unit runs when local-fs.target pulls var.mount in, growing the mounted ext4 online. The
#   initrd.nix read (a 24.x version; the pinned one is not in the index) ships neither
#   systemd-growfs nor its template, so the initrd's generated want names a unit that is not
#   found, which is ignored; older versions shipped both when a needed-for-boot file system had
#   autoResize, and then the initrd grows /var and the stage-2 unit finds nothing to do. Either
#   way it is one option and one tool. The separate ivm-var-growfs.service of earlier versions
#   ran systemd-growfs once more after that and always found nothing to do: removed.
#   On a booted VM: `systemctl status systemd-growfs@var.service` (docs/flake.md).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  ids = import ./identity-files.nix;
  cfg = config.ivm.filesystem;

  # make-disk-image always labels the ESP "ESP".
  espLabel = "ESP";

  # Guest path of a folder on the /var filesystem, from identity-files.json's varDirs.
  varDir =
    path:
    let
      found = builtins.filter (d: d.path == path) ids.varDirs;
    in
    if found == [ ] then
      throw "identity-files.json: varDirs lists no ${path}"
    else
      (builtins.head found).guestPath;

  bindFromVar = path: {
    device = varDir path;
    fsType = "none";
    options = [ "bind" ];
  };
in
{
  options.ivm.filesystem = {
    rootLabel = lib.mkOption {
      type = lib.types.strMatching "[A-Za-z0-9_-]{1,16}";
      default = "nixos";
      description = ''
        Label of the ext4 root filesystem in the image. The image builder (image.nix) formats
        the root filesystem with this label and / is mounted by it.
      '';
    };

    growVar = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Grow the /var filesystem to the size of its disk at boot, so that enlarging a VM's /var
        disk (`qemu-img resize`) is all it takes to give it more room. Sets `autoResize` on /var:
        systemd-growfs@var.service (made by systemd-fstab-generator from the x-systemd.growfs
        mount option) grows the mounted ext4 at every boot, which costs nothing when there is no
        new space.
      '';
    };

    tmpfsSize = lib.mkOption {
      type = lib.types.str;
      default = "50%";
      example = "1G";
      description = "Size limit of the /tmp tmpfs (tmpfs `size=`: bytes, with k/m/g, or % of RAM).";
    };
  };

  config = {
    fileSystems = {
      "/" = {
        device = "/dev/disk/by-label/${cfg.rootLabel}";
        fsType = "ext4";
        options = [ "ro" ];
        autoResize = false;
        noCheck = true;
      };

      "/boot" = {
        device = "/dev/disk/by-label/${espLabel}";
        fsType = "vfat";
        options = [
          "ro"
          "nofail"
          "umask=0077"
        ];
        noCheck = true;
      };

      "/var" = {
        device = "/dev/disk/by-label/${ids.varLabel}";
        fsType = "ext4";
        autoResize = cfg.growVar;
        neededForBoot = true;
      };

      "/home" = bindFromVar "/home";
      "/root" = bindFromVar "/root";
    };

    # tmpfiles would otherwise try to create /lib64 and /lib links on the read-only root (header).
    environment.stub-ld.enable = lib.mkDefault false;

    boot.tmp.useTmpfs = lib.mkDefault true;
    boot.tmp.tmpfsSize = lib.mkDefault cfg.tmpfsSize;

    # The bind sources must exist before /home and /root are mounted; `ivm create` makes them, this
    # keeps a /var made some other way bootable (modes from identity-files.json).
    systemd.services.ivm-var-dirs = {
      description = "Create the folders on /var that /home and /root are bound from";
      requiredBy = [
        "home.mount"
        "root.mount"
      ];
      before = [
        "home.mount"
        "root.mount"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      unitConfig = {
        DefaultDependencies = false;
        RequiresMountsFor = [ "/var" ];
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = lib.concatMapStrings (d: ''
        [ -d ${lib.escapeShellArg d.guestPath} ] || install -d -m ${d.mode} ${lib.escapeShellArg d.guestPath}
      '') ids.varDirs;
    };

    # The image build creates /bin/sh and /usr/bin/env (activation inside the build VM); at boot
    # the links are already right and the read-only root could not be written anyway.
    system.activationScripts.binsh = lib.mkForce ''
      if [ "$(readlink /bin/sh)" != ${lib.escapeShellArg config.environment.binsh} ]; then
        mkdir -p /bin
        chmod 0755 /bin
        ln -sfn ${lib.escapeShellArg config.environment.binsh} /bin/.sh.tmp
        mv /bin/.sh.tmp /bin/sh
      fi
    '';
    system.activationScripts.usrbinenv = lib.mkForce (
      if config.environment.usrbinenv != null then
        ''
          if [ "$(readlink /usr/bin/env)" != ${lib.escapeShellArg config.environment.usrbinenv} ]; then
            mkdir -p /usr/bin
            chmod 0755 /usr/bin
            ln -sfn ${lib.escapeShellArg config.environment.usrbinenv} /usr/bin/.env.tmp
            mv /usr/bin/.env.tmp /usr/bin/env
          fi
        ''
      else
        ""
    );
  };
}

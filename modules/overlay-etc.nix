# overlay-etc.nix: /etc on a read-only root.
#
# The choice, and why:
#
# 1. /etc cannot be set up by the classic activation script (setup-etc writes links into /etc on
#    the root filesystem, which is read-only here), and a writable /etc would be per-VM state on
#    the shared image. NixOS's /etc overlay builds /etc at build time instead: an erofs metadata
#    image plus a store folder, mounted as an overlay on /sysroot/etc by the initrd.
#    -> system.etc.overlay.enable = true.
#
# 2. The overlay needs systemd in the initrd (asserted in etc-activation.nix:
#    "`system.etc.overlay.enable` requires `boot.initrd.systemd.enable`").
#    -> boot.initrd.systemd.enable = true. Switchable systems also need a kernel >= 6.6 (asserted);
#    25.05's default kernel is newer.
#
# 3. Mutable or immutable? A mutable overlay keeps its upper and work dirs in
#    /sysroot/.rw-etc/{upper,work}, on the root filesystem (etc-activation.nix): impossible on a
#    read-only root, and the directories are not configurable. So the overlay is immutable
#    (mounted "ro").
#    -> system.etc.overlay.mutable = false.
#
# 4. An immutable /etc cannot be written by the perl user/group script, and etc-activation.nix
#    asserts "`!system.etc.overlay.mutable` requires `systemd.sysusers.enable` or
#    `services.userborn.enable`". systemd-sysusers only makes system users; users.nix needs normal
#    users (admin, user). userborn makes both and, with an immutable /etc, keeps passwd, group and
#    shadow in /var/lib/nixos (its passwordFilesLocation default) and links them from /etc
#    statically. /var is mounted in the initrd (filesystem.nix), before userborn.service runs in
#    sysinit. -> services.userborn.enable = true (users.nix also sets users.mutableUsers = false).
#
# 5. The known trap, NixOS/nixpkgs#523878: with an immutable overlay there is no /etc/machine-id,
#    systemd cannot create one (nor mount its transient one over it) on the read-only overlay, and
#    the system does not boot. Later nixpkgs declares an empty 0444 /etc/machine-id in
#    etc-activation.nix "as a target to bind mount an actually persistent machine-id onto"; 25.05
#    does not, so it is declared here (mkDefault, like upstream). identity.nix binds the VM's own
#    machine-id over it in the initrd, before systemd of the real root reads it; without
#    identity.nix systemd mounts a transient id over the empty file. systemd-machine-id-commit
#    keeps its upstream ConditionPathIsReadWrite=/etc and is skipped.
#
# 6. systemd-update-done.service stamps /etc/.updated and /var/.updated with the mtime of /usr;
#    units with ConditionNeedsUpdate= run until the stamp is there, among them
#    systemd-journal-catalog-update.service (ConditionNeedsUpdate=/var, rebuilds
#    /var/lib/systemd/catalog/database; journald.nix lists it among NixOS's upstream units).
#    Earlier versions masked systemd-update-done because it "cannot write the /etc stamp": then
#    /var/.updated never appeared and the catalog was rebuilt at every boot. It is NOT masked:
#    systemd's src/update-done/update-done.c treats EROFS as "file system is read-only", logged at
#    debug level, and goes on with /var (every version read, from the 2014 apply_timestamp() to
#    today's save_timestamp(): `if (r == -EROFS) log_debug...; else if (r < 0) return error`), and
#    src/shared/condition.c makes ConditionNeedsUpdate= false for a read-only directory
#    ("If the file system is read-only we shouldn't suggest an update"), so nothing waits for the
#    /etc stamp. The catalog is rebuilt on the first boot and again only when a new image has a
#    newer /usr.
#
# 7. The image build (image.nix) installs the boot loader with nixos-enter in a build VM, and
#    nixos-enter first runs the activation script (with IN_NIXOS_ENTER=1). Since
#    NixOS/nixpkgs#364239 (Dec 2024, in 25.05) the `etc` snippet mounts the /etc overlay there
#    when /etc is not a mount point yet. With this immutable overlay the boot loader installation
#    that follows would fail: systemd-boot-builder.py reads /etc/machine-id with
#    `readlines()[0]`, an IndexError on the empty placeholder of point 5, and `bootctl install`
#    writes /etc/kernel/entry-token, which a read-only /etc refuses. Whether the build VM's kernel
#    can mount erofs and overlay at all could not be checked here, so the snippet is skipped under
#    nixos-enter: /etc in the build VM is then always the root filesystem's own /etc (image.nix
#    puts os-release and NIXOS in it; the overlay hides it at boot). At boot the snippet runs as
#    before (in the initrd it does nothing); ivm never switches a running VM's configuration.
#
# Sources read (nixpkgs, NixOS 25.05 era, through the search tool): nixos/modules/system/etc/
# etc-activation.nix and etc.nix (overlay mounts, assertions, machine-id placeholder in later
# versions, the `etc` snippet's "no previous /etc mounted" branch), pkgs/by-name/ni/nixos-enter
# (IN_NIXOS_ENTER=1 for the activation, then systemd-tmpfiles), nixos/modules/system/boot/loader/
# systemd-boot/systemd-boot-builder.py (install_bootloader), nixos/modules/services/system/userborn.nix (passwordFilesLocation, assertions,
# environment.etc links, tmpfiles home directories), nixos/modules/system/boot/systemd/initrd.nix
# (initrd-nixos-activation runs prepare-root in /sysroot; the activation's exit status comes from
# the last command of prepare-root, so a failing snippet is logged, not fatal).
{ config, lib, ... }:
{
  config = {
    boot.initrd.systemd.enable = true;

    system.etc.overlay.enable = true;
    system.etc.overlay.mutable = false;

    services.userborn.enable = lib.mkDefault true;

    environment.etc."machine-id" = lib.mkDefault {
      text = "";
      mode = "0444";
    };

    # Point 6: systemd-update-done.service stays enabled (it stamps /var/.updated).

    # Point 7: no /etc overlay inside nixos-enter (the image build's boot loader installation).
    system.activationScripts.etc = lib.mkForce (
      lib.stringAfter [ "users" "groups" "specialfs" ] ''
        if [[ -z "''${IN_NIXOS_ENTER:-}" ]]; then
        ${config.system.build.etcActivationCommands}
        fi
      ''
    );
  };
}

# dns-identity.nix: /etc/resolv.conf from the VM's identity when it has one, else the
# systemd-resolved stub.
#
# Placeholder + bind mount: the image's /etc/resolv.conf is a regular file (not resolved's usual
# symlink into /run, which could not be mounted over) holding `ivm.dns.fallback`, by default the
# stub resolver 127.0.0.53 of systemd-resolved, which gets its servers from DHCP
# (systemd-networkd, base.nix). When /var/identity has a resolv.conf (an optional file), a mount
# unit binds it over the placeholder, read-only, before name lookups start; systemd-resolved reads
# a foreign /etc/resolv.conf and uses its servers too. When the file is absent the mount's
# ConditionPathExists skips it.
#
# Checked in sources: nixos/modules/system/boot/resolved.nix (services.resolved.enable; it sets
# environment.etc."resolv.conf".source to /run/systemd/resolve/stub-resolv.conf, overridden here
# with mkForce), nixos/modules/config/resolvconf.nix (openresolv is off by default when
# environment.etc."resolv.conf" is defined), nixos/lib/systemd-unit-options.nix (systemd.mounts:
# what, where, type, options, unitConfig, wantedBy, before).
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  role = ids.roles.resolvConf;
  cfg = config.ivm.dns;
in
{
  imports = [
    ./overlay-etc.nix
    ./filesystem.nix
  ];

  options.ivm.dns = {
    fallback = lib.mkOption {
      type = lib.types.lines;
      default = ''
        # This VM has no resolv.conf identity file: systemd-resolved's stub resolver.
        nameserver 127.0.0.53
        options edns0 trust-ad
        search .
      '';
      description = ''
        Contents of /etc/resolv.conf in the image, used on VMs whose /var has no resolv.conf
        identity file. The default points at systemd-resolved's stub resolver, which gets DNS
        servers from DHCP. The same on every VM built from the image: no per-VM values here.
      '';
    };
  };

  config = {
    services.resolved.enable = lib.mkDefault true;

    environment.etc."resolv.conf" = lib.mkForce {
      text = cfg.fallback;
      mode = role.mode;
    };

    systemd.mounts = [
      {
        description = "resolv.conf from the VM's identity";
        what = role.path;
        where = "/etc/resolv.conf";
        type = "none";
        options = "bind,ro";
        wantedBy = [ "local-fs.target" ];
        before = [
          "local-fs.target"
          "systemd-resolved.service"
          "nss-lookup.target"
        ];
        unitConfig = {
          ConditionPathExists = role.path;
          RequiresMountsFor = [ ids.dir ];
        };
      }
    ];
  };
}

# web.nix: nginx serving /var/www on port 80, with a default page made on first boot
#
# A machine selects it with `ivm.profiles.web.enable = true;` (machines/web does).
#
# - nginx (services.nginx) with one default virtual host whose root is `ivm.profiles.web.root`
#   (/var/www), on the VM's /var disk: the content is per-VM data and survives upgrades, which
#   only replace the read-only root. nginx itself keeps its cache and logs in /var/cache/nginx
#   and /var/log/nginx (systemd's CacheDirectory/LogsDirectory in nixpkgs' unit), its
#   configuration in the store: nothing is written to / or /etc.
# - systemd-tmpfiles makes the folder (`d`, 0755 root) and copies a default index.html into it
#   (`C`: only when the file does not exist), at every boot: a VM answers from its first boot,
#   and a page you replace is never overwritten. Delete the file and the default comes back.
# - Port 80 is opened in the image's firewall (networking.firewall.allowedTCPPorts) unless
#   `openFirewall = false`, in which case the VM's tcp_ports identity file decides
#   (firewall-identity.nix).
#
# Checked in sources: nixos/modules/services/web-servers/nginx/default.nix (services.nginx.enable,
# virtualHosts; the unit's CacheDirectory=nginx and LogsDirectory=nginx) and vhost-options.nix
# (virtualHosts.<name>.root, a nullOr path; .default, "Makes this vhost the default"),
# tmpfiles.d(5) (`d`; `C`: copy "if the destination files or directories do not exist yet"),
# nixos/modules/system/boot/systemd/tmpfiles.nix (systemd.tmpfiles.rules),
# nixos/modules/services/networking/firewall.nix (allowedTCPPorts).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.ivm.profiles.web;

  defaultPage = pkgs.writeText "ivm-web-index.html" ''
    <!doctype html>
    <html lang="en">
    <head><meta charset="utf-8"><title>ivm web</title></head>
    <body>
    <h1>It works</h1>
    <p>This is the default page of an ivm VM with the web profile: ${cfg.root}/index.html on the
    VM's /var disk. Replace it; your pages survive upgrades.</p>
    </body>
    </html>
  '';
in
{
  options.ivm.profiles.web = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "nginx serving /var/www on port 80, with a default page made on first boot";
    };

    root = lib.mkOption {
      type = lib.types.strMatching "/var/[^[:space:]]+";
      default = "/var/www";
      description = ''
        The web root, a folder on the VM's /var disk (made at boot if missing, with a default
        index.html).
      '';
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Open TCP port 80 in the image's firewall. With `false`, list 80 in the VM's tcp_ports
        identity file instead.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    services.nginx = {
      enable = true;
      virtualHosts.ivm = {
        default = true;
        root = cfg.root;
      };
    };

    systemd.tmpfiles.rules = [
      "d ${cfg.root} 0755 root root -"
      "C ${cfg.root}/index.html 0644 root root - ${defaultPage}"
    ];

    networking.firewall.allowedTCPPorts = lib.mkIf cfg.openFirewall [ 80 ];
  };
}

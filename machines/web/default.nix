# Machine "web": every ivm module, as "default", plus the `web` profile (modules/profiles/web.nix):
# nginx serving /var/www on port 80, the folder and a default index.html made on the VM's /var
# disk at boot (pages you put there survive upgrades), port 80 opened in the image's firewall.
# The profile makes its image differ from "default"'s. What is per-VM (name, keys, extra ports
# such as tcp_ports) lives next to this file as identity files, not here.
{ ivmModules, ... }:
{
  imports = [ ivmModules.default ];
  ivm.profiles.web.enable = true;
}

# Machine "web": the same module selection as "default", hence the same base image. What makes it
# "web" is per-VM and lives next to this file: tcp_ports opens port 80 (firewall-identity.nix).
# Adding a web server here (say services.nginx) would make its image differ from "default".
{ ivmModules, ... }:
{
  imports = [ ivmModules.default ];
}

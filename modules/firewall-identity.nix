# firewall-identity.nix: the ports a VM opens come from its identity (tcp_ports, udp_ports), read
# when the firewall starts at boot.
#
# Both files are optional. One port (80) or range (8000-8010 or 8000:8010) per line; blank lines,
# surrounding blanks and #-comments are allowed. networking.firewall.extraCommands runs inside the
# firewall start script under `sh -e`, before the final reject rule (firewall-iptables.nix): one
# failing command would abort the whole firewall, so every line is validated first (1-65535,
# low <= high) and an invalid line is logged and skipped. The firewall unit is ordered after
# /var/identity is mounted (it is mounted in the initrd already; the ordering makes it explicit).
#
# Checked in sources: nixos/modules/services/networking/firewall-iptables.nix (extraCommands "only
# works with the iptables based firewall", the `ip46tables` helper, the nixos-fw and
# nixos-fw-accept chains, firewall.service with DefaultDependencies=false before network-pre.target).
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  inherit (ids.roles) tcpPorts udpPorts;
  cfg = config.ivm.firewall;
in
{
  imports = [ ./filesystem.nix ];

  options.ivm.firewall = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Open the TCP and UDP ports listed in the VM's identity files (tcp_ports, udp_ports) in the
        NixOS firewall at boot. Needs the iptables-based firewall.
      '';
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.networking.firewall.enable && !config.networking.nftables.enable;
        message = ''
          ivm.firewall.enable needs the iptables-based NixOS firewall
          (networking.firewall.enable = true, networking.nftables.enable = false): it opens the
          VM's ports through networking.firewall.extraCommands.
        '';
      }
    ];

    networking.firewall.extraCommands = ''
      # ivm: ports from the VM's identity files (firewall-identity.nix).
      ivm_open_ports() { # protocol file
        local proto="$1" file="$2" line lo hi port
        [ -r "$file" ] || return 0
        while IFS= read -r line || [ -n "$line" ]; do
          line="''${line%%#*}"
          line="''${line#"''${line%%[![:space:]]*}"}"
          line="''${line%"''${line##*[![:space:]]}"}"
          [ -n "$line" ] || continue
          if [[ "$line" =~ ^([0-9]{1,5})([-:]([0-9]{1,5}))?$ ]]; then
            lo=$((10#''${BASH_REMATCH[1]}))
            hi=$lo
            if [ -n "''${BASH_REMATCH[3]}" ]; then hi=$((10#''${BASH_REMATCH[3]})); fi
            if ((lo >= 1 && lo <= hi && hi <= 65535)); then
              if ((lo == hi)); then port="$lo"; else port="$lo:$hi"; fi
              ip46tables -A nixos-fw -p "$proto" --dport "$port" -j nixos-fw-accept
              echo "ivm: $file: opened $proto port $port"
              continue
            fi
          fi
          echo "ivm: $file: ignoring invalid line: $line" >&2
        done < "$file"
      }
      ivm_open_ports tcp ${lib.escapeShellArg tcpPorts.path}
      ivm_open_ports udp ${lib.escapeShellArg udpPorts.path}
    '';

    systemd.services.firewall.unitConfig.RequiresMountsFor = [ ids.dir ];
  };
}

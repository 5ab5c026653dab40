# block-private-networks.nix: No outbound traffic to private, link-local and host-local addresses except the VM's gateway and DNS
#
# A machine selects it with `ivm.profiles.block-private-networks.enable = true;`: for agent VMs
# and untrusted workloads, which may reach the internet but not the LAN, the host's other
# addresses or other VMs.
#
# Two parts, both in the iptables NixOS firewall (asserted, as firewall-identity.nix does):
#
# 1. Static rules, added by networking.firewall.extraCommands when the firewall starts
#    (firewall.service, before network-pre.target), in two chains of their own, both address
#    families (ip46tables), hooked first into OUTPUT (the VM's own traffic) and FORWARD (its
#    containers' and VMs', e.g. Docker's bridge):
#      ivm-private-out:  ESTABLISHED,RELATED -> RETURN (answers to connections the INPUT
#                        firewall let in, e.g. SSH from the LAN, still flow); -o lo -> RETURN;
#                        DHCP (udp 67; udp 547 for DHCPv6) and IPv6 neighbour discovery
#                        (ICMPv6 133-137) -> RETURN; then each blocked range -> ivm-private-deny
#      ivm-private-deny: the exemptions (-d ADDRESS -j RETURN), then REJECT
#    Blocked by default (`ipv4Ranges`, `ipv6Ranges`): 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16
#    (RFC 1918), 100.64.0.0/10 (shared address space, RFC 6598), 169.254.0.0/16 (link-local),
#    127.0.0.0/8 and 0.0.0.0/8 (host-local; loopback traffic itself goes out on lo and stays
#    allowed), fc00::/7 (unique local), fe80::/10 (link-local), ::1/128. The chains are made anew
#    at each firewall start (its reload too), and unhooked by extraStopCommands.
# 2. Exemptions for the VM's own gateway and DNS servers, read at boot: ivm-private-allow.service
#    runs after the firewall and network-online.target (and after systemd-resolved), reads the
#    default routes' gateways (`ip route show default`, IPv4 and IPv6) and the nameservers of
#    /etc/resolv.conf, of resolved's /run/systemd/resolve/resolv.conf and of `resolvectl dns`
#    (resolved's stub 127.0.0.53 in /etc/resolv.conf hides the real servers), and rewrites
#    ivm-private-deny: it inserts the new RETURN rules and a new REJECT at the top, then deletes
#    the old rules below them, so the chain never lacks its final REJECT. It is PartOf
#    firewall.service, so a firewall restart (which empties the exemptions) runs it again. A
#    gateway or DNS server that changes later (a new DHCP lease) needs
#    `systemctl restart ivm-private-allow`. Until it has run, DNS to a private server is
#    refused; traffic to public addresses never depends on it.
#
# Checked in sources: nixos/modules/services/networking/firewall-iptables.nix (extraCommands and
# extraStopCommands run in the start and stop scripts under `sh -e`, with the ip46tables helper
# of helpers.nix; the reload script runs extraStopCommands, then the start script;
# firewall.service: DefaultDependencies=false, before network-pre.target, path = the firewall
# package), nixos/modules/services/networking/firewall.nix (networking.firewall.package,
# networking.nftables.enable), nixos/modules/tasks/network-interfaces.nix
# (networking.enableIPv6), iptables-extensions(8) (REJECT in OUTPUT/FORWARD and chains called
# from them; conntrack --ctstate; icmp6 --icmpv6-type), systemd.unit(5) (PartOf=).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.ivm.profiles.block-private-networks;
  v6 = config.networking.enableIPv6;
  out = "ivm-private-out";
  deny = "ivm-private-deny";
  # IPv6 neighbour discovery: router solicitation/advertisement, neighbour
  # solicitation/advertisement, redirect (RFC 4861), to link-local neighbours such as the router.
  ndpTypes = [
    "133"
    "134"
    "135"
    "136"
    "137"
  ];
in
{
  options.ivm.profiles.block-private-networks = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "No outbound traffic to private, link-local and host-local addresses except the VM's gateway and DNS";
    };

    ipv4Ranges = lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "[0-9]{1,3}(\\.[0-9]{1,3}){3}/[0-9]{1,2}");
      default = [
        "10.0.0.0/8"
        "172.16.0.0/12"
        "192.168.0.0/16"
        "100.64.0.0/10"
        "169.254.0.0/16"
        "127.0.0.0/8"
        "0.0.0.0/8"
      ];
      description = "IPv4 destinations refused to new outbound connections (the VM's gateway and DNS servers excepted).";
    };

    ipv6Ranges = lib.mkOption {
      type = lib.types.listOf (lib.types.strMatching "[0-9A-Fa-f:]+/[0-9]{1,3}");
      default = [
        "fc00::/7"
        "fe80::/10"
        "::1/128"
      ];
      description = "IPv6 destinations refused to new outbound connections (the VM's gateway and DNS servers excepted).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = config.networking.firewall.enable && !config.networking.nftables.enable;
        message = ''
          ivm.profiles.block-private-networks needs the iptables-based NixOS firewall
          (networking.firewall.enable = true, networking.nftables.enable = false): its rules are
          added through networking.firewall.extraCommands.
        '';
      }
    ];

    networking.firewall.extraCommands = ''
      # ivm: no new outbound connections to private addresses (profile block-private-networks).
      ip46tables -D OUTPUT -j ${out} 2>/dev/null || true
      ip46tables -D FORWARD -j ${out} 2>/dev/null || true
      ip46tables -F ${out} 2>/dev/null || true
      ip46tables -X ${out} 2>/dev/null || true
      ip46tables -F ${deny} 2>/dev/null || true
      ip46tables -X ${deny} 2>/dev/null || true
      ip46tables -N ${deny}
      ip46tables -A ${deny} -j REJECT
      ip46tables -N ${out}
      ip46tables -A ${out} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN
      ip46tables -A ${out} -o lo -j RETURN
      iptables -w -A ${out} -p udp --dport 67 -j RETURN
      ${lib.optionalString v6 ''
        ip6tables -w -A ${out} -p udp --dport 547 -j RETURN
        ${lib.concatMapStrings (
          t: "ip6tables -w -A ${out} -p ipv6-icmp --icmpv6-type ${t} -j RETURN\n"
        ) ndpTypes}''}
      ${lib.concatMapStrings (r: "iptables -w -A ${out} -d ${r} -j ${deny}\n") cfg.ipv4Ranges}
      ${lib.optionalString v6 (
        lib.concatMapStrings (r: "ip6tables -w -A ${out} -d ${r} -j ${deny}\n") cfg.ipv6Ranges
      )}
      ip46tables -I OUTPUT 1 -j ${out}
      ip46tables -I FORWARD 1 -j ${out}
    '';

    networking.firewall.extraStopCommands = ''
      ip46tables -D OUTPUT -j ${out} 2>/dev/null || true
      ip46tables -D FORWARD -j ${out} 2>/dev/null || true
    '';

    systemd.services.ivm-private-allow = {
      description = "Let the VM reach its own gateway and DNS servers through block-private-networks";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "firewall.service"
        "network-online.target"
        "systemd-resolved.service"
      ];
      partOf = [ "firewall.service" ];
      path = [
        config.networking.firewall.package
        pkgs.iproute2
        config.systemd.package
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        v4=()
        v6=()
        add() { # a gateway or server as printed: may carry %zone, #name or an IPv4 :port
          local a="''${1%%#*}"
          a="''${a%%%*}"
          if [[ "$a" =~ ^([0-9]{1,3}(\.[0-9]{1,3}){3})(:[0-9]+)?$ ]]; then
            a="''${BASH_REMATCH[1]}"
            if [[ " ''${v4[*]} " != *" $a "* ]]; then v4+=("$a"); fi
          elif [[ "$a" == *:* && "$a" =~ ^[0-9A-Fa-f:.]+$ ]]; then
            if [[ " ''${v6[*]} " != *" $a "* ]]; then v6+=("$a"); fi
          fi
        }
        routes() {
          ip -4 route show default || true
          ${lib.optionalString v6 "ip -6 route show default || true"}
        }
        while read -r -a words; do
          if [ "''${words[0]:-}" != default ]; then continue; fi
          for ((i = 1; i + 1 < ''${#words[@]}; i++)); do
            if [ "''${words[i]}" = via ]; then add "''${words[i + 1]}"; fi
          done
        done < <(routes)
        for file in /etc/resolv.conf /run/systemd/resolve/resolv.conf; do
          if [ ! -r "$file" ]; then continue; fi
          while read -r key value _; do
            if [ "$key" = nameserver ] && [ -n "$value" ]; then add "$value"; fi
          done < "$file"
        done
        if command -v resolvectl >/dev/null; then
          for word in $(resolvectl dns 2>/dev/null || true); do add "$word"; done
        fi

        exempt() { # tool addresses...
          local tool="$1" old=0 pos=1 line a
          shift
          while read -r line; do
            if [[ "$line" == "-A "* ]]; then old=$((old + 1)); fi
          done < <("$tool" -w -S ${deny})
          for a in "$@"; do
            "$tool" -w -I ${deny} "$pos" -d "$a" -j RETURN
            pos=$((pos + 1))
          done
          "$tool" -w -I ${deny} "$pos" -j REJECT
          for ((i = 0; i < old; i++)); do
            "$tool" -w -D ${deny} "$((pos + 1))"
          done
        }
        exempt iptables "''${v4[@]}"
        ${lib.optionalString v6 ''exempt ip6tables "''${v6[@]}"''}
        echo "ivm: exempt from block-private-networks: ''${v4[*]} ${lib.optionalString v6 "\${v6[*]}"}"
      '';
    };
  };
}

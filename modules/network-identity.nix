# network-identity.nix: a static address from the VM's identity (network.conf) instead of DHCP.
#
# On a libvirt network a fixed address is a DHCP reservation (the CLI's `ipAddress`); on a host
# bridge the LAN's DHCP server is not ivm's, so the address, its prefix, the gateway and the DNS
# servers come in the optional identity file network.conf, which the CLI writes (or you do) and
# ivm-static-network.service turns into a systemd-networkd unit at boot:
#
#   /var/identity/network.conf                 /run/systemd/network/10-ivm-static.network
#   ADDRESS=192.168.1.50/24 2001:db8::50/64    [Match] Type=ether, Kind=!* (as NixOS's DHCP unit)
#   GATEWAY=192.168.1.1                        [Network] DHCP=no, Address=..., Gateway=..., DNS=...
#   DNS=192.168.1.1 9.9.9.9
#
# The format (docs/flake.md, "Static addresses"): one KEY=VALUE per line, blank lines and
# #-comments allowed; ADDRESS (required) is one or more addresses with a prefix length
# (IPv4 /0-32, IPv6 /0-128), GATEWAY and DNS (optional) one or more addresses, all separated by
# blanks; a key may be repeated (its values add up); no quotes. Anything else (an unknown key, a
# value that is not an address, no ADDRESS) fails the unit with the line named and writes
# nothing: the VM then gets its address by DHCP as without the file.
#
# The unit is written under /run (the immutable /etc cannot take it; systemd-networkd reads
# /etc/systemd/network, /run/systemd/network and its package's folder, and of all the .network
# files matching a link uses the first in lexical order of their names, whatever their folder):
# "10-ivm-static" sorts before NixOS's "99-ethernet-default-dhcp" and matches the same links, so
# it wins on every ethernet link, which on an ivm VM is its one virtio NIC. The service runs
# before systemd-networkd starts, after /var (mounted in the initrd).
#
# Checked in sources: nixos/modules/tasks/network-interfaces-systemd.nix (networking.useDHCP with
# networkd: "99-ethernet-default-dhcp" matching Type=ether and Kind=!*, DHCP=yes),
# systemd.network(5) (unit folders, lexical order, first match wins; Address=, Gateway=, DNS=,
# DHCP=), nixos/modules/system/boot/networkd.nix (systemd-networkd.service).
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  role = ids.roles.staticNetwork;
  cfg = config.ivm.network;
  unitDir = "/run/systemd/network";
  unitFile = "${unitDir}/10-ivm-static.network";
in
{
  imports = [ ./filesystem.nix ];

  options.ivm.network = {
    static.enable = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Apply the VM's static address from its identity file network.conf, when it has one
        (ivm-static-network.service writes ${unitFile} for systemd-networkd at boot). VMs
        without the file use DHCP.
      '';
    };
  };

  config = lib.mkIf cfg.static.enable {
    systemd.services.ivm-static-network = {
      description = "Static address from the VM's identity";
      wantedBy = [ "systemd-networkd.service" ];
      before = [
        "systemd-networkd.service"
        "network-pre.target"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      unitConfig = {
        DefaultDependencies = false;
        ConditionPathExists = role.path;
        RequiresMountsFor = [ ids.dir ];
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        conf=${lib.escapeShellArg role.path}
        addresses=()
        gateways=()
        servers=()
        bad=0
        fail() { # line-number message
          echo "<3>ivm: $conf:$1: $2"
          bad=1
        }
        is_ip() {
          local a="$1" o
          if [[ "$a" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]]; then
            for o in "''${BASH_REMATCH[@]:1}"; do
              if ((10#$o > 255)); then return 1; fi
            done
            return 0
          fi
          [[ "$a" == *:* && "$a" =~ ^[0-9A-Fa-f:.]+$ ]]
        }
        is_prefixed() {
          local a="''${1%/*}" p="''${1##*/}"
          if [[ "$1" != */* || ! "$p" =~ ^[0-9]{1,3}$ ]] || ! is_ip "$a"; then return 1; fi
          if [[ "$a" == *:* ]]; then ((10#$p <= 128)); else ((10#$p <= 32)); fi
        }
        n=0
        while IFS= read -r line || [ -n "$line" ]; do
          n=$((n + 1))
          line="''${line%%#*}"
          line="''${line#"''${line%%[![:space:]]*}"}"
          line="''${line%"''${line##*[![:space:]]}"}"
          if [ -z "$line" ]; then continue; fi
          if [[ ! "$line" =~ ^([A-Z]+)=(.*)$ ]]; then
            fail "$n" "not KEY=VALUE: $line"
            continue
          fi
          key="''${BASH_REMATCH[1]}"
          read -r -a words <<< "''${BASH_REMATCH[2]}"
          if [ "''${#words[@]}" -eq 0 ]; then
            fail "$n" "$key has no value"
            continue
          fi
          for w in "''${words[@]}"; do
            case "$key" in
              ADDRESS) if is_prefixed "$w"; then addresses+=("$w"); else fail "$n" "not an address with a prefix length: $w"; fi ;;
              GATEWAY) if is_ip "$w"; then gateways+=("$w"); else fail "$n" "not an address: $w"; fi ;;
              DNS) if is_ip "$w"; then servers+=("$w"); else fail "$n" "not an address: $w"; fi ;;
              *) fail "$n" "unknown key $key (ADDRESS, GATEWAY, DNS)"; break ;;
            esac
          done
        done < "$conf"
        if [ "''${#addresses[@]}" -eq 0 ] && [ "$bad" = 0 ]; then fail "$n" "no ADDRESS"; fi
        if [ "$bad" != 0 ]; then
          rm -f ${unitFile}
          echo "<3>ivm: $conf not applied: the network is configured by DHCP"
          exit 1
        fi
        mkdir -p ${unitDir}
        {
          echo "# Written at boot by ivm-static-network.service from $conf."
          echo "[Match]"
          echo "Type=ether"
          echo "Kind=!*"
          echo
          echo "[Network]"
          echo "DHCP=no"
          for a in "''${addresses[@]}"; do echo "Address=$a"; done
          for g in "''${gateways[@]}"; do echo "Gateway=$g"; done
          for s in "''${servers[@]}"; do echo "DNS=$s"; done
        } > ${unitFile}.tmp
        chmod 0644 ${unitFile}.tmp
        mv ${unitFile}.tmp ${unitFile}
        echo "ivm: static address ''${addresses[*]} from $conf"
      '';
    };
  };
}

# hosts-identity.nix: extra /etc/hosts lines from the VM's identity.
#
# Placeholder + bind mount: /etc/hosts in the image is NixOS's usual hosts file (localhost lines,
# networking.hosts / extraHosts: the same for every VM), made a regular file instead of a link
# into the store so that it can be mounted over. When /var/identity has a hosts file (optional),
# ivm-hosts.service writes /run/ivm/hosts = the image's hosts file + the VM's lines, and a mount
# unit binds that over /etc/hosts, read-only, before local-fs.target and name lookups. Without the
# identity file both units are skipped by their conditions and /etc/hosts is the image's.
#
# The service has DefaultDependencies=false: it runs before local-fs.target, which the default
# After=sysinit.target would turn into an ordering cycle. It only needs /var (mounted in the
# initrd) and /run.
#
# Checked in sources: nixos/modules/config/networking.nix (environment.etc.hosts.source is the
# generated hosts file), nixos/modules/system/etc/etc.nix (a `mode` other than "symlink" makes a
# copied file), nixos/lib/systemd-unit-options.nix (systemd.mounts).
{ config, lib, ... }:
let
  ids = import ./identity-files.nix;
  role = ids.roles.hosts;
  runtimeDir = "/run/ivm";
  runtimeHosts = "${runtimeDir}/hosts";
  imageHosts = config.environment.etc.hosts.source;
in
{
  imports = [
    ./overlay-etc.nix
    ./filesystem.nix
  ];

  config = {
    environment.etc.hosts.mode = role.mode;

    systemd.services.ivm-hosts = {
      description = "Add the VM's extra /etc/hosts lines";
      before = [
        "etc-hosts.mount"
        "local-fs.target"
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
        install -d -m 0755 ${runtimeDir}
        {
          cat ${imageHosts}
          echo
          echo "# from ${role.path}"
          cat ${lib.escapeShellArg role.path}
          echo
        } > ${runtimeHosts}.tmp
        chmod ${role.mode} ${runtimeHosts}.tmp
        mv ${runtimeHosts}.tmp ${runtimeHosts}
      '';
    };

    systemd.mounts = [
      {
        description = "/etc/hosts with the VM's extra lines";
        what = runtimeHosts;
        where = "/etc/hosts";
        type = "none";
        options = "bind,ro";
        requires = [ "ivm-hosts.service" ];
        after = [ "ivm-hosts.service" ];
        wantedBy = [ "local-fs.target" ];
        before = [
          "local-fs.target"
          "nss-lookup.target"
        ];
        # Checked after ivm-hosts.service ran (or was skipped for want of the identity file).
        unitConfig.ConditionPathExists = runtimeHosts;
      }
    ];
  };
}

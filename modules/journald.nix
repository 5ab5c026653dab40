# journald.nix: the journal on the VM's /var disk (/var/log/journal) when, and only when, the VM
# runs with its own machine-id; otherwise it stays volatile, in /run/log/journal.
#
# Why: journald keeps each machine's journal in /var/log/journal/<machine-id>/. identity.nix binds
# the VM's /var/identity/machine-id over /etc/machine-id in the initrd; without that file (or if
# the bind failed) systemd mounts a new random machine-id at every boot, and a persistent journal
# would start a new folder under /var/log/journal each time, which journald's size limits count
# per folder: old ones would pile up forever.
#
# How: the image's journald.conf says Storage=volatile. ivm-journal-storage.service runs after
# journald has started in the real root and before systemd-journal-flush.service (which moves
# /run/log/journal to /var once Storage is persistent). If /etc/machine-id holds the same id as
# the identity file (the bind is in place; a transient id would differ), it writes the drop-in
# /run/systemd/journald.conf.d/ivm-persistent.conf with Storage=persistent and restarts journald
# so that it reads it; the flush then puts this boot's journal, the initrd's included, into
# /var/log/journal/<the VM's id>. Otherwise it writes nothing and says why: the journal stays in
# /run. A drop-in under /run and not a switch in /etc, because /etc is the immutable overlay
# (overlay-etc.nix) and the decision is per boot. Failing safe: if the unit does not run, the
# journal is volatile.
#
# Alternatives not taken: Storage=auto with /var/log/journal created only when the id is bound
# would still write a random-id folder once /var/log/journal exists from an earlier boot;
# journald's configuration cannot be changed without a restart (nixpkgs' journald.nix itself
# restarts systemd-journald.service when journald.conf changes, restartTriggers).
#
# Checked in sources: nixos/modules/system/boot/systemd/journald.nix (services.journald.storage,
# an enum with "volatile"; extraConfig; journald.conf written to /etc/systemd/journald.conf;
# systemd-journal-flush.service and systemd-journal-catalog-update.service among the upstream
# units), journald.conf(5) (drop-ins in /run/systemd/journald.conf.d/ override journald.conf;
# Storage=persistent creates /var/log/journal), systemd-journald.service(8) (flush moves
# /run/log/journal to /var/log/journal).
{
  config,
  lib,
  ...
}:
let
  ids = import ./identity-files.nix;
  inherit (ids.roles) machineId;
  cfg = config.ivm.journald;
  dropInDir = "/run/systemd/journald.conf.d";
in
{
  imports = [ ./filesystem.nix ];

  options.ivm.journald = {
    systemMaxUse = lib.mkOption {
      type = lib.types.strMatching "[0-9]+[KMGT]?";
      default = "1G";
      example = "500M";
      description = ''
        Most disk space the persistent journal may take on /var (journald.conf `SystemMaxUse=`).
      '';
    };

    persistent = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        Keep the journal on /var (/var/log/journal/<machine-id>) when the VM runs with its own
        machine-id (the identity file bound over /etc/machine-id): ivm-journal-storage.service
        switches journald to Storage=persistent at boot through a drop-in under /run. With
        `false`, or without the VM's machine-id, the journal is volatile (/run/log/journal).
      '';
    };
  };

  config = {
    services.journald.storage = lib.mkDefault "volatile";
    services.journald.extraConfig = ''
      SystemMaxUse=${cfg.systemMaxUse}
    '';

    systemd.services.ivm-journal-storage = lib.mkIf cfg.persistent {
      description = "Keep the journal on /var when the VM has its own machine-id";
      wantedBy = [ "sysinit.target" ];
      after = [
        "systemd-journald.service"
        "systemd-remount-fs.service"
      ];
      before = [
        "systemd-journal-flush.service"
        "sysinit.target"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      path = [ config.systemd.package ];
      unitConfig = {
        DefaultDependencies = false;
        ConditionPathExists = machineId.path;
        RequiresMountsFor = [ ids.dir ];
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        own=
        bound=
        if [ -r ${lib.escapeShellArg machineId.path} ]; then own=$(< ${lib.escapeShellArg machineId.path}); fi
        if [ -r /etc/machine-id ]; then bound=$(< /etc/machine-id); fi
        if [ -n "$own" ] && [ "$own" = "$bound" ]; then
          mkdir -p ${dropInDir}
          printf '[Journal]\nStorage=persistent\n' > ${dropInDir}/ivm-persistent.conf.tmp
          mv ${dropInDir}/ivm-persistent.conf.tmp ${dropInDir}/ivm-persistent.conf
          echo "ivm: /etc/machine-id is the VM's own: persistent journal in /var/log/journal/$own"
          systemctl restart systemd-journald.service
        else
          echo "<4>ivm: /etc/machine-id is not the one in ${machineId.path} (a transient id?): the journal stays volatile, in /run/log/journal"
        fi
      '';
    };
  };
}

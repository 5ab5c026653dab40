# The per-VM identity layout, read from identity-files.json (the file the CLI reads too).
#
# Not a NixOS module: a plain expression the identity modules import
# (`ids = import ./identity-files.nix;`) and the tests evaluate
# (`nix eval --json --file modules/identity-files.nix used`).
#
# The modules never spell an identity file name or /var/identity themselves: they use
# `ids.roles.<role>`, and this file is the one place that says which JSON entry plays which role.
# A role whose file is missing from the JSON fails evaluation (see `file` below), so a rename in
# identity-files.json cannot silently leave a module reading a file nobody writes.
let
  data = builtins.fromJSON (builtins.readFile ../identity-files.json);

  byName = builtins.listToAttrs (
    map (f: {
      name = f.name;
      value = f;
    }) data.files
  );

  # The JSON entry `name`, with its guest path and a boolean for "may be absent on a VM".
  file =
    name:
    let
      entry = byName.${name} or (throw "identity-files.json lists no file named \"${name}\"");
    in
    entry
    // {
      path = "${data.guestIdentityDir}/${entry.name}";
      optional = entry.kind == "optional";
    };

  roles = {
    # identity.nix: bound over /etc/machine-id and /etc/hostname in the initrd.
    machineId = file "machine-id";
    hostname = file "hostname";
    # ssh-identity.nix: sshd's host key (and its public half, checked by identity.nix).
    sshHostKey = file "ssh_host_ed25519_key";
    sshHostKeyPub = file "ssh_host_ed25519_key.pub";
    # dns-identity.nix: bound over /etc/resolv.conf when present.
    resolvConf = file "resolv.conf";
    # hosts-identity.nix: appended to /etc/hosts when present.
    hosts = file "hosts";
    # firewall-identity.nix: ports opened at boot.
    tcpPorts = file "tcp_ports";
    udpPorts = file "udp_ports";
    # users.nix: sshd reads these at login time.
    adminAuthorizedKeys = file "admin_authorized_keys";
    userAuthorizedKeys = file "user_authorized_keys";
    # network-identity.nix: a static address, turned into a systemd-networkd unit at boot.
    staticNetwork = file "network.conf";
    # profiles/ca-trust.nix: merged with the image's CA bundle at boot.
    caCerts = file "ca-certs.pem";
    # profiles/console-login.nix: admin's password hash, read by userborn at boot.
    adminPasswordHash = file "admin_password_hash";
  };

  # A folder of the /var filesystem (a path under varIdentityDir) as the guest sees it.
  guestPathOf =
    path:
    let
      prefix = data.varIdentityDir;
      n = builtins.stringLength prefix;
    in
    if builtins.substring 0 n path == prefix then
      data.guestIdentityDir + builtins.substring n (builtins.stringLength path - n) path
    else
      throw "identity-files.json: ${path} is not under varIdentityDir (${prefix})";

  # secrets.nix: the free-form per-VM secrets, one file per secret.
  secretsDir =
    let
      entry = data.secretsDir or (throw "identity-files.json has no secretsDir");
    in
    {
      inherit (entry) path mode fileMode;
      guestPath = guestPathOf entry.path;
    };
in
{
  inherit data roles;

  # Guest path of the identity folder (/var/identity).
  dir = data.guestIdentityDir;
  # Label of the whole-disk ext4 filesystem mounted at /var.
  varLabel = data.varLabel;
  # Folders on the /var filesystem, with guest paths (/var + path).
  varDirs = map (d: d // { guestPath = "/var${d.path}"; }) data.varDirs;
  # Every identity file, with guest path (for the boot-time check in identity.nix).
  files = map (f: file f.name) data.files;
  # The secrets folder: path on the /var filesystem, guestPath (/var/identity/secrets), the
  # folder's mode and its files' mode.
  inherit secretsDir;

  # What the modules use, as plain data, for the tests: role -> { name, mode, kind, path }.
  used = builtins.mapAttrs (_: f: {
    inherit (f)
      name
      mode
      kind
      path
      ;
  }) roles;
}

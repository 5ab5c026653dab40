# ca-trust.nix: The CA certificates of the identity file ca-certs.pem trusted system-wide, merged at boot
#
# A machine selects it with `ivm.profiles.ca-trust.enable = true;`; each VM may then have an
# optional identity file ca-certs.pem (PEM certificates: a company CA, a TLS-intercepting proxy's
# CA) that every program trusts besides the usual ones.
#
# NixOS builds its CA bundle at build time (security/ca.nix: pkgs.cacert with
# security.pki.{certificateFiles, certificates, caCertificateBlacklist}) and links it from /etc;
# on this immutable /etc nothing can be added at runtime, and the bundle must not hold per-VM
# certificates anyway (one image, many VMs). So:
#
# - ivm-ca-bundle.service, early (before sysinit.target, once /var is there: it is mounted in the
#   initrd), writes /run/ivm/ca-bundle.crt = the image's bundle (the very file ca.nix would link,
#   computed from the same options) + the VM's ca-certs.pem when it exists and holds a
#   "BEGIN CERTIFICATE" block (otherwise the file is ignored, with a warning in the journal).
#   The bundle is written under a temporary name and renamed: readers never see half of it.
# - The paths ca.nix makes, /etc/ssl/certs/ca-certificates.crt (NixOS's canonical one, also
#   Debian's, Arch's and Go's), /etc/ssl/certs/ca-bundle.crt (old NixOS) and
#   /etc/pki/tls/certs/ca-bundle.crt (Fedora's), are links to /run/ivm/ca-bundle.crt instead
#   (mkForce over ca.nix's `source`; mode "direct-symlink", as userborn.nix links /etc/passwd to
#   /var/lib/nixos: the /etc overlay stores the link itself, whose target exists once the unit
#   ran). nixpkgs' OpenSSL looks at /etc/ssl/certs/ca-certificates.crt by default
#   (use-etc-ssl-certs.patch) and at $NIX_SSL_CERT_FILE (nix-ssl-cert-file.patch); GnuTLS, curl,
#   Go, Python's certifi as patched in nixpkgs read the same file or those variables, which
#   login shells get (environment.variables SSL_CERT_FILE and NIX_SSL_CERT_FILE, pointing at the
#   canonical path). Services started by systemd do not get those variables and use the default
#   path, which is the link.
# - Not covered: /etc/ssl/trust-source (p11-kit's trust anchors, used by programs that ask
#   p11-kit rather than read a bundle) stays the image's; Java keystores; programs that ship
#   their own bundle.
#
# Checked in sources: nixos/modules/security/ca.nix (the cacert override, ca-bundle.crt or, with
# security.pki.useCompatibleBundle, ca-no-trust-rules-bundle.crt; environment.etc entries
# "ssl/certs/ca-certificates.crt", "ssl/certs/ca-bundle.crt", "pki/tls/certs/ca-bundle.crt",
# "ssl/trust-source"), nixos/modules/system/etc/etc.nix (environment.etc.<name>.source, type path:
# an absolute path, not necessarily in the store; mode), nixos/modules/system/etc/
# build-composefs-dump.py (modes "symlink" and "direct-symlink" become a symlink to `source` in
# the overlay's image), nixos/modules/services/system/userborn.nix (direct-symlink to a runtime
# path on an immutable /etc), pkgs/development/libraries/openssl/default.nix
# (use-etc-ssl-certs.patch, nix-ssl-cert-file.patch).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  ids = import ../identity-files.nix;
  role = ids.roles.caCerts;
  cfg = config.ivm.profiles.ca-trust;
  pki = config.security.pki;

  # The bundle security/ca.nix links to /etc/ssl/certs/ca-certificates.crt, from the same options
  # (useCompatibleBundle is read with a fallback: older nixpkgs has no such option).
  cacertPackage = pkgs.cacert.override {
    blacklist = pki.caCertificateBlacklist;
    extraCertificateFiles = pki.certificateFiles;
    extraCertificateStrings = pki.certificates;
  };
  bundleName =
    if pki.useCompatibleBundle or false then "ca-no-trust-rules-bundle.crt" else "ca-bundle.crt";
  imageBundle = "${cacertPackage}/etc/ssl/certs/${bundleName}";

  runtimeDir = "/run/ivm";
  runtimeBundle = "${runtimeDir}/ca-bundle.crt";
  bundleLinks = [
    "ssl/certs/ca-certificates.crt"
    "ssl/certs/ca-bundle.crt"
    "pki/tls/certs/ca-bundle.crt"
  ];
in
{
  options.ivm.profiles.ca-trust = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "The CA certificates of the identity file ca-certs.pem trusted system-wide, merged at boot";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.etc = builtins.listToAttrs (
      map (name: {
        inherit name;
        value = {
          source = lib.mkForce runtimeBundle;
          mode = "direct-symlink";
        };
      }) bundleLinks
    );

    environment.variables = {
      SSL_CERT_FILE = lib.mkDefault "/etc/ssl/certs/ca-certificates.crt";
      NIX_SSL_CERT_FILE = lib.mkDefault "/etc/ssl/certs/ca-certificates.crt";
    };

    systemd.services.ivm-ca-bundle = {
      description = "CA bundle of the image and the VM's ca-certs.pem";
      wantedBy = [ "sysinit.target" ];
      before = [
        "sysinit.target"
        "shutdown.target"
      ];
      conflicts = [ "shutdown.target" ];
      path = [ pkgs.coreutils ];
      unitConfig = {
        DefaultDependencies = false;
        RequiresMountsFor = [ ids.dir ];
      };
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
      };
      script = ''
        install -d -m 0755 ${runtimeDir}
        tmp=${runtimeDir}/.ca-bundle.crt.tmp
        cat ${imageBundle} > "$tmp"
        extra=${lib.escapeShellArg role.path}
        if [ -e "$extra" ]; then
          if [[ "$(< "$extra")" == *"-----BEGIN CERTIFICATE-----"* ]]; then
            { echo; echo "# $extra"; cat "$extra"; echo; } >> "$tmp"
            echo "ivm: trusting the certificates of $extra"
          else
            echo "<4>ivm: $extra holds no PEM certificate (-----BEGIN CERTIFICATE-----): ignored"
          fi
        fi
        chmod 0444 "$tmp"
        mv "$tmp" ${runtimeBundle}
      '';
    };
  };
}

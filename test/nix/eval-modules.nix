# Evaluates each of ivm's NixOS modules (modules/*.nix, not the identity-files.nix helper, and the
# profiles in modules/profiles/*.nix) with a stand-in lib, pkgs and config, without nixpkgs:
#
#   nix eval --json --file test/nix/eval-modules.nix report
#   nix eval --json --file test/nix/eval-modules.nix --apply 'e: e.evalWith { ... }'
#
# This is not the NixOS module system: each module function is called, its option declarations
# are read back for their defaults, and its `config` is returned with mkIf (when the condition
# holds), mkForce/mkDefault/mkOverride and mkAfter unwrapped. Enough for the tests to check what
# the modules set (paths, modes, unit scripts, rules) and to catch a reference to something that
# does not exist, which parsing alone cannot: `config` holds only the options ivm's modules
# declare plus the few nixpkgs values listed in baseConfig, `pkgs` only the packages listed
# below, `lib` only what mock-lib.nix implements.
let
  lib = import ./mock-lib.nix;
  modulesDir = ../../modules;
  profilesDir = modulesDir + "/profiles";

  nixFiles =
    dir: exclude:
    builtins.filter (name: builtins.match ".*\\.nix" name != null && !(builtins.elem name exclude)) (
      builtins.attrNames (builtins.readDir dir)
    );
  moduleFiles = nixFiles modulesDir [ "identity-files.nix" ];
  profileFiles = nixFiles profilesDir [ ];
  baseName = file: builtins.head (builtins.match "(.*)\\.nix" file);
  moduleNames = map baseName moduleFiles;
  profileNames = map baseName profileFiles;

  loaded =
    dir: files:
    builtins.listToAttrs (
      map (file: {
        name = baseName file;
        value = import (dir + "/${file}");
      }) files
    );
  modules = loaded modulesDir moduleFiles;
  profiles = loaded profilesDir profileFiles;

  # Stand-in packages: a name and an outPath, nothing else. Only packages that exist in nixpkgs
  # under these attribute names are listed; a module using another one fails to evaluate.
  stubPackage = name: {
    inherit name;
    outPath = "/stub/${name}";
  };
  pkgs = {
    stdenv.hostPlatform.isAarch64 = false;
    emptyDirectory = stubPackage "empty-directory";
    # trivial-builders: the file's name and its text, so the tests can read what a module writes.
    writeText = name: text: stubPackage name // { inherit text; };
    # pkgs/data/misc/cacert: `override` records its arguments.
    cacert = stubPackage "cacert" // {
      override = args: stubPackage "cacert-overridden" // { overrideArgs = args; };
    };
  }
  // builtins.listToAttrs (
    map
      (name: {
        inherit name;
        value = stubPackage name;
      })
      [
        "coreutils"
        "iproute2"
        "gnumake"
        "gcc"
        "pkg-config"
        "curl"
        "jq"
        "ripgrep"
      ]
  );

  # What the modules read from the configuration besides their own options, as nixpkgs' modules
  # would have set it for an ivm machine.
  baseConfig = {
    environment = {
      binsh = "/stub/bash/bin/sh";
      usrbinenv = "/stub/coreutils/bin/env";
      etc.hosts.source = "/stub/etc-hosts";
      etc."os-release".source = "/stub/etc-os-release";
    };
    systemd.package = stubPackage "systemd";
    system.build.etcActivationCommands = "stub-etc-activation";
    networking = {
      # identity.nix's mkOverride 900 "" wins over the option's default.
      hostName = "";
      enableIPv6 = true;
      firewall.enable = true;
      firewall.package = stubPackage "iptables";
      nftables.enable = false;
    };
    services.openssh.enable = true;
    services.userborn.enable = true;
    security.pki = {
      caCertificateBlacklist = [ ];
      certificateFiles = [ ];
      certificates = [ ];
    };
  };

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";

  # Attribute sets merged recursively, b's leaves replacing a's (lib.recursiveUpdate).
  recursiveUpdate =
    a: b:
    a
    // builtins.mapAttrs (
      name: value:
      if builtins.isAttrs value && builtins.isAttrs (a.${name} or null) then
        recursiveUpdate a.${name} value
      else
        value
    ) b;

  call =
    overrides: m:
    let
      config = recursiveUpdate (baseConfig // { ivm = optionDefaults.ivm; }) overrides;
    in
    if builtins.isFunction m then
      m {
        inherit lib config pkgs;
        modulesPath = ./stub-nixos/modules;
      }
    else
      m;

  # Option declarations do not depend on the configuration's values, only their defaults may.
  declaredBy = m: (call { } m).options or { };

  recursiveMerge =
    a: b:
    if builtins.isAttrs a && builtins.isAttrs b && !(isOption a) && !(isOption b) then
      a
      // builtins.mapAttrs (name: value: if a ? ${name} then recursiveMerge a.${name} value else value) b
    else
      throw "option declared twice";

  declarations = builtins.foldl' recursiveMerge { } (
    map declaredBy (builtins.attrValues modules ++ builtins.attrValues profiles)
  );

  collapse = v: if isOption v then v.default else builtins.mapAttrs (_: collapse) v;
  optionDefaults = collapse declarations;

  # "a.b.c" of every option whose default does not pass its type's check.
  badDefaults =
    let
      go =
        prefix: v:
        if isOption v then
          (if v ? type && !(v.type.check v.default) then [ prefix ] else [ ])
        else
          builtins.concatLists (builtins.attrValues (builtins.mapAttrs (n: go "${prefix}.${n}") v));
    in
    go "options" declarations;

  # "a.b.c" of every option without a description or a type.
  undocumented =
    let
      go =
        prefix: v:
        if isOption v then
          (if !(v ? type) || (v.description or "") == "" then [ prefix ] else [ ])
        else
          builtins.concatLists (builtins.attrValues (builtins.mapAttrs (n: go "${prefix}.${n}") v));
    in
    go "options" declarations;

  strip =
    v:
    if builtins.isAttrs v then
      (
        if (v._type or null) == "if" then
          (if v.condition then strip v.content else null)
        else if builtins.elem (v._type or null) [
          "override"
          "order"
        ] then
          strip v.content
        else if (v._type or null) == "merge" then
          map strip v.contents
        else if v ? outPath then
          v.outPath
        else
          builtins.mapAttrs (_: strip) v
      )
    else if builtins.isList v then
      map strip v
    else if builtins.isPath v then
      toString v
    else
      v;

  configOf = overrides: m: strip ((call overrides m).config or { });
  importsOf = m: map toString ((call { } m).imports or [ ]);

  # Every module's and profile's configuration with `overrides` merged into the stand-in config.
  evalWith = overrides: {
    config = builtins.mapAttrs (_: configOf overrides) modules;
    profiles = builtins.mapAttrs (_: configOf overrides) profiles;
  };
in
{
  inherit evalWith;

  report = {
    modules = moduleNames;
    profiles = profileNames;
    options = optionDefaults;
    inherit badDefaults undocumented;
    config = builtins.mapAttrs (_: configOf { }) modules;
    imports =
      builtins.mapAttrs (_: importsOf) modules
      // builtins.listToAttrs (
        map (name: {
          name = "profiles/${name}";
          value = importsOf profiles.${name};
        }) profileNames
      );
    # Each profile with its own enable option set, the others at their defaults (off).
    profileConfig = builtins.mapAttrs (
      name: m: configOf { ivm.profiles.${name}.enable = true; } m
    ) profiles;
    # Each profile with every option at its default: a profile that is not selected sets nothing.
    profileConfigOff = builtins.mapAttrs (_: configOf { }) profiles;
    profileDescriptions = builtins.mapAttrs (_: p: p.enable.description) declarations.ivm.profiles;
  };
}

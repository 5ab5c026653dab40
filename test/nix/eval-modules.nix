# Evaluates each of ivm's NixOS modules (modules/*.nix, not the identity-files.nix helper) with a
# stand-in lib, pkgs and config, without nixpkgs: `nix eval --json --file test/nix/eval-modules.nix`.
#
# This is not the NixOS module system: each module function is called once, its option
# declarations are read back for their defaults, and its `config` is returned with mkIf (when the
# condition holds), mkForce/mkDefault and mkAfter unwrapped. Enough for the tests to check what
# the modules set (paths, modes, unit scripts) and to catch a reference to something that does
# not exist, which parsing alone cannot.
let
  lib = import ./mock-lib.nix;
  modulesDir = ../../modules;

  isModuleFile =
    name: builtins.match ".*\\.nix" name != null && name != "identity-files.nix";
  moduleFiles = builtins.filter isModuleFile (builtins.attrNames (builtins.readDir modulesDir));
  moduleName = file: builtins.head (builtins.match "(.*)\\.nix" file);

  stubPackage = name: {
    inherit name;
    outPath = "/stub/${name}";
  };

  pkgs = {
    stdenv.hostPlatform.isAarch64 = false;
    coreutils = stubPackage "coreutils";
    emptyDirectory = stubPackage "empty-directory";
    writeText = name: _text: stubPackage name;
  };

  # What the modules read from the configuration besides their own options.
  baseConfig = {
    environment = {
      binsh = "/stub/bash/bin/sh";
      usrbinenv = "/stub/coreutils/bin/env";
      etc.hosts.source = "/stub/etc-hosts";
      etc."os-release".source = "/stub/etc-os-release";
    };
    systemd.package = stubPackage "systemd";
    system.build.etcActivationCommands = "stub-etc-activation";
    networking.firewall.enable = true;
    networking.nftables.enable = false;
    services.openssh.enable = true;
  };

  config = baseConfig // {
    ivm = optionDefaults.ivm;
  };

  args = {
    inherit lib config pkgs;
    modulesPath = ./stub-nixos/modules;
  };

  results = builtins.listToAttrs (
    map (file: {
      name = moduleName file;
      value =
        let
          m = import (modulesDir + "/${file}");
        in
        if builtins.isFunction m then m args else m;
    }) moduleFiles
  );

  isOption = v: builtins.isAttrs v && (v._type or null) == "option";

  recursiveMerge =
    a: b:
    if builtins.isAttrs a && builtins.isAttrs b && !(isOption a) && !(isOption b) then
      a
      // builtins.mapAttrs (name: value: if a ? ${name} then recursiveMerge a.${name} value else value) b
    else
      throw "option declared twice";

  declarations = builtins.foldl' recursiveMerge { } (
    map (r: r.options or { }) (builtins.attrValues results)
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
in
{
  modules = map moduleName moduleFiles;
  options = optionDefaults;
  inherit badDefaults;
  config = builtins.mapAttrs (_: r: strip (r.config or { })) results;
  imports = builtins.mapAttrs (_: r: map toString (r.imports or [ ])) results;
}

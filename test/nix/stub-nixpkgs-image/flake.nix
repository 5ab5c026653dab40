# Test stand-in for nixpkgs whose machine images really build (test/nix-build.e2e.test.ts): the
# real `nix build` of the project's flake, offline. `lib.nixosSystem` returns a configuration whose
# only attribute is `config.system.build.ivmImage`, a real derivation giving the layout of the real
# image's output: a folder with one `ivm.qcow2` and `nix-support/`. The qcow2 is a copy of the
# stand-in UEFI image (test/support/build-standin-image.sh), which the test puts beside this file
# as `standin.qcow2` (it is not in git: it is built from the host's Debian packages).
#
# The builder is the host's /bin/sh with /bin/mkdir and /bin/cp: it builds only with
# `sandbox = false`. The derivation depends on what the flake passes to nixosSystem for a machine
# (its system and the module files its default.nix selects), never on the machine's name, so two
# machines that select the same modules get the same store path, as with the real nixpkgs.
{
  description = "stand-in nixpkgs that builds a stand-in ivm image (tests only)";

  outputs =
    { self }:
    let
      nixosSystem =
        args:
        let
          modules = args.modules or [ ];
          paths = builtins.filter builtins.isPath modules;
          platforms = map (m: m.nixpkgs.hostPlatform) (
            builtins.filter (m: builtins.isAttrs m && m ? nixpkgs.hostPlatform) modules
          );
          system =
            if builtins.length platforms == 1 then
              builtins.head platforms
            else
              throw "stub-nixpkgs-image: expected one nixpkgs.hostPlatform module, got ${toString (builtins.length platforms)}";
          # The machine's default.nix, called with the special arguments (ivmModules), as the
          # module system would; only its `imports` matter here.
          callModule =
            m:
            let
              f = import m;
            in
            if builtins.isFunction f then
              f (
                (args.specialArgs or { })
                // {
                  config = { };
                  lib = { };
                  pkgs = { };
                  options = { };
                }
              )
            else
              f;
          fileNames = m: if builtins.isAttrs m && m ? imports then builtins.concatMap fileNames m.imports else [ (baseNameOf m) ];
          selection = builtins.sort builtins.lessThan (
            builtins.concatMap (p: builtins.concatMap fileNames ((callModule p).imports or [ ])) paths
          );
        in
        {
          config.system.build.ivmImage = derivation {
            name = "ivm-image-standin";
            inherit system;
            builder = "/bin/sh";
            args = [
              "-c"
              "/bin/mkdir -p $out/nix-support && /bin/cp $image $out/ivm.qcow2"
            ];
            image = "${self}/standin.qcow2";
            modules = builtins.concatStringsSep " " selection;
          };
        };
    in
    {
      lib = {
        inherit nixosSystem;
        licenses.mit = {
          spdxId = "MIT";
        };
      };
    };
}

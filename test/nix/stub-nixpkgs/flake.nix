# Test stand-in for nixpkgs (used with `--override-input nixpkgs path:...`): just enough for ivm's
# flake plumbing to evaluate offline. Nothing here builds; "packages" are plain attribute sets
# that record how they were called, so the tests can look at the arguments.
{
  description = "stand-in nixpkgs for ivm's flake tests";

  outputs =
    { self }:
    let
      stubPackage = name: {
        stub = "package";
        inherit name;
        outPath = "/stub/${name}";
      };

      pkgsFor =
        system:
        let
          npmConfigHook = stubPackage "import-npm-lock-config-hook";
        in
        {
          inherit system;
          nodejs = stubPackage "nodejs";
          just = stubPackage "just";
          qemu = stubPackage "qemu";
          libguestfs = stubPackage "libguestfs";
          libvirt = stubPackage "libvirt";
          OVMF = stubPackage "OVMF";
          e2fsprogs = stubPackage "e2fsprogs";
          openssh = stubPackage "openssh";

          mkShell =
            args:
            stubPackage "shell"
            // {
              packageNames = map (p: p.name) (args.packages or [ ]);
            };

          importNpmLock = {
            inherit npmConfigHook;
            __functor =
              _: args:
              let
                packages = args.packageLock.packages;
                keys = builtins.filter (k: k != "") (builtins.attrNames packages);
              in
              stubPackage "npm-deps"
              // {
                argNames = builtins.attrNames args;
                packageName = args.package.name;
                lockedPackages = builtins.length keys;
                withoutResolved = builtins.filter (k: !(packages.${k} ? resolved)) keys;
                resolved = builtins.mapAttrs (_: p: p.resolved or null) packages;
              };
          };

          buildNpmPackage =
            args:
            stubPackage "${args.pname}-${args.version}"
            // {
              argNames = builtins.attrNames args;
              inherit (args) pname version npmDeps;
              dontNpmBuild = args.dontNpmBuild or false;
              usesImportNpmLockHook = (args.npmConfigHook or null) == npmConfigHook;
              meta = {
                inherit (args.meta) mainProgram platforms;
              };
            };
        };

      # Records what the flake passes; the machine's default.nix is called with the special
      # arguments so that the tests see its module selection.
      nixosSystem =
        args:
        let
          modules = args.modules or [ ];
          paths = builtins.filter builtins.isPath modules;
          attrsets = builtins.filter builtins.isAttrs modules;
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
        in
        {
          stub = "nixosSystem";
          argNames = builtins.attrNames args;
          specialArgNames = builtins.attrNames (args.specialArgs or { });
          modulePaths = map toString paths;
          hostPlatforms = map (m: m.nixpkgs.hostPlatform) (builtins.filter (m: m ? nixpkgs.hostPlatform) attrsets);
          otherModules = builtins.length (builtins.filter (m: !(builtins.isPath m) && !(m ? nixpkgs.hostPlatform)) modules);
          selections = map (m: (callModule m).imports or [ ]) paths;
          # What each machine module sets besides its imports (e.g. ivm.profiles.<name>.enable).
          settings = map (m: builtins.removeAttrs (callModule m) [ "imports" ]) paths;
          config.system.build.ivmImage = stubPackage "ivm-image";
        };
    in
    {
      lib = {
        inherit nixosSystem;
        licenses.mit = {
          spdxId = "MIT";
        };
      };

      legacyPackages = {
        x86_64-linux = pkgsFor "x86_64-linux";
        aarch64-linux = pkgsFor "aarch64-linux";
      };
    };
}

{
  description = "ivm: immutable NixOS virtual machines on libvirt (one read-only base image per module selection, per-VM identity and /var)";

  # Pinned in flake.lock (nixos-25.05).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      # The plumbing below uses builtins only (plus nixpkgs.lib.nixosSystem and the packages), so
      # that it can be evaluated against a stand-in nixpkgs in the tests (test/flake.test.ts).
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems =
        f:
        builtins.listToAttrs (
          map (system: {
            name = system;
            value = f system;
          }) systems
        );

      # NixOS modules: nixosModules.<name> imports modules/<name>.nix. (modules/identity-files.nix
      # is a helper the identity modules import, not a module; the profiles are below.) Each output is an attribute set
      # importing the file by path rather than the path itself, which `nix flake check` accepts in
      # every Nix version, while the module system still counts a file imported twice (by
      # nixosModules.default and by another module's `imports`) once.
      moduleNames = [
        "base"
        "filesystem"
        "boot"
        "overlay-etc"
        "journald"
        "image"
        "identity"
        "dns-identity"
        "hosts-identity"
        "ssh-identity"
        "firewall-identity"
        "users"
        "guest-agent"
        "network-identity"
        "secrets"
      ];
      modulePath = name: ./modules + "/${name}.nix";
      modules = builtins.listToAttrs (
        map (name: {
          inherit name;
          value = {
            imports = [ (modulePath name) ];
          };
        }) moduleNames
      );

      # Profiles: modules/profiles/<name>.nix, one per entry of modules/profiles/catalogue.json
      # (the list the CLI reads too). Each declares ivm.profiles.<name>.enable, off by default; a
      # machine selects a profile by setting it. nixosModules.profiles imports them all (so do
      # nixosModules.default); ivmProfiles.<name> is one of them, for other flakes.
      profileCatalogue = (builtins.fromJSON (builtins.readFile ./modules/profiles/catalogue.json)).profiles;
      profileNames = map (p: p.name) profileCatalogue;
      profilePath =
        name:
        let
          file = ./modules/profiles + "/${name}.nix";
        in
        if builtins.pathExists file then
          file
        else
          throw "modules/profiles/catalogue.json lists the profile ${name}, but modules/profiles/${name}.nix is missing";
      profiles = builtins.listToAttrs (
        map (name: {
          inherit name;
          value = {
            imports = [ (profilePath name) ];
          };
        }) profileNames
      );

      # Machines: every folder of machines/ holding a meta.nix. meta.nix gives `system` (its other
      # keys are the CLI's and are ignored here); default.nix selects the modules and profiles
      # (ivm.profiles.<name>.enable). Nothing about the machine (not even its name) goes into
      # its configuration: machines that select the same modules and profiles for the same
      # system have the same image.
      machinesDir = ./machines;
      machineEntries = builtins.readDir machinesDir;
      machineNames = builtins.filter (
        name:
        machineEntries.${name} == "directory" && builtins.pathExists (machinesDir + "/${name}/meta.nix")
      ) (builtins.attrNames machineEntries);

      machineSystem =
        name:
        let
          meta = import (machinesDir + "/${name}/meta.nix");
          system = meta.system or (throw "machines/${name}/meta.nix: `system` is missing");
        in
        if builtins.elem system systems then
          system
        else
          throw "machines/${name}/meta.nix: `system` must be one of ${builtins.concatStringsSep ", " systems}, not ${builtins.toJSON system}";

      machineModule =
        name:
        let
          file = machinesDir + "/${name}/default.nix";
        in
        if builtins.pathExists file then
          file
        else
          throw "machines/${name}/default.nix is missing (it selects the machine's modules)";

      mkMachine =
        name:
        nixpkgs.lib.nixosSystem {
          specialArgs = {
            ivmModules = self.nixosModules;
          };
          modules = [
            (machineModule name)
            { nixpkgs.hostPlatform = machineSystem name; }
          ];
        };

      # The CLI: `npm run build` compiles src/ into dist/ (tsc, a dev dependency), which bin/ivm.js
      # runs. npm dependencies come from package-lock.json through importNpmLock,
      # which fetches each package with the `integrity` hash the lock file records: no hash is
      # written here. This lock file leaves out the `resolved` URLs, which importNpmLock needs
      # to fetch; they are filled in with the npm registry's tarball URL for the package's name
      # and version (registry.npmjs.org/<name>/-/<basename>-<version>.tgz).
      # The Justfile's `npx just` (bin/just: a local package linked in by a `file:` dev dependency,
      # with the just binary npm serves) is no part of the CLI: it is left out of the package.json
      # and the lock the package is built from.
      sourcePackageJson = builtins.fromJSON (builtins.readFile ./package.json);
      sourceLock = builtins.fromJSON (builtins.readFile ./package-lock.json);
      justShim = "ivm-just";
      justShimKeys =
        let
          target = sourceLock.packages."bin/just" or { };
          deps = builtins.attrNames (target.optionalDependencies or { } // target.dependencies or { });
        in
        [
          "node_modules/${justShim}"
          "bin/just"
        ]
        ++ map (name: "node_modules/${name}") deps;
      withoutJustShim = p: p // { devDependencies = builtins.removeAttrs (p.devDependencies or { }) [ justShim ]; };
      packageJson = withoutJustShim sourcePackageJson;
      packageLock = sourceLock // {
        packages = builtins.removeAttrs sourceLock.packages justShimKeys // {
          "" = withoutJustShim sourceLock.packages."";
        };
      };

      lastOf = list: builtins.elemAt list (builtins.length list - 1);
      lockName =
        key: entry: entry.name or (lastOf (builtins.filter builtins.isString (builtins.split "node_modules/" key)));
      registryTarball =
        key: entry:
        let
          name = lockName key entry;
          base = lastOf (builtins.filter builtins.isString (builtins.split "/" name));
        in
        "https://registry.npmjs.org/${name}/-/${base}-${entry.version}.tgz";
      completeLock = packageLock // {
        packages = builtins.mapAttrs (
          key: entry:
          if key == "" || entry ? resolved || (entry.link or false) || !(entry ? version) then
            entry
          else
            entry // { resolved = registryTarball key entry; }
        ) packageLock.packages;
      };

      # Only what the CLI needs at runtime goes into its source.
      cliSource =
        let
          root = toString ./.;
          rootLength = builtins.stringLength root;
          topLevel = path: builtins.head (builtins.split "/" (builtins.substring (rootLength + 1) 4096 (toString path)));
          excluded = [
            ".git"
            ".ci"
            ".cache"
            ".ivm"
            "bench"
            "docs"
            "libvirt"
            "machines"
            "modules"
            "node_modules"
            "dist"
            "test"
            "flake.nix"
            "flake.lock"
            "Justfile"
          ];
        in
        builtins.path {
          path = ./.;
          name = "ivm-source";
          filter = path: _type: !(builtins.elem (topLevel path) excluded) && builtins.substring 0 6 (topLevel path) != "result";
        };

      mkIvm =
        pkgs:
        pkgs.buildNpmPackage {
          pname = packageJson.name;
          version = packageJson.version;
          src = cliSource;
          npmDeps = pkgs.importNpmLock {
            npmRoot = cliSource;
            package = packageJson;
            packageLock = completeLock;
          };
          npmConfigHook = pkgs.importNpmLock.npmConfigHook;
          # The build phase runs `npm run build`; packing (which lists the files to install, from
          # package.json's `files`) must not run the prepare script (the build) again.
          npmPackFlags = [ "--ignore-scripts" ];
          meta = {
            description = packageJson.description;
            mainProgram = "ivm";
            license = nixpkgs.lib.licenses.mit;
            platforms = systems;
          };
        };
    in
    {
      nixosModules = modules // {
        profiles = {
          imports = map profilePath profileNames;
        };
        default = {
          imports = map modulePath moduleNames ++ map profilePath profileNames;
        };
      };

      # One module per profile (imported by nixosModules.profiles and .default already).
      ivmProfiles = profiles;

      # { <profile> = "<one-line description>"; }, from modules/profiles/catalogue.json.
      ivmProfileCatalogue = builtins.listToAttrs (
        map (p: {
          inherit (p) name;
          value = p.description;
        }) profileCatalogue
      );

      nixosConfigurations = builtins.listToAttrs (
        map (name: {
          inherit name;
          value = mkMachine name;
        }) machineNames
      );

      packages = forAllSystems (
        system:
        let
          ivm = mkIvm nixpkgs.legacyPackages.${system};
        in
        {
          inherit ivm;
          default = ivm;
        }
      );

      apps = forAllSystems (system: {
        default = {
          type = "app";
          program = "${self.packages.${system}.ivm}/bin/ivm";
          meta.description = "The ivm CLI";
        };
      });

      devShells = forAllSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
        in
        {
          default = pkgs.mkShell {
            packages = [
              pkgs.nodejs
              pkgs.just
              pkgs.qemu
              pkgs.libguestfs
              pkgs.libvirt
              pkgs.OVMF
              pkgs.e2fsprogs
              pkgs.openssh
            ];
          };
        }
      );

      # The identity layout as the modules see it (modules/identity-files.nix), for tools and tests.
      lib.identityFiles = import ./modules/identity-files.nix;
    };
}

# Test stand-in for nixpkgs' nixos/lib/make-disk-image.nix: records its arguments.
args:
{
  stub = "make-disk-image";
  args = builtins.removeAttrs args [
    "lib"
    "config"
    "pkgs"
  ];
}

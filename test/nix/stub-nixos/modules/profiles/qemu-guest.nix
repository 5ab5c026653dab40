# Test stand-in for nixpkgs' nixos/modules/profiles/qemu-guest.nix (base.nix imports it).
{ }

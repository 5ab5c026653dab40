# dev.nix: A development machine: git, vim, make, gcc, pkg-config and direnv; dotfiles in /home on /var
#
# A machine selects it with `ivm.profiles.dev.enable = true;`.
#
# - git (programs.git), vim as the default editor (programs.vim.defaultEditor, EDITOR), direnv
#   hooked into the shells (programs.direnv), and the build tools of `ivm.profiles.dev.packages`
#   (make, gcc, pkg-config, and a few everyday tools). All of it is in the image.
# - Nix is off on ivm VMs (base.nix), so nix-direnv (`use flake`, `use nix`) is turned off by
#   default; plain .envrc files work.
# - Everything a user changes lives in their home: dotfiles (~/.gitconfig, ~/.vimrc,
#   ~/.config/direnv, direnv's allow list in ~/.local/share/direnv) are in /home, bound from
#   /var/home (filesystem.nix), so they survive upgrades. System-wide settings (/etc/gitconfig,
#   /etc/direnv) are the image's and read-only.
#
# Checked in sources: nixos/modules/programs/git.nix (programs.git.enable, package),
# nixos/modules/programs/vim.nix (programs.vim.defaultEditor: installs vim, sets EDITOR),
# nixos/modules/programs/direnv.nix (programs.direnv.enable, nix-direnv.enable, default true;
# /etc/direnv/direnvrc sources ~/.config/direnv/direnvrc or ~/.direnvrc),
# nixos/modules/config/system-path.nix (environment.systemPackages).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  cfg = config.ivm.profiles.dev;
in
{
  options.ivm.profiles.dev = {
    enable = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "A development machine: git, vim, make, gcc, pkg-config and direnv; dotfiles in /home on /var";
    };

    packages = lib.mkOption {
      type = lib.types.listOf lib.types.package;
      default = [
        pkgs.gnumake
        pkgs.gcc
        pkgs.pkg-config
        pkgs.curl
        pkgs.jq
        pkgs.ripgrep
      ];
      defaultText = "with pkgs; [ gnumake gcc pkg-config curl jq ripgrep ]";
      description = "Build tools and other packages of the development machine, besides git, vim and direnv.";
    };
  };

  config = lib.mkIf cfg.enable {
    programs.git.enable = true;
    programs.vim.defaultEditor = lib.mkDefault true;
    programs.direnv.enable = true;
    programs.direnv.nix-direnv.enable = lib.mkDefault false;

    environment.systemPackages = cfg.packages;
  };
}

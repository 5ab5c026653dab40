# Test stand-in for nixpkgs' `lib`, with only what ivm's modules use. Option declarations and the
# mk* properties become plain data that eval-modules.nix can read back.
rec {
  mkOption = attrs: { _type = "option"; } // attrs;

  types = {
    bool = {
      name = "bool";
      check = builtins.isBool;
    };
    int = {
      name = "int";
      check = builtins.isInt;
    };
    str = {
      name = "str";
      check = builtins.isString;
    };
    lines = {
      name = "lines";
      check = builtins.isString;
    };
    strMatching = pattern: {
      name = "strMatching ${pattern}";
      check = s: builtins.isString s && builtins.match pattern s != null;
    };
  };

  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkDefault = mkOverride 1000;
  mkForce = mkOverride 50;
  mkAfter = content: {
    _type = "order";
    priority = 1500;
    inherit content;
  };

  concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);

  # As nixpkgs (lib/strings-with-deps.nix): an activation snippet with its dependencies.
  stringAfter = deps: text: { inherit deps text; };

  # As nixpkgs: safe strings stay bare, others are single-quoted.
  escapeShellArg =
    arg:
    let
      string = toString arg;
    in
    if builtins.match "[[:alnum:],._+:@%/-]+" string == null then
      "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else
      string;
}

# Test stand-in for nixpkgs' `lib`, with only what ivm's modules use. Option declarations and the
# mk* properties become plain data that eval-modules.nix can read back.
#
# Every function here behaves as its nixpkgs namesake for the arguments the modules pass (a
# type's `check` accepts exactly the values the real type accepts, the list and string helpers
# give the same results): a stand-in that accepted anything would prove nothing. A module that
# uses a lib function or type missing here fails to evaluate, which is the point: add it here,
# with the real semantics, after reading it in nixpkgs' lib/.
rec {
  mkOption = attrs: { _type = "option"; } // attrs;

  types = rec {
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
    # lib/types.nix: anything string-like (a string, a path, a derivation) whose string starts
    # with "/".
    path = {
      name = "path";
      check =
        x:
        (builtins.isPath x || builtins.isString x || (builtins.isAttrs x && x ? outPath))
        && builtins.substring 0 1 (toString x) == "/";
    };
    # lib/types.nix `package`: a derivation (here: the stand-in packages, attribute sets with an
    # outPath) or a store path.
    package = {
      name = "package";
      check = x: (builtins.isAttrs x && x ? outPath) || (builtins.isString x && builtins.substring 0 11 x == "/nix/store/");
    };
    listOf = elemType: {
      name = "listOf ${elemType.name}";
      check = v: builtins.isList v && builtins.all elemType.check v;
    };
    attrsOf = elemType: {
      name = "attrsOf ${elemType.name}";
      check = v: builtins.isAttrs v && builtins.all elemType.check (builtins.attrValues v);
    };
    nullOr = elemType: {
      name = "nullOr ${elemType.name}";
      check = v: v == null || elemType.check v;
    };
    ints = {
      between = lowest: highest: {
        name = "intBetween ${toString lowest} ${toString highest}";
        check = v: builtins.isInt v && v >= lowest && v <= highest;
      };
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

  # lib/lists.nix and lib/trivial.nix
  optional = cond: elem: if cond then [ elem ] else [ ];
  optionals = cond: elems: if cond then elems else [ ];
  imap0 = f: list: builtins.genList (n: f n (builtins.elemAt list n)) (builtins.length list);

  # lib/strings.nix
  optionalString = cond: string: if cond then string else "";
  concatStrings = builtins.concatStringsSep "";
  concatStringsSep = builtins.concatStringsSep;
  concatMapStrings = f: list: builtins.concatStringsSep "" (map f list);
  concatMapStringsSep = sep: f: list: builtins.concatStringsSep sep (map f list);

  # lib/attrsets.nix
  mapAttrs = builtins.mapAttrs;
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (builtins.attrNames attrs);

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
  escapeShellArgs = list: builtins.concatStringsSep " " (map escapeShellArg list);
}

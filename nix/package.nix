# The publisher, built from pyproject.toml with nixpkgs' Python tooling
# (pkgs/development/interpreters/python/mk-python-derivation.nix: pyproject = true,
# build-system, dependencies; pytestCheckHook runs the tests that need no network).
{
  lib,
  python3Packages,
  nix,
  qemu-utils,
  azcopy ? null,
  # nixpkgs' Azurite (pkgs/by-name/az/azurite: azurite-blob among its programs), for
  # `--emulator` and `emulator serve`; null where a nixpkgs has none.
  azurite ? null,
}:
let
  root = ../.;
  pyproject = builtins.fromTOML (builtins.readFile (root + "/pyproject.toml"));
  # "azure-mgmt-compute>=33" -> python3Packages.azure-mgmt-compute: the dependencies have
  # one home, pyproject.toml, and the runtime-deps check holds the package to its floors.
  packageName =
    requirement:
    lib.toLower (
      builtins.replaceStrings [ "_" "." ] [ "-" "-" ] (
        builtins.head (builtins.match "[[:space:]]*([A-Za-z0-9_.-]+).*" requirement)
      )
    );
  # The version lives in one place: nixos_azure_publish/__init__.py (hatch reads it too).
  version = builtins.head (
    builtins.match ''.*__version__ = "([^"]+)".*'' (
      builtins.readFile (root + "/nixos_azure_publish/__init__.py")
    )
  );
in
python3Packages.buildPythonApplication {
  pname = "nixos-azure-publish";
  inherit version;
  pyproject = true;

  src = lib.fileset.toSource {
    inherit root;
    fileset = lib.fileset.unions [
      (root + "/pyproject.toml")
      (root + "/README.md")
      (root + "/nixos_azure_publish")
      (root + "/tests")
    ];
  };

  build-system = [ python3Packages.hatchling ];
  dependencies = map (requirement: python3Packages.${packageName requirement}) pyproject.project.dependencies;

  nativeCheckInputs = with python3Packages; [
    pytestCheckHook
    pytest-timeout
  ];
  # The integration tests drive real Nix, qemu-img and Azurite on loopback: not in a build.
  disabledTestPaths = [ "tests/integration" ];
  # The state directory defaults to $HOME/.local/state; the build's HOME is not writable.
  preCheck = ''
    export HOME="$(mktemp -d)"
  '';
  pythonImportsCheck = [ "nixos_azure_publish" ];

  # nix evaluates and builds targets, qemu-img converts images; azcopy (the optional
  # upload backend) and Azurite (the emulator's blob service) come last on PATH, so that
  # a user's own win, and the emulator needs no npm.
  makeWrapperArgs =
    [
      "--prefix"
      "PATH"
      ":"
      (lib.makeBinPath [
        nix
        qemu-utils
      ])
    ]
    ++ lib.optionals (azcopy != null || azurite != null) [
      "--suffix"
      "PATH"
      ":"
      (lib.makeBinPath (builtins.filter (p: p != null) [ azcopy azurite ]))
    ];

  passthru = { inherit azcopy azurite; };

  meta = {
    description = "Publish a NixOS configuration as a replicated Azure Compute Gallery image";
    license = lib.licenses.mit;
    mainProgram = "nixos-azure-publish";
    platforms = lib.platforms.linux;
  };
}

# The flake's `lib` output: declare publish targets and the app that publishes them.
#
# Only builtins are used here, so that downstream flakes can call these
# functions for any system and the tests can evaluate them without nixpkgs.
let
  inherit (builtins)
    attrNames
    elem
    filter
    isAttrs
    isString
    removeAttrs
    replaceStrings
    throw
    toJSON
    ;

  # Nix system -> Azure `architecture`.
  architectures = {
    "x86_64-linux" = "x64";
    "aarch64-linux" = "Arm64";
  };

  # virtualisation.azureImage.vmGeneration (nixpkgs) -> Azure `hyperVGeneration`.
  # v1 is a legacy BIOS partition table, v2 is EFI.
  generations = {
    v1 = "V1";
    v2 = "V2";
  };

  # Security types that exist only for UEFI (Hyper-V generation 2) images.
  gen2OnlySecurity = [
    "TrustedLaunchSupported"
    "TrustedLaunch"
    "TrustedLaunchAndConfidentialVmSupported"
    "ConfidentialVMSupported"
    "ConfidentialVM"
  ];

  fail = msg: throw "nixos-azure-publish lib.mkTarget: ${msg}";

  show = toJSON;

  dropNulls = attrs: removeAttrs attrs (filter (n: attrs.${n} == null) (attrNames attrs));

  # Keep `given` unless it is null; refuse it when it differs from what the
  # configuration says (`derived`), naming both options.
  agree =
    option: given: derived: source:
    if given == null then
      derived
    else if derived == null || given == derived then
      given
    else
      fail "${option} = ${show given} contradicts the NixOS configuration, where ${source} gives ${show derived}; leave ${option} out (it is derived) or change the configuration";

  shellQuote = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # What the configuration says about its Azure image. Works with the module
  # imported (nixos/modules/virtualisation/azure-image.nix: system.build.azureImage)
  # and without it on nixpkgs 25.05+ (nixos/modules/image/images.nix:
  # system.build.images.azure, whose passthru.config is the image's own configuration).
  fromConfiguration =
    nixos:
    let
      build = nixos.config.system.build;
      image =
        if build ? azureImage then
          build.azureImage
        else if build ? images && build.images ? azure then
          build.images.azure
        else
          fail "the NixOS configuration builds no Azure image: import nixpkgs' nixos/modules/virtualisation/azure-image.nix (or this flake's nixosModules.azure-image), or use nixpkgs 25.05+ (system.build.images.azure)";
      config = if build ? azureImage then nixos.config else image.passthru.config or image.config;
      vmGeneration = config.virtualisation.azureImage.vmGeneration or "v1";
      # The configuration's own pkgs first: `nixosSystem { system = ...; }` leaves
      # nixpkgs.hostPlatform unset, and reading it then throws (which `or` does not catch).
      system =
        nixos.pkgs.stdenv.hostPlatform.system or config.nixpkgs.hostPlatform.system
          or (fail "cannot tell the system of the NixOS configuration; pass system = \"x86_64-linux\"");
    in
    {
      inherit image system;
      vmGenerationOption = "virtualisation.azureImage.vmGeneration = ${show vmGeneration}";
      hyperVGeneration =
        generations.${vmGeneration}
          or (fail "virtualisation.azureImage.vmGeneration = ${show vmGeneration} is not v1 or v2");
      release = config.system.nixos.release or null;
      label = config.system.nixos.label or null;
    };
in
{
  /**
    Declare a publish target: the attribute set that `nix eval --json` turns into
    the target `nixos-azure-publish publish --flake REF --target NAME` reads from
    `azurePublish.<NAME>`.

    What the image already knows is derived from the NixOS configuration, so the
    target cannot disagree with it: `hyperVGeneration` from
    `virtualisation.azureImage.vmGeneration`, `architecture` and `nixos.system`
    from the host platform, `nixos.release` and `nixos.label`, and `image` (the
    configuration's Azure image derivation). Settings that contradict the
    configuration, a Gen1 image with a Trusted Launch security type, or an Arm64
    image that is not Gen2 fail evaluation with a message naming the option.

    # Inputs

    `nixosConfiguration`
    : A NixOS system (`nixpkgs.lib.nixosSystem { ... }`) that builds an Azure image.
      Optional when `image` and `hyperVGeneration` are given instead.

    `image`
    : The image: a derivation whose output holds one `*.vhd`, or a path to a VHD.
      Defaults to the configuration's Azure image.

    `system`
    : The Nix system the image runs on (`x86_64-linux` or `aarch64-linux`), when
      there is no `nixosConfiguration`; sets `architecture` and `nixos.system`.

    Every other attribute is a target setting, with camelCase names as in
    `nixos-azure-publish config schema`: `name`, `resourceGroup`, `location`,
    `gallery`, `imageDefinition`, `version`, `tags`, `upload`, `smokeTest`, ...

    # Type

    ```
    mkTarget :: AttrSet -> AttrSet
    ```

    # Example

    ```nix
    azurePublish.default = nixos-azure-publish.lib.mkTarget {
      nixosConfiguration = self.nixosConfigurations.azure;
      name = "nixos-gen2";
      resourceGroup = "nixos-images";
      location = "westeurope";
      gallery.name = "nixos_images";
      imageDefinition = { name = "nixos-x64-gen2"; publisher = "example"; offer = "nixos"; sku = "gen2"; };
      version.targetRegions = [ "westeurope" "northeurope" ];
    };
    ```
  */
  mkTarget =
    {
      nixosConfiguration ? null,
      image ? null,
      system ? null,
      hyperVGeneration ? null,
      architecture ? null,
      nixos ? { },
      ...
    }@args:
    let
      settings = removeAttrs args [
        "nixosConfiguration"
        "system"
      ];
      derived =
        if nixosConfiguration != null then
          fromConfiguration nixosConfiguration
        else if image == null then
          fail "give nixosConfiguration, or image together with hyperVGeneration"
        else
          {
            inherit image system;
            hyperVGeneration =
              if hyperVGeneration != null then
                hyperVGeneration
              else
                fail "hyperVGeneration (\"V1\" or \"V2\") is required when there is no nixosConfiguration to derive it from";
            vmGenerationOption = "hyperVGeneration";
            release = null;
            label = null;
          };
      nixosSystem = agree "system" system derived.system "the host platform";
      arch =
        if nixosSystem == null then
          architecture
        else
          agree "architecture" architecture (
            architectures.${nixosSystem}
              or (fail "system ${show nixosSystem} has no Azure architecture; Azure runs x86_64-linux (x64) and aarch64-linux (Arm64)")
          ) "the host platform ${nixosSystem}";
      generation = agree "hyperVGeneration" hyperVGeneration derived.hyperVGeneration derived.vmGenerationOption;
      security = (args.imageDefinition or { }).securityType or null;
      target = settings // {
        image = if image != null then image else derived.image;
        hyperVGeneration = generation;
        architecture = arch;
        nixos = dropNulls {
          system = nixosSystem;
          release = agree "nixos.release" (nixos.release or null) derived.release "system.nixos.release";
          label = agree "nixos.label" (nixos.label or null) derived.label "system.nixos.label";
        };
      };
    in
    if !(elem generation [ "V1" "V2" ]) then
      fail "hyperVGeneration must be \"V1\" or \"V2\", not ${show generation}"
    else if arch == "Arm64" && generation != "V2" then
      fail "architecture = \"Arm64\" needs hyperVGeneration = \"V2\" (UEFI), but ${derived.vmGenerationOption} makes it ${show generation}; Arm64 VMs boot only Gen2 images, so set virtualisation.azureImage.vmGeneration = \"v2\""
    else if elem security gen2OnlySecurity && generation != "V2" then
      fail "imageDefinition.securityType = ${show security} needs a Gen2 (UEFI) image, but ${derived.vmGenerationOption} makes it ${show generation}; set virtualisation.azureImage.vmGeneration = \"v2\" or securityType = \"Standard\""
    else
      dropNulls target;

  /**
    An app that publishes a flake's target: `nix run .#publish` builds the image
    and publishes `azurePublish.<target>`; extra arguments pass through
    (`nix run .#publish -- --dry-run`).

    # Inputs

    `pkgs`
    : nixpkgs for the system the app runs on (only `writeShellScript` is used).

    `publisher`
    : The nixos-azure-publish package (`packages.<system>.default` of this flake).

    `flake`
    : The flake whose target is published: `self` (its source in the store, and
      its revision when known) or a flake reference string such as `"."`.

    `target`
    : The name under `azurePublish`; default `"default"`.

    # Type

    ```
    mkPublishApp :: AttrSet -> { type = "app"; program = String; }
    ```

    # Example

    ```nix
    apps.x86_64-linux.publish = nixos-azure-publish.lib.mkPublishApp {
      pkgs = nixpkgs.legacyPackages.x86_64-linux;
      publisher = nixos-azure-publish.packages.x86_64-linux.default;
      flake = self;
    };
    ```
  */
  mkPublishApp =
    {
      pkgs,
      publisher,
      flake,
      target ? "default",
    }:
    let
      ref = if isString flake then flake else "path:${flake.outPath}";
      revision = if isAttrs flake then flake.rev or flake.dirtyRev or null else null;
      script = pkgs.writeShellScript "nixos-azure-publish-${target}" ''
        ${
          if revision == null then
            ""
          else
            "export NIXOS_AZURE_PUBLISH_FLAKE_REVISION=${shellQuote revision}"
        }
        # The app's own target, unless the arguments pick targets themselves
        # (`nix run .#publish -- --target gen1 --target gen2`, or `-- --all-targets`).
        for arg in "$@"; do
          case "$arg" in
            --target | --target=* | --all-targets)
              exec ${publisher}/bin/nixos-azure-publish publish --flake ${shellQuote ref} "$@"
              ;;
          esac
        done
        exec ${publisher}/bin/nixos-azure-publish publish --flake ${shellQuote ref} --target ${shellQuote target} "$@"
      '';
    in
    {
      type = "app";
      program = "${script}";
    };
}

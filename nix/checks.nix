# `nix flake check`: the package (its unit tests run in checkPhase), azcopy, the
# lib's own rules, and every azurePublish target validated by the publisher's
# config model (as deploy-rs checks its nodes), without building any image.
{ self, pkgs }:
let
  inherit (pkgs.stdenv.hostPlatform) system;
  inherit (pkgs) lib;
  publisher = self.packages.${system}.default;

  validate =
    name: target:
    let
      # The image's store path is only a string here: checking must not build the image.
      json = pkgs.writeText "azurePublish-${name}.json" (
        builtins.unsafeDiscardStringContext (builtins.toJSON target)
      );
    in
    pkgs.runCommand "azurePublish-${name}-valid" { nativeBuildInputs = [ publisher ]; } ''
      nixos-azure-publish config check --config ${json} > "$out"
    '';

  image = {
    type = "derivation";
    outPath = "/nix/store/00000000000000000000000000000000-azure-image";
  };
  configuration = vmGeneration: hostSystem: {
    config = {
      system.build.azureImage = image;
      virtualisation.azureImage.vmGeneration = vmGeneration;
      nixpkgs.hostPlatform.system = hostSystem;
    };
  };
  fails = value: !(builtins.tryEval (builtins.deepSeq value value)).success;
  expectations = {
    "v2 gives V2" = (self.lib.mkTarget { nixosConfiguration = configuration "v2" "x86_64-linux"; }).hyperVGeneration == "V2";
    "aarch64 gives Arm64" = (self.lib.mkTarget { nixosConfiguration = configuration "v2" "aarch64-linux"; }).architecture == "Arm64";
    # nixosSystem { system = ...; } leaves nixpkgs.hostPlatform unset (reading it throws).
    "the system comes from the configuration's pkgs" =
      (self.lib.mkTarget {
        nixosConfiguration = {
          config = (configuration "v2" "x86_64-linux").config // {
            nixpkgs.hostPlatform = throw "nixpkgs.hostPlatform is used but not defined";
          };
          pkgs.stdenv.hostPlatform.system = "aarch64-linux";
        };
      }).architecture == "Arm64";
    "Gen1 with TrustedLaunch fails" = fails (self.lib.mkTarget {
      nixosConfiguration = configuration "v1" "x86_64-linux";
      imageDefinition.securityType = "TrustedLaunch";
    });
    "Arm64 Gen1 fails" = fails (self.lib.mkTarget { nixosConfiguration = configuration "v1" "aarch64-linux"; });
    "a contradicting hyperVGeneration fails" = fails (self.lib.mkTarget {
      nixosConfiguration = configuration "v2" "x86_64-linux";
      hyperVGeneration = "V1";
    });
  };
  broken = builtins.attrNames (lib.filterAttrs (_: ok: !ok) expectations);
in
lib.mapAttrs' (name: target: lib.nameValuePair "azurePublish-${name}" (validate name target)) self.azurePublish
// {
  package = publisher;
  inherit (self.packages.${system}) azcopy;
  lib =
    if broken == [ ] then
      pkgs.runCommand "lib-mkTarget" { } "touch $out"
    else
      throw "lib.mkTarget expectations broken: ${lib.concatStringsSep ", " broken}";
}

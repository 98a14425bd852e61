# The example publish target as a flake: `azurePublish.example` is what
# `nixos-azure-publish publish --flake ./examples/flake --target example` reads.
#
# It has no inputs, so it evaluates and builds offline. A real target passes a
# NixOS configuration that imports nixpkgs' Azure image module to
# `lib.mkTarget { nixosConfiguration = ...; }`; here a small stand-in image is
# built with the same qemu-img command nixpkgs uses (a fixed VHD of a raw disk),
# with the host's qemu-img, so the whole publish runs in seconds.
{
  description = "nixos-azure-publish example target (offline stand-in image)";

  outputs =
    { self }:
    let
      lib = import ../../nix/lib.nix;

      standInImage =
        system:
        builtins.derivation {
          name = "nixos-image-azure-example";
          inherit system;
          builder = "/bin/sh";
          args = [
            "-c"
            ''
              set -e
              mkdir -p "$out"
              printf 'NixOS example image for %s\n' "${system}" > raw.img
              truncate -s 32M raw.img
              qemu-img convert -f raw -O vpc -o subformat=fixed,force_size raw.img \
                "$out/nixos-image-azure-25.05-${system}.vhd"
            ''
          ];
          # The host's tools (Debian: coreutils, qemu-utils); builds are not sandboxed here.
          PATH = "/usr/local/bin:/usr/bin:/bin";
        };

      # What lib.mkTarget reads from a NixOS configuration that builds an Azure image.
      configuration = system: {
        config = {
          system.build.azureImage = standInImage system;
          virtualisation.azureImage.vmGeneration = "v2";
          nixpkgs.hostPlatform.system = system;
          system.nixos = {
            release = "25.05";
            label = "azure-25.05.20250612.abc1234";
          };
        };
      };

      settings = {
        name = "nixos-example";
        resourceGroup = "nixos-images";
        location = "westeurope";
        tags.project = "nixos-azure-publish-example";
        gallery = {
          name = "nixos_example_gallery";
          description = "Example NixOS images";
        };
        imageDefinition = {
          name = "nixos-25.05-gen2";
          publisher = "NixOS";
          offer = "NixOS";
          sku = "25.05-gen2";
          description = "NixOS 25.05, Hyper-V generation 2";
        };
        version.targetRegions = [
          "westeurope"
          {
            name = "northeurope";
            replicas = 2;
          }
        ];
      };
    in
    {
      azurePublish = {
        example = lib.mkTarget ({ nixosConfiguration = configuration "x86_64-linux"; } // settings);
        example-aarch64 = lib.mkTarget (
          { nixosConfiguration = configuration "aarch64-linux"; }
          // settings
          // {
            name = "nixos-example-arm";
            imageDefinition = settings.imageDefinition // {
              name = "nixos-25.05-arm64";
              sku = "25.05-arm64";
            };
          }
        );
      };
    };
}

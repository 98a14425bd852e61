{
  description = "Publish a NixOS configuration as a replicated Azure Compute Gallery image";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  # Wiring only: the parts live in nix/.
  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
      lib = import ./nix/lib.nix;
      example =
        system:
        nixpkgs.lib.nixosSystem {
          modules = [
            self.nixosModules.azure-image
            ./nix/examples/azure-example.nix
            { nixpkgs.hostPlatform = system; }
          ];
        };
    in
    {
      inherit lib;

      nixosModules = {
        azure-image = ./nix/modules/azure-image.nix;
        publisher = import ./nix/modules/publisher.nix { inherit self; };
        default = self.nixosModules.azure-image;
      };

      nixosConfigurations = {
        azure-example = example "x86_64-linux";
        azure-example-aarch64 = example "aarch64-linux";
      };

      azurePublish = {
        default = lib.mkTarget (
          { nixosConfiguration = self.nixosConfigurations.azure-example; } // import ./nix/examples/target.nix
        );
        arm64 = lib.mkTarget (
          { nixosConfiguration = self.nixosConfigurations.azure-example-aarch64; }
          // nixpkgs.lib.recursiveUpdate (import ./nix/examples/target.nix) {
            name = "nixos-example-arm64";
            imageDefinition = {
              name = "nixos-arm64-gen2";
              sku = "arm64-gen2";
            };
          }
        );
      };

      packages = forAllSystems (
        pkgs:
        let
          # nixpkgs' azcopy links bin/azcopy itself (every version from 10.3.2 on).
          azcopy = pkgs.azure-storage-azcopy;
          publisher = pkgs.callPackage ./nix/package.nix { inherit azcopy; };
          configuration =
            if pkgs.stdenv.hostPlatform.system == "aarch64-linux" then "azure-example-aarch64" else "azure-example";
        in
        {
          default = publisher;
          nixos-azure-publish = publisher;
          inherit azcopy;
          azure-vhd = self.nixosConfigurations.${configuration}.config.system.build.azureImage;
        }
      );

      apps = forAllSystems (pkgs: {
        publish = lib.mkPublishApp {
          inherit pkgs;
          publisher = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          flake = self;
        };
        default = self.apps.${pkgs.stdenv.hostPlatform.system}.publish;
      });

      templates.default = {
        path = ./templates/default;
        description = "A NixOS configuration for Azure and the target that publishes it";
      };

      checks = forAllSystems (pkgs: import ./nix/checks.nix { inherit self pkgs; });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages =
            with pkgs;
            [
              nix
              qemu-utils
              nodejs
              ruff
              python3Packages.mypy
              nixfmt-rfc-style
            ]
            # The emulator's blob service, where this nixpkgs packages it.
            ++ pkgs.lib.optional (pkgs ? azurite) azurite;
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}

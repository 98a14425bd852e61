{
  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";
    # Point this at wherever you get nixos-azure-publish from.
    nixos-azure-publish.url = "github:OWNER/nixos-azure-publish";
    nixos-azure-publish.inputs.nixpkgs.follows = "nixpkgs";
  };

  outputs = { self, nixpkgs, nixos-azure-publish }:
    let
      system = "x86_64-linux";
      publish = nixos-azure-publish;
    in
    {
      nixosConfigurations.azure = nixpkgs.lib.nixosSystem {
        modules = [
          publish.nixosModules.azure-image # nixpkgs' Azure image + serial console, Gen2, growpart
          ./configuration.nix
          { nixpkgs.hostPlatform = system; }
        ];
      };

      # `nix eval --json .#azurePublish.default` shows it; generation, architecture,
      # release and the image come from the configuration above.
      azurePublish.default = publish.lib.mkTarget {
        nixosConfiguration = self.nixosConfigurations.azure;
        name = "my-nixos";
        resourceGroup = "my-images";
        location = "westeurope";
        gallery.name = "my_gallery";
        imageDefinition = { name = "my-nixos-gen2"; publisher = "me"; offer = "nixos"; sku = "gen2"; };
        version.targetRegions = [ "westeurope" ];
      };

      # `nix run .#publish` builds the image and publishes it; `nix run .#publish -- --dry-run`.
      apps.${system}.publish = publish.lib.mkPublishApp {
        pkgs = nixpkgs.legacyPackages.${system};
        publisher = publish.packages.${system}.default;
        flake = self;
      };
    };
}

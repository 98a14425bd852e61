# Where this repository's example image goes. lib.mkTarget adds what the NixOS
# configuration already knows (generation, architecture, release, the image).
{
  name = "nixos-example";
  resourceGroup = "nixos-images";
  location = "westeurope";
  tags.project = "nixos-azure-publish-example";
  gallery = {
    name = "nixos_example_gallery";
    description = "Example NixOS images";
  };
  imageDefinition = {
    name = "nixos-x64-gen2";
    publisher = "NixOS";
    offer = "NixOS";
    sku = "gen2";
    description = "NixOS, Hyper-V generation 2";
  };
  version = {
    targetRegions = [
      "westeurope"
      {
        name = "northeurope";
        replicas = 2;
      }
    ];
    storageAccountType = "Standard_LRS";
  };
}

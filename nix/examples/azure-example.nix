# This repository's example NixOS configuration for Azure: the image that
# `nix run .#publish` publishes. Deliberately small; the Azure parts come from
# nixosModules.azure-image and nixpkgs' Azure module.
{
  nixosAzurePublish.generation = 2;

  services.openssh.enable = true;
  services.openssh.settings.PasswordAuthentication = false;

  documentation.enable = false;
  system.stateVersion = "25.05";
}

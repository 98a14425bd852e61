# Your NixOS configuration for Azure. The Azure parts (agent, serial console,
# boot loader for the chosen generation) come from nixosModules.azure-image.
{
  # nixosAzurePublish.generation = 1;  # BIOS instead of UEFI (no Trusted Launch)
  services.openssh.enable = true;
  system.stateVersion = "25.05";
}

# Defaults for an Azure image on top of nixpkgs' own Azure module
# (nixos/modules/virtualisation/azure-image.nix, which imports azure-common.nix:
# waagent, cloud-init, Hyper-V initrd modules, `console=ttyS0`).
# Everything here is a default: a configuration can override any of it.
{
  config,
  lib,
  modulesPath,
  ...
}:
let
  cfg = config.nixosAzurePublish;
in
{
  imports = [ "${modulesPath}/virtualisation/azure-image.nix" ];

  options.nixosAzurePublish = {
    generation = lib.mkOption {
      type = lib.types.enum [
        1
        2
      ];
      default = 2;
      description = ''
        Hyper-V generation of the image: 2 (UEFI; needed for Trusted Launch and Arm64)
        or 1 (BIOS). Sets `virtualisation.azureImage.vmGeneration`, from which
        `lib.mkTarget` derives the target's `hyperVGeneration`.
      '';
    };
    serialConsole = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = ''
        A login prompt on the serial console (ttyS0): Azure's serial console and boot
        diagnostics show it, and the publisher's smoke test waits for it.
      '';
    };
  };

  config = {
    virtualisation.azureImage.vmGeneration = lib.mkDefault "v${toString cfg.generation}";

    # Grow the root partition and file system to the size of the VM's OS disk on boot,
    # so one small image serves every disk size.
    boot.growPartition = lib.mkDefault true;
    fileSystems."/".autoResize = lib.mkDefault true;

    # azure-common.nix already puts the kernel console on ttyS0; this makes sure a getty
    # runs there too, whatever the console list ends up being.
    systemd.services."serial-getty@ttyS0" = lib.mkIf cfg.serialConsole {
      enable = true;
      wantedBy = [ "getty.target" ];
    };
  };
}

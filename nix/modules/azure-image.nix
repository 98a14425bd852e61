# Defaults for an Azure image on top of nixpkgs' own Azure module
# (nixos/modules/virtualisation/azure-image.nix, which imports azure-common.nix:
# waagent, cloud-init, Hyper-V initrd modules, `console=ttyS0`).
# Everything here is a default: a configuration can override any of it.
#
# Works with nixpkgs 24.11 and newer (vmGeneration came with 24.11); on 24.11 it adds
# the EFI boot loader that nixpkgs' module only sets from 25.05 on.
{
  config,
  lib,
  modulesPath,
  ...
}:
let
  cfg = config.nixosAzurePublish;
  inherit (lib.trivial) release;
  gen2 = config.virtualisation.azureImage.vmGeneration == "v2";
  # nixos-24.11's azure-image.nix only switches the partition table to EFI for v2, while
  # its azure-common.nix still installs BIOS grub on /dev/sda: such an image cannot boot.
  # The EFI boot loader, the ESP and the root file system moved into azure-image.nix in
  # 25.05 (nixpkgs PR #359365); before that, this module sets them as 25.05 does.
  efiFromHere = lib.versionOlder release "25.05";
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
        `lib.mkTarget` derives the target's `hyperVGeneration`. Create VMs from a
        generation 2 image with Secure Boot off: NixOS's boot loader is not signed.
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

  config =
    if lib.versionOlder release "24.11" then
      throw "nixos-azure-publish's nixosModules.azure-image needs nixpkgs 24.11 or newer (virtualisation.azureImage.vmGeneration), but this is nixpkgs ${release}: follow nixos-24.11 or later (25.05 builds Gen2 images on its own)"
    else
      lib.mkMerge [
        {
          virtualisation.azureImage.vmGeneration = lib.mkDefault "v${toString cfg.generation}";

          # Grow the root partition and file system to the size of the VM's OS disk on
          # boot, so one small image serves every disk size.
          boot.growPartition = lib.mkDefault true;
          fileSystems."/".autoResize = lib.mkDefault true;

          # azure-common.nix puts the kernel console on ttyS0, and systemd's getty
          # generator starts a getty there. Wanting the template's instance keeps
          # upstream's serial-getty@.service (Type=idle, Restart=always) whatever the
          # console list ends up being; a systemd.services."serial-getty@ttyS0" entry
          # would instead be a standalone unit without them (nixos/lib/systemd-lib.nix).
          systemd.targets = lib.mkIf cfg.serialConsole {
            getty.wants = [ "serial-getty@ttyS0.service" ];
          };
        }
        (lib.mkIf (efiFromHere && gen2) {
          # As nixpkgs 25.05's azure-image.nix does for v2. azure-common.nix of 24.11 sets
          # the device at normal priority; this must win over it.
          boot.loader.grub = {
            device = lib.mkOverride 90 "nodev";
            efiSupport = lib.mkDefault true;
            efiInstallAsRemovable = lib.mkDefault true;
            # Text mode, so that the boot menu reaches the serial console.
            font = lib.mkDefault null;
            splashImage = lib.mkDefault null;
          };
          fileSystems."/boot" = {
            device = lib.mkDefault "/dev/disk/by-label/ESP";
            fsType = lib.mkDefault "vfat";
          };
        })
      ];
}

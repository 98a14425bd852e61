# nixpkgs' azcopy (pkgs/by-name/az/azure-storage-azcopy/package.nix) with a
# guaranteed `bin/azcopy`: older revisions install only `azure-storage-azcopy`,
# newer ones add an `azcopy` link. The publisher's azcopy backend runs `azcopy`.
{
  lib,
  runCommand,
  azure-storage-azcopy,
}:
runCommand "azcopy-${azure-storage-azcopy.version}"
  {
    meta = azure-storage-azcopy.meta // {
      mainProgram = "azcopy";
    };
  }
  ''
    mkdir -p "$out/bin"
    for name in azcopy azure-storage-azcopy; do
      if [ -x "${azure-storage-azcopy}/bin/$name" ]; then
        ln -s "${azure-storage-azcopy}/bin/$name" "$out/bin/azcopy"
        exit 0
      fi
    done
    echo "no azcopy binary in ${azure-storage-azcopy}/bin" >&2
    exit 1
  ''

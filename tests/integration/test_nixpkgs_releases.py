"""The Nix layer on the nixpkgs releases it supports: 24.11 and 25.05 (24.05 refused).

nixpkgs cannot be fetched here, so each release is the stand-in of
tests/fixtures/flakes/nixpkgs-stub: its module system and its copies of nixpkgs'
option declarations and Azure modules, each naming the nixpkgs file it mirrors.
This repository's module, lib.mkTarget, package and checks are evaluated on each.
"""

from __future__ import annotations

import re
import tomllib

import pytest

from nixos_azure_publish import config
from tests.conftest import REPO
from tests.helpers.nix import nix_eval

RELEASES = ["24.11", "25.05"]


@pytest.fixture(params=RELEASES)
def release(request):
    return request.param


@pytest.fixture
def flake(flake_with_nixpkgs, release):
    """This repository's flake on the release's nixpkgs."""
    return flake_with_nixpkgs(release)


@pytest.fixture
def on_release(flake_with_nixpkgs, tmp_path):
    """Evaluate an expression with `nixos SETTINGS` (a NixOS configuration of the release,
    made as downstream flakes make it: nixosSystem { system = ...; } with this flake's
    module), `nixpkgs` and `lib` (this flake's nix/lib.nix) in scope."""

    def evaluate(release: str, expr: str, *, check: bool = True):
        flake_with_nixpkgs(release)  # prepares tmp_path/<release>/nixpkgs
        prelude = f"""
          let
            nixpkgs = builtins.getFlake "path:{tmp_path / release / "nixpkgs"}";
            lib = import {REPO / "nix" / "lib.nix"};
            nixos = settings: nixpkgs.lib.nixosSystem {{
              system = "x86_64-linux";
              modules = [ {REPO / "nix" / "modules" / "azure-image.nix"} settings ];
            }};
            target = nixosConfiguration: lib.mkTarget {{
              inherit nixosConfiguration; name = "t"; resourceGroup = "rg"; location = "westeurope";
            }};
          in
        """
        return nix_eval("--impure", "--expr", prelude + expr, check=check)

    return evaluate


# --- the module: a bootable image on every release -----------------------------------------


def test_gen2_boots_with_efi_grub_and_an_esp(on_release, release):
    loader = on_release(release, "(nixos { }).config.boot.loader.grub")
    assert (loader["device"], loader["efiSupport"], loader["efiInstallAsRemovable"]) == (
        "nodev",
        True,
        True,
    )
    filesystems = on_release(release, "(nixos { }).config.fileSystems")
    assert filesystems["/boot"] == {"device": "/dev/disk/by-label/ESP", "fsType": "vfat"}
    assert filesystems["/"]["device"] == "/dev/disk/by-label/nixos"
    assert filesystems["/"]["autoResize"] is True
    image = on_release(release, "(nixos { }).config.system.build.azureImage.partitionTableType")
    assert image == "efi"
    assert on_release(release, "(nixos { }).config.boot.growPartition") is True


def test_gen1_keeps_bios_grub_on_sda(on_release, release):
    settings = "{ nixosAzurePublish.generation = 1; }"
    loader = on_release(release, f"(nixos {settings}).config.boot.loader.grub")
    assert (loader["device"], loader["efiSupport"]) == ("/dev/sda", False)
    assert "/boot" not in on_release(release, f"(nixos {settings}).config.fileSystems")
    table = f"(nixos {settings}).config.system.build.azureImage.partitionTableType"
    assert on_release(release, table) == "legacy"


def test_nixpkgs_24_05_is_refused_with_the_release_and_the_fix(on_release):
    result = on_release("24.05", "(nixos { }).config.boot.loader.grub.device", check=False)
    assert result.returncode != 0
    assert "needs nixpkgs 24.11 or newer" in result.stderr
    assert "this is nixpkgs 24.05" in result.stderr


def test_the_serial_console_keeps_upstream_s_getty_unit(on_release, release):
    services = on_release(release, "builtins.attrNames (nixos { }).config.systemd.services")
    assert "serial-getty@ttyS0" not in services  # a standalone unit would lose Type=idle
    wants = on_release(release, "(nixos { }).config.systemd.targets.getty.wants")
    assert wants == ["serial-getty@ttyS0.service"]
    assert "console=ttyS0" in on_release(release, "(nixos { }).config.boot.kernelParams")
    off = "{ nixosAzurePublish.serialConsole = false; }"
    assert on_release(release, f"(nixos {off}).config.systemd.targets") == {}


# --- lib.mkTarget on real configurations ---------------------------------------------------


def test_mktarget_reads_a_configuration_made_with_the_system_argument(on_release, release):
    assert on_release(release, "(nixos { }).config.nixpkgs ? hostPlatform") is True
    unset = on_release(
        release, "(builtins.tryEval (nixos { }).config.nixpkgs.hostPlatform).success"
    )
    assert unset is False  # reading it throws, as in nixpkgs
    data = on_release(release, "target (nixos { })")
    target = config.load_target(data, source=release)
    assert (target.architecture, target.hyper_v_generation) == ("x64", "V2")
    assert data["nixos"]["system"] == "x86_64-linux"
    assert data["nixos"]["release"] == release


def test_the_image_file_and_label_of_each_release(on_release, release):
    post = on_release(release, "(nixos { }).config.system.build.azureImage.postVM")
    label = on_release(release, "(nixos { }).config.system.nixos.label")
    if release == "24.11":
        assert "$out/disk.vhd" in post
        assert label == "24.11.20241130.abc1234"
    else:
        # 25.05 tags the Azure image: the label, and so the file name, start with azure-.
        assert label == "azure-25.05.20250612.abc1234"
        assert f"$out/nixos-image-{label}-x86_64-linux.vhd" in post


def test_mktarget_reads_the_image_variant_without_the_module(on_release):
    # nixpkgs 25.05+: system.build.images.azure, its configuration in passthru.config.
    expr = """
      target (nixpkgs.lib.nixosSystem {
        system = "aarch64-linux";
        modules = [ { virtualisation.azureImage.vmGeneration = "v2"; } ];
      })
    """
    data = on_release("25.05", expr)
    assert (data["architecture"], data["hyperVGeneration"]) == ("Arm64", "V2")
    assert data["nixos"]["label"].startswith("azure-25.05.")


# --- the flake: targets, checks, package, dev shell ----------------------------------------


def test_the_flake_s_targets_and_checks_evaluate(flake, release):
    for name, architecture in (("default", "x64"), ("arm64", "Arm64")):
        target = config.load_target(flake(f"azurePublish.{name}"), source=name)
        assert (target.architecture, target.hyper_v_generation) == (architecture, "V2")
    names = flake("checks.x86_64-linux", "--apply", "builtins.attrNames")
    assert names == ["azcopy", "azurePublish-arm64", "azurePublish-default", "lib", "package"]
    assert flake("checks.x86_64-linux.lib.name") == "lib-mkTarget"
    assert flake("checks.x86_64-linux.package.pname") == "nixos-azure-publish"


def _requirement(spec: str) -> tuple[str, str | None]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*(?:>=\s*([0-9.]+))?\s*", spec)
    assert match, f"{spec!r}: only NAME or NAME>=VERSION is used here"
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(2)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_the_package_depends_on_what_pyproject_declares_and_the_release_has(flake):
    declared = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    requirements = [_requirement(spec) for spec in declared["project"]["dependencies"]]
    dependencies = flake(
        "packages.x86_64-linux.default",
        "--apply",
        "p: map (d: { inherit (d) pname version; }) p.dependencies",
    )
    assert [d["pname"] for d in dependencies] == [name for name, _ in requirements]
    # nixpkgs' runtime-deps check fails the build when the release is below a floor.
    for (name, floor), dependency in zip(requirements, dependencies, strict=True):
        if floor is not None:
            assert _version(dependency["version"]) >= _version(floor), (name, floor, dependency)


def test_the_publisher_finds_azurite_from_nixpkgs(flake, release):
    wrapper = flake("packages.x86_64-linux.default.makeWrapperArgs")
    shell = flake("devShells.x86_64-linux.default.packages", "--apply", "map (p: p.name)")
    if release == "25.05":
        azurite = flake("packages.x86_64-linux.default.passthru.azurite.outPath")
        assert any(arg == f"{azurite}/bin" or f"{azurite}/bin" in arg.split(":") for arg in wrapper)
        assert "azurite-3.33.0" in shell
    else:
        # Where this nixpkgs has no azurite the package still builds, without it.
        assert not any("azurite" in arg for arg in wrapper)
        assert not any("azurite" in name for name in shell)

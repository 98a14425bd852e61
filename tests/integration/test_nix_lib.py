"""nix/lib.nix and flake.nix evaluated by the real Nix, without nixpkgs.

lib.nix uses only builtins, so mkTarget and mkPublishApp evaluate here as
they would in a downstream flake. flake.nix needs nixpkgs, which cannot be
fetched here: its wiring is evaluated with nixpkgs replaced by a small stand-in
flake (--override-input), and every .nix file is at least parsed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nixos_azure_publish import __version__, config
from tests.conftest import REPO, require_tool
from tests.helpers.nix import nix_eval

LIB = REPO / "nix" / "lib.nix"

# What lib.mkTarget reads from a NixOS configuration, in both shapes nixpkgs has:
# the Azure module imported (system.build.azureImage) and, on 25.05+, without it
# (system.build.images.azure, whose passthru.config is the image's configuration).
PRELUDE = f"""
let
  lib = import {LIB};
  image = {{
    type = "derivation";
    outPath = "/nix/store/00000000000000000000000000000000-azure-image";
  }};
  azureConfig = gen: sys: {{
    system.build.azureImage = image;
    virtualisation.azureImage.vmGeneration = gen;
    nixpkgs.hostPlatform.system = sys;
    system.nixos = {{ release = "25.05"; label = "25.05.20250612.abc1234"; }};
  }};
  conf = gen: sys: {{ config = azureConfig gen sys; }};
  images = gen: sys: {{
    config.system.build.images.azure = image // {{ passthru.config = azureConfig gen sys; }};
  }};
  # nixpkgs.lib.nixosSystem {{ system = sys; ... }}: nixpkgs.hostPlatform has no value, and
  # reading it throws (nixos/modules/misc/nixpkgs.nix); the configuration's pkgs know.
  bySystemArgument = gen: sys: {{
    config = azureConfig gen sys // {{
      nixpkgs.hostPlatform = throw "The option `nixpkgs.hostPlatform' is used but not defined.";
    }};
    pkgs.stdenv.hostPlatform.system = sys;
  }};
  base = {{ name = "t"; resourceGroup = "rg"; location = "westeurope"; }};
in
"""


pytestmark = pytest.mark.usefixtures("nix_env")


def evaluates(expr: str) -> object:
    return nix_eval("--impure", "--expr", PRELUDE + expr)


def refused(expr: str) -> str:
    result = nix_eval("--impure", "--expr", PRELUDE + expr, check=False)
    assert result.returncode != 0, result.stdout
    return str(result.stderr)


def test_every_nix_file_parses():
    instantiate = require_tool("nix-instantiate")
    files = [
        path
        for path in REPO.rglob("*.nix")
        if not {"node_modules", ".venv", ".git"} & set(path.relative_to(REPO).parts)
    ]
    assert REPO / "flake.nix" in files
    assert REPO / "templates" / "default" / "flake.nix" in files
    for path in files:
        result = subprocess.run(
            [instantiate, "--parse", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"{path}: {result.stderr}"


def test_mktarget_derives_everything_the_configuration_knows():
    target = evaluates('lib.mkTarget (base // { nixosConfiguration = conf "v2" "x86_64-linux"; })')
    assert target == {
        "name": "t",
        "resourceGroup": "rg",
        "location": "westeurope",
        "image": "/nix/store/00000000000000000000000000000000-azure-image",
        "hyperVGeneration": "V2",
        "architecture": "x64",
        "nixos": {
            "release": "25.05",
            "label": "25.05.20250612.abc1234",
            "system": "x86_64-linux",
        },
    }
    assert config.load_target(target).hyper_v_generation == "V2"


@pytest.mark.parametrize(
    ("system", "architecture"), [("x86_64-linux", "x64"), ("aarch64-linux", "Arm64")]
)
def test_mktarget_takes_the_system_from_the_configuration_s_pkgs(system, architecture):
    target = evaluates(
        f'lib.mkTarget (base // {{ nixosConfiguration = bySystemArgument "v2" "{system}"; }})'
    )
    assert isinstance(target, dict)
    assert target["architecture"] == architecture
    assert target["nixos"]["system"] == system


def test_mktarget_reads_the_image_variant_of_nixpkgs_25_05():
    target = evaluates(
        'lib.mkTarget (base // { nixosConfiguration = images "v2" "aarch64-linux"; })'
    )
    assert isinstance(target, dict)
    assert (target["hyperVGeneration"], target["architecture"]) == ("V2", "Arm64")
    gen1 = evaluates('lib.mkTarget (base // { nixosConfiguration = images "v1" "x86_64-linux"; })')
    assert isinstance(gen1, dict)
    assert gen1["hyperVGeneration"] == "V1"


def test_mktarget_with_an_image_and_explicit_fields():
    target = evaluates(
        "lib.mkTarget (base // {"
        ' image = image; hyperVGeneration = "V1"; system = "x86_64-linux"; })'
    )
    assert target == {
        "name": "t",
        "resourceGroup": "rg",
        "location": "westeurope",
        "image": "/nix/store/00000000000000000000000000000000-azure-image",
        "hyperVGeneration": "V1",
        "architecture": "x64",
        "nixos": {"system": "x86_64-linux"},
    }


def test_explicit_settings_that_agree_are_kept():
    target = evaluates(
        'lib.mkTarget (base // { nixosConfiguration = conf "v2" "aarch64-linux";'
        ' hyperVGeneration = "V2"; architecture = "Arm64"; nixos.release = "25.05"; })'
    )
    assert isinstance(target, dict)
    assert target["architecture"] == "Arm64"


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        (
            (
                'lib.mkTarget (base // { nixosConfiguration = conf "v1" "x86_64-linux";'
                ' imageDefinition.securityType = "TrustedLaunch"; })'
            ),
            (
                'imageDefinition.securityType = "TrustedLaunch" needs a Gen2 (UEFI) image,'
                ' but virtualisation.azureImage.vmGeneration = "v1"'
            ),
        ),
        (
            'lib.mkTarget (base // { nixosConfiguration = conf "v1" "aarch64-linux"; })',
            'architecture = "Arm64" needs hyperVGeneration = "V2"',
        ),
        (
            (
                'lib.mkTarget (base // { image = image; system = "aarch64-linux";'
                ' hyperVGeneration = "V1"; })'
            ),
            'architecture = "Arm64" needs hyperVGeneration = "V2"',
        ),
        (
            (
                'lib.mkTarget (base // { nixosConfiguration = conf "v2" "x86_64-linux";'
                ' hyperVGeneration = "V1"; })'
            ),
            (
                'hyperVGeneration = "V1" contradicts the NixOS configuration, where'
                ' virtualisation.azureImage.vmGeneration = "v2" gives "V2"'
            ),
        ),
        (
            (
                'lib.mkTarget (base // { nixosConfiguration = conf "v2" "x86_64-linux";'
                ' architecture = "Arm64"; })'
            ),
            'architecture = "Arm64" contradicts the NixOS configuration',
        ),
        (
            (
                'lib.mkTarget (base // { nixosConfiguration = conf "v2" "x86_64-linux";'
                ' nixos.release = "24.11"; })'
            ),
            (
                'nixos.release = "24.11" contradicts the NixOS configuration, where'
                ' system.nixos.release gives "25.05"'
            ),
        ),
        (
            'lib.mkTarget (base // { nixosConfiguration = conf "v2" "riscv64-linux"; })',
            'system "riscv64-linux" has no Azure architecture',
        ),
        (
            "lib.mkTarget (base // { image = image; })",
            'hyperVGeneration (\\"V1\\" or \\"V2\\") is required',
        ),
        ("lib.mkTarget base", "give nixosConfiguration, or image together with hyperVGeneration"),
        (
            "lib.mkTarget (base // { nixosConfiguration.config.system.build = { }; })",
            "the NixOS configuration builds no Azure image",
        ),
    ],
)
def test_mktarget_refuses_what_contradicts_the_image(expr, message):
    stderr = refused(expr)
    assert "nixos-azure-publish lib.mkTarget: " in stderr
    assert message.replace('\\"', '"') in stderr.replace("\\", "")


def test_mkpublishapp_runs_the_publisher_for_the_flake_and_target():
    app = evaluates(
        "lib.mkPublishApp {"
        " pkgs.writeShellScript = name: text: builtins.toFile name text;"
        ' publisher = "/nix/store/11111111111111111111111111111111-nixos-azure-publish";'
        ' flake = { outPath = "/nix/store/22222222222222222222222222222222-source";'
        ' rev = "0123abc"; };'
        ' target = "gen.2"; }'
    )
    assert isinstance(app, dict)
    assert app["type"] == "app"
    script = Path(app["program"]).read_text(encoding="utf-8")
    assert "export NIXOS_AZURE_PUBLISH_FLAKE_REVISION='0123abc'" in script
    assert (
        "exec /nix/store/11111111111111111111111111111111-nixos-azure-publish/bin/"
        "nixos-azure-publish publish"
        " --flake 'path:/nix/store/22222222222222222222222222222222-source'"
        " --target 'gen.2' \"$@\""
    ) in script


@pytest.fixture
def repo_flake(flake_with_nixpkgs):
    """This repository's flake on the stand-in of nixpkgs' default release (25.05)."""
    return flake_with_nixpkgs("25.05")


def test_the_flake_exposes_lib_modules_and_template(repo_flake):
    assert repo_flake("lib", "--apply", "builtins.attrNames") == ["mkPublishApp", "mkTarget"]
    assert repo_flake("nixosModules", "--apply", "builtins.attrNames") == [
        "azure-image",
        "default",
        "publisher",
    ]
    description = repo_flake("templates.default.description")
    assert isinstance(description, str)
    assert "Azure" in description


@pytest.mark.parametrize(("name", "architecture"), [("default", "x64"), ("arm64", "Arm64")])
def test_the_flake_s_own_targets_are_valid(repo_flake, name, architecture):
    data = repo_flake(f"azurePublish.{name}")
    target = config.load_target(data, source=f"azurePublish.{name}")
    assert target.architecture == architecture
    assert target.hyper_v_generation == "V2"
    assert target.image is not None
    assert target.image.startswith("/nix/store/")


def test_the_publish_app_runs_the_package_on_the_flake_s_own_source(repo_flake):
    app = repo_flake("apps.x86_64-linux.publish")
    assert repo_flake("apps.x86_64-linux.default") == app
    assert isinstance(app, dict)
    assert app["type"] == "app"
    publisher = repo_flake("packages.x86_64-linux.default.outPath")
    script = Path(app["program"]).read_text(encoding="utf-8")
    assert f"exec {publisher}/bin/nixos-azure-publish publish --flake 'path:/nix/store/" in script
    assert "--target 'default' \"$@\"" in script


def test_the_package_is_wired_from_pyproject_with_its_tools(repo_flake):
    package = repo_flake(
        "packages.x86_64-linux.default",
        "--apply",
        "p: { inherit (p) pname version pyproject makeWrapperArgs disabledTestPaths; }",
    )
    assert isinstance(package, dict)
    assert package["pname"] == "nixos-azure-publish"
    assert package["version"] == __version__
    assert package["pyproject"] is True
    assert package["disabledTestPaths"] == ["tests/integration"]
    prefix, suffix = package["makeWrapperArgs"][:4], package["makeWrapperArgs"][4:]
    assert prefix[:3] == ["--prefix", "PATH", ":"]
    assert [Path(p).parent.name.split("-", 1)[1] for p in prefix[3].split(":")] == [
        "nix",
        "qemu-utils",
    ]
    assert suffix[:3] == ["--suffix", "PATH", ":"]
    azcopy = repo_flake("packages.x86_64-linux.azcopy.outPath")
    azurite = repo_flake("packages.x86_64-linux.default.passthru.azurite.outPath")
    assert suffix[3].split(":") == [f"{azcopy}/bin", f"{azurite}/bin"]


def test_azcopy_is_nixpkgs_own_package(repo_flake):
    # Every nixpkgs azure-storage-azcopy from 10.3.2 on links bin/azcopy: no wrapper.
    azcopy = repo_flake(
        "packages.x86_64-linux.azcopy", "--apply", "p: { inherit (p) name pname version; }"
    )
    assert azcopy == {
        "name": "azure-storage-azcopy-10.32.8",
        "pname": "azure-storage-azcopy",
        "version": "10.32.8",
    }


@pytest.mark.parametrize("system", ["x86_64-linux", "aarch64-linux"])
def test_every_system_has_the_packages_and_its_own_image(repo_flake, system):
    names = repo_flake(f"packages.{system}", "--apply", "builtins.attrNames")
    assert names == ["azcopy", "azure-vhd", "default", "nixos-azure-publish"]
    vhd = repo_flake(f"packages.{system}.azure-vhd.postVM")
    assert isinstance(vhd, str)
    assert f"$out/nixos-image-azure-25.05.20250612.abc1234-{system}.vhd" in vhd
    assert repo_flake(f"devShells.{system}.default.type") == "derivation"
    assert repo_flake(f"formatter.{system}.type") == "derivation"


def test_checks_validate_every_target_and_the_lib(repo_flake):
    names = repo_flake("checks.x86_64-linux", "--apply", "builtins.attrNames")
    assert names == ["azcopy", "azurePublish-arm64", "azurePublish-default", "lib", "package"]
    # The lib check throws at evaluation when one of its expectations is broken.
    assert repo_flake("checks.x86_64-linux.lib.name") == "lib-mkTarget"
    script = repo_flake("checks.x86_64-linux.azurePublish-default.script")
    assert isinstance(script, str)
    assert script.startswith("nixos-azure-publish config check --config /nix/store/")
    target_json = script.split("--config ", 1)[1].split()[0]
    data = json.loads(Path(target_json).read_text(encoding="utf-8"))
    assert config.load_target(data).name == "nixos-example"


def test_the_template_publishes_its_own_configuration(tmp_path, repo_flake):
    # repo_flake prepared tmp_path/25.05/{repo,nixpkgs}: this flake and the stand-in.
    repo_flake("lib", "--apply", "builtins.attrNames")
    template = tmp_path / "template"
    shutil.copytree(REPO / "templates" / "default", template)
    lines = (template / "flake.nix").read_text(encoding="utf-8").splitlines()
    assert len([line for line in lines if line.strip()]) <= 40  # "in ~30 lines"

    def run(attr: str) -> Any:
        return nix_eval(
            "--no-write-lock-file",
            "--override-input",
            "nixpkgs",
            f"path:{tmp_path / '25.05' / 'nixpkgs'}",
            "--override-input",
            "nixos-azure-publish",
            f"path:{tmp_path / '25.05' / 'repo'}",
            f"path:{template}#{attr}",
        )

    target = config.load_target(run("azurePublish.default"), source="template")
    assert (target.name, target.hyper_v_generation, target.architecture) == (
        "my-nixos",
        "V2",
        "x64",
    )
    app = run("apps.x86_64-linux.publish")
    assert isinstance(app, dict)
    script = Path(app["program"]).read_text(encoding="utf-8")
    assert "publish --flake 'path:/nix/store/" in script

"""flake.py logic that needs no Nix: attribute paths, store paths, finding the VHD."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nixos_azure_publish import flake
from nixos_azure_publish.errors import ImageError, UsageError


def test_attribute_paths_quote_what_nix_would_misread():
    assert flake.installable(".", "azurePublish", "default") == ".#azurePublish.default"
    assert flake.attr_path("azurePublish", "gen.2", "image") == 'azurePublish."gen.2".image'
    assert flake.attr_path("azurePublish", "2nd") == 'azurePublish."2nd"'
    assert flake.attr_path("azurePublish", "arm-v1") == "azurePublish.arm-v1"


@pytest.mark.parametrize("name", ['a"b', "a\\b", "${x}"])
def test_target_names_that_cannot_be_quoted_are_refused(name):
    with pytest.raises(UsageError, match="cannot be used as a flake attribute"):
        flake.attr_path("azurePublish", name)


def test_locate_vhd_takes_a_file_as_it_is(tmp_path):
    image = tmp_path / "custom.img"
    image.write_bytes(b"x")
    assert flake.locate_vhd(image) == image


def test_locate_vhd_finds_the_one_vhd_whatever_its_name(tmp_path):
    (tmp_path / "nixos-image-azure-25.05-x86_64-linux.vhd").write_bytes(b"x")
    (tmp_path / "nix-support").mkdir()
    assert flake.locate_vhd(tmp_path).name == "nixos-image-azure-25.05-x86_64-linux.vhd"


def test_locate_vhd_without_a_vhd_says_what_is_there(tmp_path):
    (tmp_path / "nixos.img").write_bytes(b"x")
    with pytest.raises(ImageError, match=r"no \.vhd file .* \(it holds: nixos\.img\)") as info:
        flake.locate_vhd(tmp_path)
    assert "--image PATH" in (info.value.hint or "")


def test_locate_vhd_with_two_vhds_names_both(tmp_path):
    for name in ("a.vhd", "b.vhd"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(ImageError, match=r"2 \.vhd files .* \(a\.vhd, b\.vhd\)"):
        flake.locate_vhd(tmp_path)


def _missing(folder: Path) -> Path:
    return folder / "missing"


def _fifo(folder: Path) -> Path:
    fifo = folder / "disk.vhd"
    os.mkfifo(fifo)
    return fifo


def _device(folder: Path) -> Path:
    del folder
    return Path("/dev/null")


def _symlink_loop(folder: Path) -> Path:
    loop = folder / "loop.vhd"
    loop.symlink_to(loop)
    return loop


def _dangling_symlink(folder: Path) -> Path:
    link = folder / "disk.vhd"
    link.symlink_to(folder / "gone.vhd")
    return link


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        pytest.param(_missing, UsageError, "does not exist", id="missing"),
        pytest.param(_fifo, ImageError, "is not a regular file", id="fifo"),
        pytest.param(_device, ImageError, "is not a regular file", id="device"),
        pytest.param(_symlink_loop, UsageError, "symbolic link loop", id="symlink-loop"),
        pytest.param(_dangling_symlink, UsageError, "does not exist", id="dangling-symlink"),
    ],
)
def test_locate_vhd_of_a_path_that_is_no_file_says_what_it_is(tmp_path, make, error, message):
    with pytest.raises(error, match=message) as caught:
        flake.locate_vhd(make(tmp_path))
    # A missing input is a usage error (exit 2), not a bad image (exit 3).
    assert caught.value.exit_code == (2 if error is UsageError else 3)


@pytest.mark.parametrize("ref", ["", ".#azurePublish.default"])
def test_a_flake_ref_with_an_attribute_is_a_usage_error(ref):
    with pytest.raises(UsageError, match="--flake takes a flake reference"):
        flake.load_flake_target(ref)


def test_an_empty_target_is_a_usage_error():
    with pytest.raises(UsageError, match="--target must not be empty"):
        flake.load_flake_target(".", "")

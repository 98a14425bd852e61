"""vhd against the reference writer: images made by the real qemu-img, read and converted by us.

qemu-img (Debian qemu-utils) is what nixpkgs uses to write Azure images, so it
is the judge here: our parser must agree with `qemu-img info -f vpc`, and our
conversion must be byte-identical in its data area to qemu-img's
`subformat=fixed,force_size` conversion of the same raw disk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish import vhd
from nixos_azure_publish.cli import main
from tests.conftest import require_tool
from tests.helpers.images import brute_force_extents, make_raw, merged, qemu_convert, qemu_vhd

if TYPE_CHECKING:
    from pathlib import Path

MIB = vhd.MIB


@pytest.fixture
def qemu_img() -> str:
    return require_tool("qemu-img")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def qemu_info(qemu_img: str, path: Path, fmt: str | None = "vpc") -> dict[str, Any] | None:
    """`qemu-img info --output=json`, or None when qemu-img refuses the file."""
    argv = [qemu_img, "info", "--output=json", *(["-f", fmt] if fmt else []), str(path)]
    done = run(*argv)
    return json.loads(done.stdout) if done.returncode == 0 else None


def read_area(path: Path, length: int) -> bytes:
    with path.open("rb") as f:
        return f.read(length)


# Raw disks: whole-MiB and not, sector-aligned and not, with data in the first
# sector, the middle and the very last sector.
RAW_SIZES = {
    "mib": 24 * MIB,
    "sectors": 24 * MIB + 5 * 512,
    "odd": 23 * MIB + 777,
}


def make_disk(folder: Path, size: int) -> Path:
    writes = {
        0: b"\xeb\x63\x90" + b"boot sector",
        510: b"\x55\xaa",
        size // 2: bytes(range(256)) * 40,
        size // 3 - 100: b"\x01" * 3000,  # crosses sector boundaries
        size - 1: b"\xee",
    }
    return make_raw(folder / "disk.raw", size, writes)


@pytest.fixture(params=sorted(RAW_SIZES))
def disk(request, tmp_path) -> tuple[Path, Path]:
    """A raw disk, and qemu-img's Azure VHD of it (rounded up to a MiB first, as nixpkgs must)."""
    raw = make_disk(tmp_path, RAW_SIZES[request.param])
    rounded = tmp_path / "rounded.raw"
    shutil.copyfile(raw, rounded)
    size = raw.stat().st_size
    with rounded.open("r+b") as f:
        f.truncate(-(-size // MIB) * MIB)
    reference = qemu_vhd(require_tool("qemu-img"), rounded, tmp_path / "reference.vhd")
    return raw, reference


def assert_matches_reference(qemu_img: str, ours: Path, reference: Path) -> None:
    """Same virtual size, identical data area, a valid footer; qemu-img agrees."""
    ref_info = vhd.inspect(reference)
    info = vhd.inspect(ours)
    assert info.azure_ready, info.problems
    assert info.footer is not None
    assert info.footer.checksum_ok
    assert info.virtual_size == ref_info.virtual_size
    assert ours.stat().st_size == reference.stat().st_size
    size = info.virtual_size
    assert read_area(ours, size) == read_area(reference, size)
    qemu = qemu_info(qemu_img, ours)
    assert qemu is not None
    assert qemu["virtual-size"] == size
    done = run(qemu_img, "compare", "-f", "vpc", "-F", "vpc", str(ours), str(reference))
    assert done.returncode == 0, done.stdout + done.stderr
    # qemu-img has no consistency check for VHD (exit 63, "does not support checks"):
    # it must answer the same for ours as for its own output, never 2 (corrupt) or 3 (leaks).
    ours_check = run(qemu_img, "check", "-f", "vpc", str(ours))
    ref_check = run(qemu_img, "check", "-f", "vpc", str(reference))
    assert ours_check.returncode == ref_check.returncode, ours_check.stderr
    assert ours_check.returncode not in {2, 3}
    # Sparse output: no more allocated than qemu-img's own, give or take a block per extent.
    assert ours.stat().st_blocks <= reference.stat().st_blocks + 64


def assert_agrees_with_qemu(qemu_img: str, path: Path) -> vhd.ImageInfo:
    info = vhd.inspect(path)
    qemu = qemu_info(qemu_img, path)
    if qemu is None:
        assert not info.format.startswith("vhd"), info
    else:
        assert info.format.startswith("vhd"), info
        assert info.virtual_size == qemu["virtual-size"]
    return info


# --------------------------------------------------------------------------- parsing


def test_qemu_fixed_force_size_is_ready(qemu_img, disk):
    _raw, reference = disk
    info = assert_agrees_with_qemu(qemu_img, reference)
    assert info.format == "vhd-fixed"
    assert info.azure_ready, info.problems
    assert info.footer is not None
    assert info.footer.creator_app == b"qem2"
    assert merged(vhd.data_extents(reference)) == brute_force_extents(reference)


def test_qemu_fixed_without_force_size_is_flagged(qemu_img, disk, tmp_path):
    raw, _ = disk
    chs = qemu_vhd(qemu_img, raw, tmp_path / "chs.vhd", "fixed")
    info = assert_agrees_with_qemu(qemu_img, chs)
    assert info.format == "vhd-fixed"
    assert not info.azure_ready
    assert "size-not-mib" in {p.code for p in info.problems}
    assert "CHS" in next(p.message for p in info.problems if p.code == "size-not-mib")


@pytest.mark.parametrize("subformat", ["dynamic", "dynamic,force_size"])
def test_qemu_dynamic(qemu_img, disk, tmp_path, subformat):
    raw, _ = disk
    image = qemu_vhd(qemu_img, raw, tmp_path / "d.vhd", subformat)
    info = assert_agrees_with_qemu(qemu_img, image)
    assert info.format == "vhd-dynamic"
    assert "dynamic" in {p.code for p in info.problems}
    assert not info.azure_ready


def test_qemu_qcow2(qemu_img, disk, tmp_path):
    raw, _ = disk
    image = qemu_convert(qemu_img, raw, tmp_path / "d.qcow2", "-f", "raw", "-O", "qcow2")
    info = assert_agrees_with_qemu(qemu_img, image)
    assert info.format == "qcow2"
    qemu = qemu_info(qemu_img, image, fmt=None)
    assert qemu is not None
    assert qemu["format"] == "qcow2"
    assert info.virtual_size == qemu["virtual-size"]


def test_raw(qemu_img, disk):
    raw, _ = disk
    info = assert_agrees_with_qemu(qemu_img, raw)
    assert info.format == "raw"
    assert info.virtual_size == raw.stat().st_size
    assert merged(vhd.data_extents(raw)) == brute_force_extents(raw)


# --------------------------------------------------------------------------- conversion


def test_convert_raw_matches_qemu_img(qemu_img, disk, tmp_path):
    raw, reference = disk
    result = vhd.convert(raw, tmp_path / "ours.vhd")
    assert result.method == "python"
    assert_matches_reference(qemu_img, tmp_path / "ours.vhd", reference)


@pytest.mark.parametrize("subformat", ["fixed", "dynamic"])
def test_convert_chs_rounded_matches_qemu_img(qemu_img, disk, tmp_path, subformat):
    # Without force_size the size is a CHS product: not a whole MiB, nor whole blocks.
    raw, reference = disk
    chs = qemu_vhd(qemu_img, raw, tmp_path / "chs.vhd", subformat)
    vhd.convert(chs, tmp_path / "ours.vhd")
    ours = tmp_path / "ours.vhd"
    chs_size = vhd.inspect(chs).virtual_size
    if -(-chs_size // MIB) * MIB == reference.stat().st_size - 512:
        assert_matches_reference(qemu_img, ours, reference)
    else:  # CHS rounding went past the next MiB: the extra space must be zeros
        info = vhd.inspect(ours)
        assert info.azure_ready
        ref_size = vhd.inspect(reference).virtual_size
        assert read_area(ours, ref_size) == read_area(reference, ref_size)
        with ours.open("rb") as f:
            f.seek(ref_size)
            assert f.read(info.virtual_size - ref_size) == bytes(info.virtual_size - ref_size)


def test_convert_dynamic_force_size_matches_qemu_img(qemu_img, disk, tmp_path):
    _raw, reference = disk
    rounded = tmp_path / "rounded.raw"
    dynamic = qemu_vhd(qemu_img, rounded, tmp_path / "d.vhd", "dynamic,force_size")
    result = vhd.convert(dynamic, tmp_path / "ours.vhd")
    assert result.source_format == "vhd-dynamic"
    assert result.method == "python"
    assert_matches_reference(qemu_img, tmp_path / "ours.vhd", reference)


def test_convert_qcow2_matches_qemu_img(qemu_img, disk, tmp_path):
    raw, reference = disk
    image = qemu_convert(qemu_img, raw, tmp_path / "d.qcow2", "-f", "raw", "-O", "qcow2")
    result = vhd.convert(image, tmp_path / "ours.vhd")
    assert result.method == "qemu-img"
    assert_matches_reference(qemu_img, tmp_path / "ours.vhd", reference)


def test_convert_grown_image_keeps_the_grown_space(qemu_img, disk, tmp_path):
    # As some nixpkgs revisions do: space appended after the conversion, then used.
    _, reference = disk
    grown = tmp_path / "grown.vhd"
    shutil.copyfile(reference, grown)
    size = grown.stat().st_size
    with grown.open("r+b") as f:
        f.truncate(size + 64 * MIB)
        f.seek(size + 64 * MIB - 512)
        f.write(b"\x42" * 512)
    info = vhd.inspect(grown)
    assert "footer-not-at-end" in {p.code for p in info.problems}
    assert qemu_info(qemu_img, grown) is None  # qemu-img cannot read it as a VHD either
    vhd.convert(grown, tmp_path / "ours.vhd")
    ours = tmp_path / "ours.vhd"
    fixed = vhd.inspect(ours)
    assert fixed.azure_ready
    assert qemu_info(qemu_img, ours) is not None
    data_size = size - 512
    assert read_area(ours, data_size) == read_area(reference, data_size)
    with ours.open("rb") as f:
        f.seek(size + 64 * MIB - 512)
        assert f.read(512) == b"\x42" * 512


def test_cli_inspect_exit_codes_on_qemu_images(qemu_img, disk, tmp_path, capsys):
    raw, reference = disk
    assert main(["inspect", "--json", str(reference)]) == 0
    assert json.loads(capsys.readouterr().out)["azure_ready"] is True
    assert main(["inspect", "--json", str(raw)]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "raw"
    assert data["data_bytes"] == sum(b - a for a, b in brute_force_extents(raw))

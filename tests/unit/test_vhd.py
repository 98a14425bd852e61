"""vhd: footers, every problem code, data extents and pure-Python conversion, on crafted bytes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import struct
from typing import TYPE_CHECKING

import pytest

from nixos_azure_publish import vhd
from nixos_azure_publish.cli import image_cmd, main
from nixos_azure_publish.errors import ImageError
from nixos_azure_publish.vhd import conversion
from tests.helpers.images import (
    brute_force_extents,
    make_dynamic,
    make_fixed,
    make_raw,
    merged,
    patch_footer,
)

if TYPE_CHECKING:
    from pathlib import Path

MIB = vhd.MIB
SECTOR = 512

# The last 512 bytes of `qemu-img convert -f raw -O vpc -o subformat=fixed,force_size` of a
# 30 MiB raw file (qemu-img 7.2): an independent writer to check our parser and checksum.
QEMU_FOOTER = bytes.fromhex(
    "636f6e6563746978000000020001000 0ffffffffffffffff329a129671656d32"
    "00050003576932 6b0000000001e00000000000 0001e00000ffff10ff00000002"
    "ffffe3d4410a381af4c541d7afded55a143ec870".replace(" ", "")
).ljust(512, b"\0")


# --------------------------------------------------------------------------- builders


def write_at(path: Path, offset: int, data: bytes) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(data)


def codes(info: vhd.ImageInfo) -> set[str]:
    return {p.code for p in info.problems}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- footer


def test_parses_a_footer_written_by_qemu_img():
    footer = vhd.Footer.parse(QEMU_FOOTER, offset=30 * MIB)
    assert footer.cookie == b"conectix"
    assert footer.checksum_ok
    assert footer.current_size == footer.original_size == 30 * MIB
    assert footer.creator_app == b"qem2"
    assert (footer.cylinders, footer.heads, footer.sectors_per_track) == vhd.MAX_GEOMETRY
    assert footer.disk_type_name == "fixed"
    assert footer.data_offset == vhd.FIXED_DATA_OFFSET


def test_built_footer_matches_qemu_img_except_identity_fields():
    ours = vhd.build_footer(30 * MIB)
    theirs = QEMU_FOOTER
    # timestamp (24..28), creator app/version (28..36), checksum (64..68), unique id (68..84)
    for lo, hi in ((0, 24), (36, 64), (84, 512)):
        assert ours[lo:hi] == theirs[lo:hi], (lo, hi)
    assert vhd.Footer.parse(ours).checksum_ok


def test_checksum_is_ones_complement_of_the_byte_sum():
    raw = vhd.build_footer(20 * MIB)
    stored = struct.unpack_from(">I", raw, 64)[0]
    total = sum(raw[:64]) + sum(raw[68:])
    assert stored == (~total) & 0xFFFFFFFF


# --------------------------------------------------------------------------- inspect: good


def test_fixed_vhd_with_whole_mib_size_is_ready(tmp_path):
    image = make_fixed(tmp_path / "ok.vhd", 20 * MIB, {0: b"boot", 10 * MIB: b"x"})
    info = vhd.inspect(image)
    assert info.format == "vhd-fixed"
    assert info.azure_ready
    assert info.problems == ()
    assert info.virtual_size == 20 * MIB
    assert info.file_size == 20 * MIB + 512
    assert info.footer is not None
    assert info.footer.offset == 20 * MIB
    assert vhd.require_azure_ready(image) == info


def test_to_json_has_the_documented_keys(tmp_path):
    image = make_fixed(tmp_path / "ok.vhd", 20 * MIB)
    data = vhd.inspect(image).to_json()
    for key in ("path", "format", "file_size", "virtual_size", "azure_ready", "problems", "footer"):
        assert key in data
    assert data["footer"]["currentSize"] == 20 * MIB
    assert data["footer"]["checksumValid"] is True
    json.dumps(data)


def test_gallery_size_warning_does_not_block(tmp_path):
    image = make_fixed(tmp_path / "big.vhd", (2 << 40) + MIB)  # sparse: costs nothing
    info = vhd.inspect(image)
    assert codes(info) == {"gallery-too-large"}
    assert info.problems[0].severity == "warning"
    assert info.azure_ready


# --------------------------------------------------------------------------- inspect: problems


def test_bad_cookie(tmp_path):
    image = make_fixed(tmp_path / "c.vhd", 20 * MIB)
    write_at(image, 20 * MIB, b"conectiX")
    info = vhd.inspect(image)
    assert "bad-cookie" in codes(info)
    assert info.format == "vhd-fixed"
    assert not info.azure_ready


def test_bad_checksum(tmp_path):
    image = make_fixed(tmp_path / "s.vhd", 20 * MIB)
    write_at(image, 20 * MIB + 24, b"\x01\x02\x03\x04")  # timestamp changed, checksum not
    info = vhd.inspect(image)
    assert codes(info) == {"bad-checksum"}
    assert not info.azure_ready


def test_dynamic_vhd_is_reported_not_ready(tmp_path):
    image = make_dynamic(tmp_path / "d.vhd", 20 * MIB, {1: b"data"})
    info = vhd.inspect(image)
    assert info.format == "vhd-dynamic"
    assert codes(info) == {"dynamic"}
    assert info.virtual_size == 20 * MIB
    assert info.dynamic_header is not None
    assert info.dynamic_header.block_size == 2 * MIB
    assert not info.azure_ready


def test_differencing_vhd(tmp_path):
    image = make_dynamic(tmp_path / "diff.vhd", 20 * MIB, {})
    raw = image.read_bytes()
    footer = patch_footer(raw[:512], disk_type=vhd.DISK_DIFFERENCING)
    image.write_bytes(footer + raw[512:-512] + footer)
    info = vhd.inspect(image)
    assert info.format == "vhd-differencing"
    assert "differencing" in codes(info)


def test_unknown_disk_type(tmp_path):
    image = make_fixed(tmp_path / "t.vhd", 20 * MIB)
    write_at(image, 20 * MIB, patch_footer(vhd.build_footer(20 * MIB), disk_type=7))
    info = vhd.inspect(image)
    assert info.format == "unknown"
    assert "bad-disk-type" in codes(info)


def test_trailing_garbage_after_the_footer(tmp_path):
    image = make_fixed(tmp_path / "g.vhd", 20 * MIB, {0: b"boot"})
    with image.open("ab") as f:
        f.write(b"\xab" * 1000)
    info = vhd.inspect(image)
    assert codes(info) == {"footer-not-at-end"}
    assert info.format == "vhd-fixed"
    assert info.footer is not None
    assert info.footer.offset == 20 * MIB
    assert "1,000 more bytes" in info.problems[0].message


def test_space_appended_after_conversion_is_found_through_holes(tmp_path):
    # nixpkgs' `truncate -s +512M` after the conversion: the old footer ends up mid-file.
    image = make_fixed(tmp_path / "grown.vhd", 20 * MIB, {0: b"boot"})
    os.truncate(image, image.stat().st_size + 512 * MIB)
    info = vhd.inspect(image)
    assert "footer-not-at-end" in codes(info)
    assert not info.azure_ready


def test_size_mismatch(tmp_path):
    image = make_raw(tmp_path / "m.vhd", 20 * MIB, {})
    with image.open("ab") as f:
        f.write(vhd.build_footer(24 * MIB))
    info = vhd.inspect(image)
    assert codes(info) == {"size-mismatch"}
    assert "24" in info.problems[0].message


def test_size_not_whole_mib(tmp_path):
    image = make_fixed(tmp_path / "n.vhd", 20 * MIB + 512)
    info = vhd.inspect(image)
    assert codes(info) == {"size-not-mib"}


def test_too_small(tmp_path):
    image = make_fixed(tmp_path / "tiny.vhd", MIB)
    assert codes(vhd.inspect(image)) == {"too-small"}


def test_too_large(tmp_path):
    image = make_fixed(tmp_path / "huge.vhd", 20 * MIB)
    write_at(image, 20 * MIB, vhd.build_footer(33 << 40))
    assert codes(vhd.inspect(image)) == {"too-large", "size-mismatch"}


def test_saved_state_and_version_warnings(tmp_path):
    image = make_fixed(tmp_path / "w.vhd", 20 * MIB)
    write_at(image, 20 * MIB, patch_footer(vhd.build_footer(20 * MIB), saved_state=1))
    info = vhd.inspect(image)
    assert codes(info) == {"saved-state"}
    assert info.azure_ready  # a warning only


def test_truncated_dynamic_vhd(tmp_path):
    image = make_dynamic(tmp_path / "d.vhd", 20 * MIB, {0: b"a", 5: b"b"})
    raw = image.read_bytes()
    image.write_bytes(raw[: len(raw) // 2])
    info = vhd.inspect(image)
    assert info.format == "vhd-dynamic"
    assert "truncated" in codes(info)


@pytest.mark.parametrize(
    ("offset", "value"),
    [(28, 0xFFFFFFFF), (32, 3 * 1024), (32, 1 << 30), (0, 0x6378737061727300)],
    ids=["huge-table", "block-not-power-of-two", "huge-block", "bad-cookie"],
)
def test_damaged_dynamic_header(tmp_path, offset, value):
    image = make_dynamic(tmp_path / "d.vhd", 20 * MIB, {0: b"a"})
    header = bytearray(image.read_bytes()[512:1536])
    struct.pack_into(">I" if offset else ">Q", header, offset, value)
    struct.pack_into(">I", header, 36, vhd.vhd_checksum(bytes(header), 36))
    write_at(image, 512, bytes(header))
    info = vhd.inspect(image)
    assert "bad-dynamic-header" in codes(info)
    with pytest.raises(ImageError, match="damaged"):
        vhd.convert(image, tmp_path / "out.vhd")


def test_truncated_footer(tmp_path):
    image = tmp_path / "short.vhd"
    image.write_bytes(vhd.build_footer(20 * MIB)[:300])
    info = vhd.inspect(image)
    assert "truncated" in codes(info)


def test_empty_file(tmp_path):
    image = tmp_path / "empty.vhd"
    image.touch()
    info = vhd.inspect(image)
    assert info.format == "unknown"
    assert codes(info) == {"empty"}


def test_raw_image(tmp_path):
    image = make_raw(tmp_path / "disk.raw", 21 * MIB, {510: b"\x55\xaa"})
    info = vhd.inspect(image)
    assert info.format == "raw"
    assert info.virtual_size == 21 * MIB
    assert codes(info) == {"not-vhd"}


def test_raw_image_of_odd_size(tmp_path):
    image = make_raw(tmp_path / "odd.raw", 21 * MIB + 100, {0: b"x"})
    assert codes(vhd.inspect(image)) == {"not-vhd", "raw-unaligned"}


def test_qcow2_by_magic(tmp_path):
    header = b"QFI\xfb" + struct.pack(">I", 3) + bytes(16) + struct.pack(">Q", 64 * MIB)
    image = tmp_path / "disk.qcow2"
    image.write_bytes(header.ljust(4096, b"\0"))
    info = vhd.inspect(image)
    assert info.format == "qcow2"
    assert info.virtual_size == 64 * MIB
    assert codes(info) == {"not-vhd"}


def test_vhdx_is_named(tmp_path):
    image = tmp_path / "disk.vhdx"
    image.write_bytes(b"vhdxfile".ljust(1 << 16, b"\0"))
    info = vhd.inspect(image)
    assert info.format == "unknown"
    assert "VHDX" in info.problems[0].message


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    image = make_raw(tmp_path / "many.vhd", MIB + 512, {})
    with image.open("ab") as f:
        f.write(patch_footer(vhd.build_footer(MIB + 512), checksum=1))
    assert codes(vhd.inspect(image)) == {"bad-checksum", "size-not-mib", "too-small"}


# --------------------------------------------------------------------------- unreadable inputs


def test_missing_file_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        vhd.inspect(tmp_path / "nope.vhd")


def test_directory_raises_image_error(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        vhd.inspect(tmp_path)


def test_unreadable_file_raises_image_error(tmp_path, monkeypatch):
    image = make_fixed(tmp_path / "secret.vhd", 20 * MIB)
    if os.geteuid() == 0:
        # root reads any file whatever its mode: simulate the kernel's refusal instead.
        def refuse(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")

        monkeypatch.setattr(os, "open", refuse)
    else:
        image.chmod(0)
    with pytest.raises(ImageError, match="permission denied"):
        vhd.inspect(image)


def test_require_azure_ready_names_problems_and_the_fix(tmp_path):
    image = make_fixed(tmp_path / "n.vhd", 20 * MIB + 512)
    with pytest.raises(ImageError) as raised:
        vhd.require_azure_ready(image)
    line = raised.value.one_line()
    assert "size-not-mib" in line
    assert "nixos-azure-publish convert" in line
    assert "\n" not in line


# --------------------------------------------------------------------------- extents


def test_extents_cover_exactly_the_nonzero_sectors(tmp_path):
    rng = random.Random(7)  # noqa: S311 - reproducible layouts, not secrets
    writes = {0: b"\x01"}
    for _ in range(60):
        offset = rng.randrange(0, 40 * MIB)
        writes[offset] = rng.randbytes(rng.choice([1, 700, 5000, 70000, 3 * MIB]))
    writes[40 * MIB - 1] = b"\x02"  # the last byte of the disk
    image = make_raw(tmp_path / "r.raw", 40 * MIB, writes)
    # Written zeros are data to the filesystem but not to us.
    write_at(image, 30 * MIB, bytes(2 * MIB))
    extents = vhd.data_extents(image)
    assert merged(extents) == brute_force_extents(image)
    for e in extents:
        assert e.offset % SECTOR == 0
        assert e.length % SECTOR == 0
        assert 0 < e.length <= 4 * MIB
    assert [e.offset for e in extents] == sorted(e.offset for e in extents)


def test_extents_split_at_max_extent_and_include_the_footer(tmp_path):
    image = make_fixed(tmp_path / "f.vhd", 20 * MIB, {MIB: b"\x07" * (3 * MIB)})
    extents = vhd.data_extents(image, max_extent=MIB)
    assert extents == [
        vhd.Extent(MIB, MIB),
        vhd.Extent(2 * MIB, MIB),
        vhd.Extent(3 * MIB, MIB),
        vhd.Extent(20 * MIB, 512),
    ]
    assert vhd.data_bytes(extents) == 3 * MIB + 512


@pytest.mark.parametrize("max_extent", [512, 4096, 3 * MIB, 4 * MIB, 64 * MIB])
def test_extents_are_the_nonzero_runs_cut_from_their_start(tmp_path, max_extent):
    # Runs that cross the 4 MiB read chunks, touch each other and end at the end of the file.
    rng = random.Random(max_extent)  # noqa: S311 - reproducible layouts, not secrets
    writes = {offset: rng.randbytes(length) for offset, length in [
        (3 * MIB + 4096, 6 * MIB), (9 * MIB + 4096, 700), (16 * MIB - 512, 1024),
        (20 * MIB, 9 * MIB), (32 * MIB - 5, 5)]}  # fmt: skip
    image = make_raw(tmp_path / "r.raw", 32 * MIB, writes)
    expected = [
        vhd.Extent(offset, min(max_extent, end - offset))
        for start, end in brute_force_extents(image)
        for offset in range(start, end, max_extent)
    ]
    assert vhd.data_extents(image, max_extent=max_extent) == expected
    # Read piece by piece, the non-zero runs of the data regions are the same data.
    content = image.read_bytes()
    pieces = vhd.data_pieces(image, max_extent=max_extent)
    assert all(0 < p.length <= max_extent and p.offset % SECTOR == 0 for p in pieces)
    runs = [
        vhd.Extent(p.offset + lo, hi - lo)
        for p in pieces
        for lo, hi in vhd.sector_runs(content[p.offset : p.offset + p.length], 0, p.length)
    ]
    assert merged(runs) == brute_force_extents(image)


def test_extents_of_a_sparse_file_with_no_data(tmp_path):
    image = make_raw(tmp_path / "zero.raw", 64 * MIB, {})
    assert vhd.data_extents(image) == []


def test_extents_of_an_odd_sized_file_end_on_a_sector(tmp_path):
    image = make_raw(tmp_path / "odd.raw", 1000, {999: b"\x01"})
    assert vhd.data_extents(image) == [vhd.Extent(512, 512)]


def test_the_bytes_past_the_end_of_an_odd_sized_file_read_as_zeros(tmp_path):
    # A full first buffer, then a short last read: nothing of the first may leak into the last.
    image = make_raw(tmp_path / "odd.raw", 4 * MIB + 1000, {0: b"\xff" * (4 * MIB)})
    write_at(image, 4 * MIB, bytes(1000))
    assert merged(vhd.data_extents(image)) == [(0, 4 * MIB)]


def test_extents_without_hole_support_read_everything(tmp_path, monkeypatch):
    # A filesystem without SEEK_DATA cannot be had here: make lseek refuse it.
    image = make_raw(tmp_path / "r.raw", 8 * MIB, {5 * MIB + 3: b"\x09"})
    real_lseek = os.lseek

    def lseek(fd, pos, how):
        if how in {os.SEEK_DATA, os.SEEK_HOLE}:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_lseek(fd, pos, how)

    monkeypatch.setattr(os, "lseek", lseek)
    assert vhd.data_extents(image) == [vhd.Extent(5 * MIB, 512)]


def test_extents_reject_a_bad_max_extent(tmp_path):
    image = make_raw(tmp_path / "r.raw", MIB, {})
    with pytest.raises(ValueError, match="multiple of 512"):
        vhd.data_extents(image, max_extent=1000)


# --------------------------------------------------------------------------- convert


def _data_area(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def test_convert_raw_rounds_up_and_appends_a_footer(tmp_path):
    size = 20 * MIB + 3 * 512 + 17
    src = make_raw(tmp_path / "in.raw", size, {0: b"boot", 10 * MIB: b"mid", size - 1: b"\xee"})
    before = (digest(src), src.stat().st_mtime_ns)
    result = vhd.convert(src, tmp_path / "out.vhd")
    out = tmp_path / "out.vhd"
    assert (digest(src), src.stat().st_mtime_ns) == before
    assert result.source_format == "raw"
    assert result.virtual_size == 21 * MIB
    assert result.azure_ready
    assert out.stat().st_size == 21 * MIB + 512
    assert _data_area(out, 21 * MIB) == src.read_bytes().ljust(21 * MIB, b"\0")
    info = vhd.inspect(out)
    assert info.azure_ready
    assert info.footer is not None
    assert info.footer.checksum_ok
    # Sparse: a few written sectors, not 21 MiB of zeros.
    assert out.stat().st_blocks * 512 < MIB
    assert result.data_bytes == 3 * 512 + 512


def test_convert_fixed_with_non_mib_size_moves_the_footer(tmp_path):
    src = make_fixed(tmp_path / "in.vhd", 20 * MIB + 512, {20 * MIB: b"last sector"})
    vhd.convert(src, tmp_path / "out.vhd")
    out = tmp_path / "out.vhd"
    info = vhd.inspect(out)
    assert info.azure_ready
    assert info.virtual_size == 21 * MIB
    assert _data_area(out, 21 * MIB) == _data_area(src, 20 * MIB + 512).ljust(21 * MIB, b"\0")


def test_convert_keeps_what_follows_a_misplaced_footer_and_drops_the_old_footer(tmp_path):
    src = make_fixed(tmp_path / "in.vhd", 20 * MIB, {0: b"boot"})
    with src.open("ab") as f:
        f.write(b"\xab" * 1024)
    vhd.convert(src, tmp_path / "out.vhd")
    out = tmp_path / "out.vhd"
    info = vhd.inspect(out)
    assert info.azure_ready
    assert info.virtual_size == 21 * MIB
    data = _data_area(out, 21 * MIB)
    assert data[:4] == b"boot"
    assert data[20 * MIB : 20 * MIB + 512] == bytes(512)  # the old footer is gone
    assert data[20 * MIB + 512 : 20 * MIB + 1536] == b"\xab" * 1024


def test_convert_dynamic_walks_the_bat_and_honours_the_sector_bitmap(tmp_path):
    block = 2 * MIB
    blocks = {0: b"first" + bytes(600) + b"second sector", 4: b"\x05" * block, 9: b"last"}
    # Block 4's bitmap marks only its first sector as written: the rest reads as zeros.
    bitmap = (b"\x80" + bytes(511)) if block // SECTOR // 8 == 512 else b"\x80"
    src = make_dynamic(tmp_path / "in.vhd", 20 * MIB, blocks, bitmaps={4: bitmap})
    before = digest(src)
    result = vhd.convert(src, tmp_path / "out.vhd")
    assert digest(src) == before
    out = tmp_path / "out.vhd"
    assert vhd.inspect(out).azure_ready
    expected = bytearray(20 * MIB)
    expected[0 : len(blocks[0])] = blocks[0]
    expected[4 * block : 4 * block + SECTOR] = b"\x05" * SECTOR
    expected[9 * block : 9 * block + 4] = b"last"
    assert _data_area(out, 20 * MIB) == bytes(expected)
    assert result.data_bytes == 4 * SECTOR + 512
    assert "3 allocated blocks" in result.actions[0]


def test_convert_refuses_to_overwrite(tmp_path):
    src = make_raw(tmp_path / "in.raw", 20 * MIB, {})
    (tmp_path / "out.vhd").write_bytes(b"keep me")
    with pytest.raises(ImageError, match="already exists"):
        vhd.convert(src, tmp_path / "out.vhd")
    assert (tmp_path / "out.vhd").read_bytes() == b"keep me"
    vhd.convert(src, tmp_path / "out.vhd", overwrite=True)
    assert vhd.inspect(tmp_path / "out.vhd").azure_ready


def test_convert_never_writes_over_its_input(tmp_path):
    src = make_raw(tmp_path / "in.raw", 20 * MIB, {})
    with pytest.raises(ImageError, match="is the input file"):
        vhd.convert(src, src, overwrite=True)


def test_convert_refuses_a_damaged_dynamic_vhd(tmp_path):
    src = make_dynamic(tmp_path / "d.vhd", 20 * MIB, {0: b"a", 5: b"b"})
    raw = src.read_bytes()
    src.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="damaged"):
        vhd.convert(src, tmp_path / "out.vhd")
    assert not (tmp_path / "out.vhd").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["d.vhd"]  # no temporary left behind


def test_convert_refuses_a_differencing_vhd(tmp_path):
    # qemu-img would read the sectors that live in the parent as zeros: silent data loss.
    image = make_dynamic(tmp_path / "diff.vhd", 20 * MIB, {0: b"x"})
    raw = image.read_bytes()
    footer = patch_footer(raw[:512], disk_type=vhd.DISK_DIFFERENCING)
    image.write_bytes(footer + raw[512:-512] + footer)
    with pytest.raises(ImageError, match="parent"):
        vhd.convert(image, tmp_path / "out.vhd")
    assert not (tmp_path / "out.vhd").exists()


def test_an_interrupted_convert_leaves_nothing_behind(tmp_path, monkeypatch):
    src = make_raw(tmp_path / "in.raw", 20 * MIB, {0: b"a", 10 * MIB: b"b"})
    real = conversion._pwrite_all
    calls = []

    def interrupt_second_write(fd, data, offset):
        calls.append(offset)
        if len(calls) == 2:  # Ctrl-C in the middle of the copy
            raise KeyboardInterrupt
        return real(fd, data, offset)

    monkeypatch.setattr(conversion, "_pwrite_all", interrupt_second_write)
    with pytest.raises(KeyboardInterrupt):
        vhd.convert(src, tmp_path / "out.vhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.raw"]


def test_convert_qcow2_without_qemu_img_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    src = tmp_path / "disk.qcow2"
    src.write_bytes(b"QFI\xfb".ljust(4096, b"\0"))
    with pytest.raises(ImageError) as raised:
        vhd.convert(src, tmp_path / "out.vhd")
    assert "qemu-img" in raised.value.message
    assert raised.value.hint is not None
    assert "qemu-utils" in raised.value.hint


# --------------------------------------------------------------------------- CLI


def test_cli_inspect_json_and_exit_codes(tmp_path, capsys):
    good = make_fixed(tmp_path / "good.vhd", 20 * MIB, {0: b"x"})
    assert main(["inspect", "--json", str(good)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["azure_ready"] is True
    assert data["format"] == "vhd-fixed"
    assert data["data_bytes"] == 1024
    assert data["problems"] == []
    assert data["footer"]["diskType"] == "fixed"

    bad = make_fixed(tmp_path / "bad.vhd", 20 * MIB + 512)
    assert main(["--json", "inspect", str(bad)]) == 3
    data = json.loads(capsys.readouterr().out)
    assert data["azure_ready"] is False
    assert [p["code"] for p in data["problems"]] == ["size-not-mib"]


def test_cli_inspect_human_output(tmp_path, capsys):
    bad = make_dynamic(tmp_path / "d.vhd", 20 * MIB, {})
    assert main(["inspect", str(bad)]) == 3
    out = capsys.readouterr().out
    assert "dynamic VHD" in out
    assert "error: dynamic:" in out
    assert "NOT ready for Azure" in out


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "garbage", "truncated"])
def test_cli_bad_inputs_fail_cleanly(tmp_path, capsys, kind):
    path = tmp_path / "x.vhd"
    if kind == "directory":
        path.mkdir()
    elif kind == "empty":
        path.touch()
    elif kind == "garbage":
        path.write_bytes(b"conectix" + b"\xff" * 100)
    elif kind == "truncated":
        make_dynamic(path, 20 * MIB, {0: b"a"})
        path.write_bytes(path.read_bytes()[:2000])
    # A missing input is a usage error (2); an unusable one is a bad image (3).
    expected = 2 if kind == "missing" else 3
    for argv in (["inspect", str(path)], ["convert", str(path), str(tmp_path / "o.vhd")]):
        assert main(argv) == expected, argv
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err + captured.out
        assert "error" in captured.err + captured.out
    assert not (tmp_path / "o.vhd").exists()


def test_cli_convert(tmp_path, capsys):
    src = make_raw(tmp_path / "in.raw", 20 * MIB + 512, {0: b"x"})
    assert main(["convert", str(src), str(tmp_path / "out.vhd")]) == 0
    out = capsys.readouterr().out
    assert "rounded the virtual size up" in out
    assert "ready for Azure" in out
    assert main(["convert", "--json", str(src), str(tmp_path / "out.vhd")]) == 3
    assert "already exists" in capsys.readouterr().err
    assert main(["convert", "--force", "--json", str(src), str(tmp_path / "out.vhd")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["azure_ready"] is True
    assert data["virtual_size"] == 21 * MIB


def test_cli_commands_have_help():
    for command in (image_cmd.inspect, image_cmd.convert):
        assert command.help
        for param in command.params:
            if param.param_type_name == "option":
                assert getattr(param, "help", None), (command.name, param.name)

"""Making images for tests: sparse raw files, small fixed VHDs, and the slow, obviously
right answers the scanners are compared with."""

from __future__ import annotations

import random
import struct
import subprocess
from typing import TYPE_CHECKING

from nixos_azure_publish import vhd
from nixos_azure_publish.vhd import SECTOR

if TYPE_CHECKING:
    from pathlib import Path

MiB = 1024 * 1024


def make_raw(path: Path, size: int, writes: dict[int, bytes]) -> Path:
    """A sparse file of *size* bytes with *writes* (offset -> bytes) in it."""
    with path.open("wb") as f:
        f.truncate(size)
        for offset, data in writes.items():
            f.seek(offset)
            f.write(data)
    return path


def make_image(folder: Path, *, seed: int = 1, size_mib: int = 24, data_mib: int = 0) -> Path:
    """A small fixed VHD with data at a few places (sparse elsewhere).

    *data_mib* adds that many MiB of random data from offset 10 MiB, for uploads
    that must last long enough to be interrupted.
    """
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(size_mib * MiB)
        for i, offset in enumerate((0, 3 * MiB + 4096, 9 * MiB, (size_mib - 1) * MiB)):
            handle.seek(offset)
            handle.write(bytes([(seed + i) % 251 + 1]) * (70_000 + 1000 * seed))
        handle.seek(10 * MiB)
        handle.write(random.Random(seed).randbytes(data_mib * MiB))  # noqa: S311 - test data
    out = folder / "disk.vhd"
    vhd.convert(raw, out, overwrite=True)
    raw.unlink()
    return out


def brute_force_extents(path: Path) -> list[tuple[int, int]]:
    """Every non-zero 512-byte sector, merged: the slow, obviously right answer."""
    data = path.read_bytes()
    data += bytes(-len(data) % SECTOR)
    runs: list[list[int]] = []
    for offset in range(0, len(data), SECTOR):
        if data[offset : offset + SECTOR] != bytes(SECTOR):
            if runs and runs[-1][1] == offset:
                runs[-1][1] += SECTOR
            else:
                runs.append([offset, offset + SECTOR])
    return [(a, b) for a, b in runs]


def merged(extents: list[vhd.Extent]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for e in extents:
        if out and out[-1][1] == e.offset:
            out[-1][1] += e.length
        else:
            out.append([e.offset, e.offset + e.length])
    return [(a, b) for a, b in out]


def qemu_convert(qemu_img: str, src: Path, dst: Path, *options: str) -> Path:
    """``qemu-img convert OPTIONS SRC DST``, which must succeed; *dst*."""
    done = subprocess.run(
        [qemu_img, "convert", *options, str(src), str(dst)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return dst


def qemu_vhd(qemu_img: str, raw: Path, dst: Path, subformat: str = "fixed,force_size") -> Path:
    """A VHD of the raw disk *raw* made by qemu-img; by default as nixpkgs makes Azure images."""
    return qemu_convert(
        qemu_img, raw, dst, "-f", "raw", "-O", "vpc", "-o", f"subformat={subformat}"
    )


def patch_footer(raw: bytes, **fields: int | bytes) -> bytes:
    """Change footer fields by name and fix the checksum (unless `checksum` is given)."""
    layout = {
        "cookie": (0, "8s"),
        "version": (12, ">I"),
        "data_offset": (16, ">Q"),
        "current_size": (48, ">Q"),
        "disk_type": (60, ">I"),
        "checksum": (64, ">I"),
        "saved_state": (84, "B"),
    }
    out = bytearray(raw)
    for name, value in fields.items():
        offset, fmt = layout[name]
        struct.pack_into(fmt, out, offset, value)
    if "checksum" not in fields:
        struct.pack_into(">I", out, 64, vhd.vhd_checksum(bytes(out), 64))
    return bytes(out)


def make_fixed(path: Path, size: int, writes: dict[int, bytes] | None = None) -> Path:
    """A fixed VHD of virtual *size* with our own footer."""
    make_raw(path, size, writes or {})
    with path.open("ab") as f:
        f.write(vhd.build_footer(size))
    return path


def make_dynamic(
    path: Path,
    virtual: int,
    blocks: dict[int, bytes],
    *,
    block_size: int = 2 * MiB,
    bitmaps: dict[int, bytes] | None = None,
) -> Path:
    """A dynamic VHD as the specification lays it out: footer copy, header, BAT, blocks, footer."""
    entries = -(-virtual // block_size)
    table_offset = 512 + 1024
    table_len = -(-entries * 4 // SECTOR) * SECTOR
    bitmap_len = -(-(block_size // SECTOR // 8) // SECTOR) * SECTOR
    footer = patch_footer(vhd.build_footer(virtual), disk_type=vhd.DISK_DYNAMIC, data_offset=512)
    header = bytearray(1024)
    struct.pack_into(
        ">8sQQIII",
        header,
        0,
        b"cxsparse",
        vhd.FIXED_DATA_OFFSET,
        table_offset,
        0x00010000,
        entries,
        block_size,
    )
    struct.pack_into(">I", header, 36, vhd.vhd_checksum(bytes(header), 36))
    table = [vhd.UNALLOCATED] * entries
    body = bytearray()
    next_sector = (table_offset + table_len) // SECTOR
    for index in sorted(blocks):
        table[index] = next_sector
        bitmap = (bitmaps or {}).get(index, b"\xff" * (block_size // SECTOR // 8))
        body += bitmap.ljust(bitmap_len, b"\0")
        body += blocks[index].ljust(block_size, b"\0")
        next_sector += (bitmap_len + block_size) // SECTOR
    bat = struct.pack(f">{entries}I", *table).ljust(table_len, b"\xff")
    path.write_bytes(footer + bytes(header) + bat + bytes(body) + footer)
    return path

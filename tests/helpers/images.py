"""Making images for tests: sparse raw files, small fixed VHDs, and the slow, obviously
right answers the scanners are compared with."""

from __future__ import annotations

import random
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

"""Reading a piece of the image for upload: runs and checksums in one pass."""

from __future__ import annotations

import errno
import os
import random
from typing import TYPE_CHECKING

import pytest

from nixos_azure_publish import checksum, vhd
from nixos_azure_publish.errors import ImageError
from nixos_azure_publish.upload import piece

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.unit

KIB = 1024
MIB = 1024 * KIB
CHUNK = piece.CACHE_CHUNK


def brute_force_runs(data: bytes) -> list[tuple[int, int]]:
    """The runs of *data* that are not whole all-zero sectors, sector by sector."""
    runs: list[list[int]] = []
    for lo in range(0, len(data), 512):
        if any(data[lo : lo + 512]):
            if runs and runs[-1][1] == lo:
                runs[-1][1] = lo + 512
            else:
                runs.append([lo, lo + 512])
    return [(lo, hi) for lo, hi in runs]


def layout(rng: random.Random, length: int) -> bytes:
    """Random data with zero sectors and zero runs, many on and across chunk edges."""
    data = bytearray(rng.randbytes(length))
    edges = list(range(CHUNK, length, CHUNK))
    for _ in range(rng.randrange(0, 12)):
        if edges and rng.random() < 0.6:
            at = rng.choice(edges) + 512 * rng.randrange(-3, 3)
        else:
            at = 512 * rng.randrange(0, length // 512)
        size = 512 * rng.choice([1, 2, 7, 128, 600])
        at = max(0, min(at, length - 1))
        data[at : at + size] = bytes(len(data[at : at + size]))
    # A zero byte run shorter than a sector, and one across a sector edge: data.
    data[1000:1300] = bytes(300)
    return bytes(data)


@pytest.fixture
def image(tmp_path: Path):
    def write(data: bytes, at: int = 0) -> int:
        path = tmp_path / "piece.img"
        with path.open("wb") as handle:
            handle.truncate(at + len(data) + 4096)
            handle.seek(at)
            handle.write(data)
        return os.open(path, os.O_RDONLY)

    return write


@pytest.mark.parametrize("kind", ["crc64", "md5", None])
def test_runs_and_checksums_equal_a_separate_scan_of_the_whole_piece(image, kind):
    rng = random.Random(f"piece-{kind}")  # noqa: S311 - reproducible test data
    buffer = bytearray(4 * MIB)
    for length in [512, 4096, CHUNK, CHUNK + 512, 3 * CHUNK - 512, 4 * MIB]:
        for _ in range(4):
            data = layout(rng, length)
            fd = image(data, at=8 * MIB)
            try:
                runs = piece.read_piece(fd, buffer, 8 * MIB, length, kind)
            finally:
                os.close(fd)
            expected = brute_force_runs(data)
            assert [(r.start, r.end) for r in runs] == expected
            assert [(r.start, r.end) for r in runs] == list(vhd.sector_runs(data, 0, length))
            for run in runs:
                body = data[run.start : run.end]
                assert bytes(buffer[run.start : run.end]) == body
                want = checksum.header(kind, body) if kind else None
                assert run.checksum == want


def test_an_all_zero_piece_has_no_runs_and_a_dense_one_a_single_run(image):
    buffer = bytearray(4 * MIB)
    fd = image(bytes(2 * MIB))
    assert piece.read_piece(fd, buffer, 0, 2 * MIB, "crc64") == []
    os.close(fd)
    data = random.Random(3).randbytes(4 * MIB)  # noqa: S311 - test data
    fd = image(data)
    [run] = piece.read_piece(fd, buffer, 0, 4 * MIB, "crc64")
    os.close(fd)
    assert (run.start, run.end) == (0, 4 * MIB)
    assert run.checksum == checksum.header("crc64", data)


def test_the_piece_is_read_in_chunks_each_once(image, monkeypatch):
    reads: list[tuple[int, int]] = []
    real = os.preadv

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        got = real(fd, buffers, offset)
        reads.append((offset, got))
        return got

    fd = image(random.Random(5).randbytes(MIB + 512))  # noqa: S311 - test data
    monkeypatch.setattr(os, "preadv", preadv)
    piece.read_piece(fd, bytearray(4 * MIB), 0, MIB + 512, None)
    os.close(fd)
    assert reads == [(0, CHUNK), (CHUNK, CHUNK), (2 * CHUNK, CHUNK), (3 * CHUNK, CHUNK), (MIB, 512)]


def test_a_file_that_ends_inside_the_piece_is_an_image_error(tmp_path):
    path = tmp_path / "short.img"
    path.write_bytes(b"\x01" * 3000)
    fd = os.open(path, os.O_RDONLY)
    with pytest.raises(ImageError, match="ended early at byte 3000: it changed during the upload"):
        piece.read_piece(fd, bytearray(MIB), 0, 4096, "crc64")
    os.close(fd)


def test_a_read_error_names_the_piece(image, monkeypatch):
    fd = image(b"\x01" * MIB)

    def failing(fd: int, buffers: list[memoryview], offset: int) -> int:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "preadv", failing)
    with pytest.raises(ImageError, match=r"at bytes 0-1048575: .*Input/output error"):
        piece.read_piece(fd, bytearray(MIB), 0, MIB, None)
    os.close(fd)


@pytest.mark.parametrize(
    ("offset", "length", "buffer"), [(100, 512, 4096), (0, 1000, 4096), (0, 8192, 4096)]
)
def test_pieces_are_whole_sectors_that_fit_the_buffer(offset, length, buffer):
    with pytest.raises(ValueError, match="whole sectors"):
        piece.read_piece(-1, bytearray(buffer), offset, length, None)


def test_sector_runs_searches_part_of_a_buffer_in_place():
    data = bytearray(random.Random(9).randbytes(8192))  # noqa: S311 - test data
    data[1024:2048] = bytes(1024)
    assert list(vhd.sector_runs(data, 512, 4096)) == [(512, 1024), (2048, 4096)]
    assert list(vhd.sector_runs(data, 1024, 2048)) == []
    for start, end in [(100, 512), (0, 1000), (512, 9216), (1024, 512)]:
        with pytest.raises(ValueError, match="sector boundaries"):
            vhd.sector_runs(data, start, end)

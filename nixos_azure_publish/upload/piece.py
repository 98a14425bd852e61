"""Reading one piece of the image for upload: its non-zero runs and their checksums.

A piece is at most one Put Page (4 MiB) of a data region. It is read into the
caller's buffer in chunks of :data:`CACHE_CHUNK` bytes, and each chunk is searched
for all-zero sectors and checksummed right after it is read, while it is still
in the CPU's cache. Reading the whole piece first and then searching and
checksumming it costs about twice the CPU here: by then the piece has left the
cache, and the zero search reads one byte in every 512 from memory, which the
CPU cannot prefetch (bench/RESULTS.md has the figures).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from nixos_azure_publish import checksum as checksums
from nixos_azure_publish import vhd
from nixos_azure_publish.errors import ImageError

CACHE_CHUNK: Final = 256 * 1024
"""Bytes read, searched and checksummed at a time: well inside a core's L2 cache."""


@dataclass(frozen=True, slots=True)
class Run:
    """A run of the piece that is not whole all-zero sectors: the bytes to send."""

    start: int
    """Offset in the piece (and in the buffer)."""
    end: int
    checksum: tuple[str, str] | None
    """The request header that carries the run's checksum, when one was asked for."""


def read_piece(
    fd: int, buf: bytearray, offset: int, length: int, kind: checksums.Kind | None
) -> list[Run]:
    """Read *length* bytes at *offset* of *fd* into *buf*; the piece's non-zero runs.

    *offset* and *length* are multiples of 512 and *buf* holds at least
    *length* bytes. Raises :class:`ImageError` when the file cannot be read or
    ends before the piece does.
    """
    if offset % vhd.SECTOR or length % vhd.SECTOR or length > len(buf):
        msg = f"a piece is whole sectors that fit the buffer, not {length} bytes at {offset}"
        raise ValueError(msg)
    view = memoryview(buf)
    runs: list[Run] = []
    start = end = -1
    running: checksums.Running | None = None
    for chunk in range(0, length, CACHE_CHUNK):
        chunk_end = min(length, chunk + CACHE_CHUNK)
        _read_exactly(fd, view[chunk:chunk_end], offset + chunk, offset, length)
        for lo, hi in vhd.sector_runs(buf, chunk, chunk_end):
            if lo != end:  # not the continuation of a run from the chunk before
                if start >= 0:
                    runs.append(Run(start, end, running.header() if running else None))
                start = lo
                running = checksums.Running(kind) if kind else None
            if running is not None:
                running.update(view[lo:hi])
            end = hi
    if start >= 0:
        runs.append(Run(start, end, running.header() if running else None))
    return runs


def _read_exactly(fd: int, view: memoryview, at: int, offset: int, length: int) -> None:
    done, error = vhd.read_fully(fd, view, at)
    if error is not None:
        raise ImageError(
            f"cannot read the image at bytes {offset}-{offset + length - 1}: {error}"
        ) from error
    if done < len(view):
        raise ImageError(
            f"the image ended early at byte {at + done}: it changed during the upload",
            hint="Do not modify the image while it uploads; rerun",
        )

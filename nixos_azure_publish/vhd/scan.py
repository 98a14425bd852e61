"""Scanning an image for data without reading its holes: data regions, non-zero runs, extents.

Everything here reads through ``os.pread`` with ``SEEK_DATA`` / ``SEEK_HOLE``:
holes are never read, and memory stays bounded by one read buffer.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import stat
from typing import TYPE_CHECKING, Final, NamedTuple

from nixos_azure_publish.errors import ImageError
from nixos_azure_publish.vhd.format import MIB, SECTOR, round_up

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_MAX_EXTENT: Final = 4 * MIB
"""The longest extent :func:`data_extents` returns unless told otherwise: one Put Page."""
READ_BUFFER: Final = 4 * MIB
"""Bytes read at a time when scanning a file; a scan's memory use is about this."""
ZERO_SECTOR: Final = bytes(SECTOR)
_ZERO_BLOCK_SIZE: Final = 64 * 1024
_ZERO_BLOCK: Final = bytes(_ZERO_BLOCK_SIZE)

Span = tuple[int, int]
"""A byte range ``[start, end)``: the one type for a range of bytes in an image or a blob
(see the glossary in :mod:`nixos_azure_publish.upload`)."""


class Extent(NamedTuple):
    """A byte range of the file that holds data: 512-aligned, at most a few MiB long."""

    offset: int
    length: int


def _unusable(path: Path, error: OSError, *, doing: str) -> ImageError:
    """The error for a file this user cannot *doing* (read, open)."""
    if isinstance(error, PermissionError):
        return ImageError(f"{path}: permission denied", hint="Make the file readable by this user")
    return ImageError(f"{path}: cannot {doing}: {error.strerror}", hint="Check the path")


@contextlib.contextmanager
def open_image(path: Path) -> Iterator[tuple[int, int]]:
    """Open *path* read-only; yield ``(fd, size)``. Every OS failure becomes an ImageError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(
            f"{path}: no such file", hint="Check the path, or build the image first"
        ) from None
    except OSError as exc:
        raise _unusable(path, exc, doing="read") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(
            f"{path} is a directory, not an image file",
            hint="Pass the image file itself (for a Nix build output: the *.vhd inside it)",
        )
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path} is not a regular file", hint="Pass an image file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise _unusable(path, exc, doing="open") from None
    try:
        yield fd, os.fstat(fd).st_size
    finally:
        os.close(fd)


def pread(fd: int, length: int, offset: int, path: Path) -> bytes:
    try:
        return os.pread(fd, length, offset)
    except OSError as exc:
        raise ImageError(
            f"{path}: read error at offset {offset}: {exc.strerror}",
            hint="The file or the disk under it is damaged; rebuild or copy it again",
        ) from None


def data_regions(fd: int, size: int) -> list[Span]:
    """Regions the filesystem says may hold data, 512-aligned; the whole file without support."""
    regions: list[Span] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # no data after pos
                break
            # No hole support here (EINVAL, EOPNOTSUPP, ...): read the rest. A real
            # read error then surfaces from the read itself.
            log.debug("SEEK_DATA failed (%s): reading from %d on", exc.strerror, pos)
            regions.append((pos - pos % SECTOR, round_up(size, SECTOR)))
            break
        start -= start % SECTOR
        end = min(round_up(end, SECTOR), round_up(size, SECTOR))
        if regions and regions[-1][1] >= start:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
        pos = end
    return regions


def nonzero_spans(buf: bytes | bytearray, length: int, start: int = 0) -> Iterator[Span]:
    """``(start, end)`` of the runs of *buf[start:length]* that are not whole all-zero
    sectors, as offsets in *buf*.

    *start* and *length* are multiples of 512. ``bytearray.find`` of 512 zero
    bytes runs in C and skips dense data quickly; only zero runs are walked in
    Python.
    """
    run_start = start
    search = start
    while search < length:
        hit = buf.find(ZERO_SECTOR, search, length)
        if hit < 0:
            break
        zero_start = round_up(hit, SECTOR)
        zero_end = zero_start
        while (
            zero_end + _ZERO_BLOCK_SIZE <= length
            and buf[zero_end : zero_end + _ZERO_BLOCK_SIZE] == _ZERO_BLOCK
        ):
            zero_end += _ZERO_BLOCK_SIZE
        while zero_end + SECTOR <= length and buf[zero_end : zero_end + SECTOR] == ZERO_SECTOR:
            zero_end += SECTOR
        if zero_end > zero_start:
            if zero_start > run_start:
                yield run_start, zero_start
            run_start = search = zero_end
        else:
            search = zero_start + 1
    if run_start < length:
        yield run_start, length


def read_fully(fd: int, view: memoryview, offset: int) -> tuple[int, OSError | None]:
    """Fill *view* from *offset* of *fd*, in as many reads as it takes: the bytes read,
    and the error that stopped the reading, if one did. Without an error, fewer bytes
    than *view* holds means the file ended."""
    done = 0
    while done < len(view):
        try:
            got = os.preadv(fd, [view[done:]], offset + done)
        except OSError as error:
            return done, error
        if got == 0:
            break
        done += got
    return done, None


def read_into(fd: int, view: memoryview, offset: int, path: Path) -> int:
    """Fill *view* from *offset*; return the bytes read (fewer only at the end of the file)."""
    done, error = read_fully(fd, view, offset)
    if error is not None:
        raise ImageError(
            f"{path}: read error at offset {offset + done}: {error.strerror}",
            hint="The file or the disk under it is damaged; rebuild or copy it again",
        )
    return done


def file_runs(
    fd: int, size: int, path: Path, *, limit: int | None = None
) -> Iterator[tuple[int, memoryview]]:
    """``(offset, bytes)`` of every non-zero, 512-aligned run of the file's first *limit* bytes.

    The memoryview is only valid until the next item. Past the end of the file
    the last sector reads as zeros.
    """
    end_of_data = size if limit is None else min(size, limit)
    buf = bytearray(READ_BUFFER)
    view = memoryview(buf)
    for start, end in data_regions(fd, end_of_data):
        end = min(end, round_up(end_of_data, SECTOR))  # noqa: PLW2901 - clamp to the limit
        pos = start
        while pos < end:
            want = min(READ_BUFFER, end - pos)
            got = read_into(fd, view[:want], pos, path)
            got = min(got, max(0, end_of_data - pos))
            if got < want:
                view[got:want] = bytes(want - got)
            for lo, hi in nonzero_spans(buf, want):
                yield pos + lo, view[lo:hi]
            pos += want


def data_extents(path: Path, *, max_extent: int = DEFAULT_MAX_EXTENT) -> list[Extent]:
    """The byte ranges of *path* that hold non-zero data, footer included.

    Sorted, non-overlapping, 512-aligned, each at most *max_extent* bytes.
    Holes (``SEEK_HOLE``) are never read; data regions are read once and
    trimmed of all-zero sectors. A range may end past the end of a file whose
    size is not a multiple of 512 (never for a VHD).
    """
    _check_max_extent(max_extent)
    merged: list[list[int]] = []
    with open_image(path) as (fd, size):
        for offset, data in file_runs(fd, size, path):
            if merged and merged[-1][1] == offset:
                merged[-1][1] = offset + len(data)
            else:
                merged.append([offset, offset + len(data)])
    return [piece for start, end in merged for piece in _pieces(start, end, max_extent)]


def data_pieces(path: Path, *, max_extent: int = DEFAULT_MAX_EXTENT) -> list[Extent]:
    """The file's data regions (``SEEK_DATA``), cut into pieces of at most *max_extent*
    bytes, without reading anything: :func:`sector_runs` of each piece's bytes are
    exactly the :func:`data_extents` inside it."""
    _check_max_extent(max_extent)
    with open_image(path) as (fd, size):
        return [
            piece
            for start, end in data_regions(fd, size)
            for piece in _pieces(start, end, max_extent)
        ]


def sector_runs(buf: bytes | bytearray, start: int, end: int) -> Iterator[Span]:
    """``(lo, hi)`` offsets in *buf* of the runs of *buf[start:end]* that are not whole
    all-zero sectors; *start* and *end* are sector boundaries. Nothing is copied: a
    part of a larger buffer is searched in place."""
    if start % SECTOR or end % SECTOR or not 0 <= start <= end <= len(buf):
        msg = f"sector_runs needs sector boundaries within the buffer, not {start}..{end}"
        raise ValueError(msg)
    return nonzero_spans(buf, end, start)


def _check_max_extent(max_extent: int) -> None:
    if max_extent <= 0 or max_extent % SECTOR:
        msg = f"max_extent must be a positive multiple of {SECTOR}, not {max_extent}"
        raise ValueError(msg)


def _pieces(start: int, end: int, max_extent: int) -> Iterator[Extent]:
    for offset in range(start, end, max_extent):
        yield Extent(offset, min(max_extent, end - offset))


def data_bytes(extents: list[Extent]) -> int:
    """The bytes an upload of these extents sends."""
    return sum(e.length for e in extents)

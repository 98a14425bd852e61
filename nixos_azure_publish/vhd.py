"""The image file: VHD footers, format checks, data extents and conversion to a fixed VHD.

Azure accepts exactly one shape of disk: a fixed VHD whose virtual size is a
whole number of MiB, followed by a valid 512-byte footer at the very end of
the file. :func:`inspect` finds out whether a file is that, in milliseconds and
without reading the disk's contents, and reports every problem it sees.
:func:`data_extents` lists the byte ranges that hold non-zero data: what the
upload engine sends, which finds it piece by piece as it reads (:func:`data_pieces`,
:func:`sector_runs`). :func:`convert` writes a new, Azure-ready file
from a raw image, a dynamic VHD or a mis-sized fixed VHD in pure Python, and
from qcow2 and other formats through ``qemu-img``.

Everything here reads the image through ``os.pread`` with ``SEEK_DATA`` /
``SEEK_HOLE``: holes are never read and never written, memory stays bounded
by one buffer of a few MiB, and the input is never modified.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import shutil
import stat
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, Self

from nixos_azure_publish.errors import ImageError

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

log = logging.getLogger(__name__)

SECTOR: Final = 512
MIB: Final = 1 << 20
FOOTER_SIZE: Final = 512
DYNAMIC_HEADER_SIZE: Final = 1024
# Azure's bounds for `uploadSizeBytes` are these plus the footer.
MIN_VIRTUAL_SIZE: Final = 20 * MIB
MAX_VIRTUAL_SIZE: Final = 32 << 40
# Gallery image versions must stay under 2 TiB unless shallow replication is used.
MAX_GALLERY_SIZE: Final = 2 << 40
DEFAULT_MAX_EXTENT: Final = 4 * MIB

COOKIE: Final = b"conectix"
DYNAMIC_COOKIE: Final = b"cxsparse"
VERSION: Final = 0x0001_0000
FEATURES_RESERVED: Final = 0x2
FIXED_DATA_OFFSET: Final = 0xFFFF_FFFF_FFFF_FFFF
UNALLOCATED: Final = 0xFFFF_FFFF
DISK_FIXED: Final = 2
DISK_DYNAMIC: Final = 3
DISK_DIFFERENCING: Final = 4
DISK_TYPE_NAMES: Final = {0: "none", 2: "fixed", 3: "dynamic", 4: "differencing"}
VHD_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)
# The largest CHS geometry a footer can hold. A footer with exactly this
# geometry tells every reader (qemu included, whatever the creator) to take the
# size from `current_size`, which is what Azure and Hyper-V always do. This is
# what `qemu-img convert -o subformat=fixed,force_size` writes too.
MAX_GEOMETRY: Final = (65535, 16, 255)
# Our creator application and version, as the footer records them.
CREATOR_APP: Final = b"naps"
CREATOR_VERSION: Final = 0x0001_0000
# The VHD specification knows two host OS codes; Linux tools write Windows'.
CREATOR_OS: Final = b"Wi2k"

# How far back from the end of a file we look for a footer that something
# appended space after (holes cost nothing; this bounds the bytes read).
DISPLACED_FOOTER_SCAN: Final = 64 * MIB
# Bounds that keep a damaged dynamic header from making us allocate or read
# gigabytes: 2 MiB blocks are the norm, and 64 MiB of table covers 32 TiB.
MAX_BLOCK_SIZE: Final = 256 * MIB
MAX_TABLE_BYTES: Final = 64 * MIB
# One read buffer; memory use of a scan or a conversion is about this.
CHUNK: Final = 4 * MIB
_ZERO_SECTOR: Final = bytes(SECTOR)
_ZERO_BLOCK_SIZE: Final = 64 * 1024
_ZERO_BLOCK: Final = bytes(_ZERO_BLOCK_SIZE)

Format = Literal["vhd-fixed", "vhd-dynamic", "vhd-differencing", "raw", "qcow2", "unknown"]
Severity = Literal["error", "warning"]

# struct layouts, big-endian as the VHD specification says.
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
_DYNAMIC = struct.Struct(">8sQQIIII16sI")
_QCOW_MAGIC: Final = b"QFI\xfb"
# Magic numbers of formats we recognise but do not parse: qemu-img converts them.
_FOREIGN_MAGIC: Final = (
    (0, b"vhdxfile", "VHDX"),
    (0, b"KDMV", "VMDK"),
    (0, b"# Disk DescriptorFile", "VMDK descriptor"),
    (0, b"QED\x00", "QED"),
    (64, b"\x7f\x10\xda\xbe", "VDI"),
)
_CONVERT_HINT: Final = (
    "Run `nixos-azure-publish convert IN OUT` to write a fixed VHD that Azure accepts"
)


class Extent(NamedTuple):
    """A byte range of the file that holds data: 512-aligned, at most a few MiB long."""

    offset: int
    length: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an image. ``code`` is stable; ``message`` is for people."""

    code: str
    message: str
    severity: Severity = "error"

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "severity": self.severity}


def vhd_checksum(raw: bytes, checksum_at: int) -> int:
    """One's complement of the byte sum of *raw*, its 4-byte checksum field counted as zero."""
    total = sum(raw) - sum(raw[checksum_at : checksum_at + 4])
    return ~total & 0xFFFF_FFFF


@dataclass(frozen=True)
class Footer:
    """A parsed VHD footer (the hard disk footer of the VHD specification)."""

    offset: int
    cookie: bytes
    features: int
    version: int
    data_offset: int
    timestamp: int
    creator_app: bytes
    creator_version: int
    creator_os: bytes
    original_size: int
    current_size: int
    cylinders: int
    heads: int
    sectors_per_track: int
    disk_type: int
    checksum: int
    computed_checksum: int
    unique_id: bytes
    saved_state: int

    @classmethod
    def parse(cls, raw: bytes, *, offset: int = 0) -> Footer:
        """Parse 512 bytes; nothing is validated (see :func:`inspect` for that)."""
        if len(raw) < FOOTER_SIZE:
            msg = f"a VHD footer is {FOOTER_SIZE} bytes, got {len(raw)}"
            raise ValueError(msg)
        (
            cookie,
            features,
            version,
            data_offset,
            timestamp,
            creator_app,
            creator_version,
            creator_os,
            original_size,
            current_size,
            cylinders,
            heads,
            sectors_per_track,
            disk_type,
            checksum,
            unique_id,
            saved_state,
        ) = _FOOTER.unpack_from(raw)
        return cls(
            offset=offset,
            cookie=cookie,
            features=features,
            version=version,
            data_offset=data_offset,
            timestamp=timestamp,
            creator_app=creator_app,
            creator_version=creator_version,
            creator_os=creator_os,
            original_size=original_size,
            current_size=current_size,
            cylinders=cylinders,
            heads=heads,
            sectors_per_track=sectors_per_track,
            disk_type=disk_type,
            checksum=checksum,
            computed_checksum=vhd_checksum(raw[:FOOTER_SIZE], 64),
            unique_id=unique_id,
            saved_state=saved_state,
        )

    @property
    def checksum_ok(self) -> bool:
        return self.checksum == self.computed_checksum

    @property
    def disk_type_name(self) -> str:
        return DISK_TYPE_NAMES.get(self.disk_type, f"unknown ({self.disk_type})")

    @property
    def created(self) -> datetime:
        return VHD_EPOCH + timedelta(seconds=self.timestamp)

    @property
    def chs_size(self) -> int:
        """The size its CHS geometry describes (Virtual PC, and qemu for some creators, use it)."""
        return self.cylinders * self.heads * self.sectors_per_track * SECTOR

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "cookie": self.cookie.decode("latin-1"),
            "features": self.features,
            "version": f"{self.version >> 16}.{self.version & 0xFFFF}",
            "dataOffset": self.data_offset,
            "timestamp": self.timestamp,
            "created": self.created.isoformat(),
            "creatorApp": self.creator_app.decode("latin-1"),
            "creatorVersion": f"{self.creator_version >> 16}.{self.creator_version & 0xFFFF}",
            "creatorOs": self.creator_os.decode("latin-1"),
            "originalSize": self.original_size,
            "currentSize": self.current_size,
            "geometry": {
                "cylinders": self.cylinders,
                "heads": self.heads,
                "sectorsPerTrack": self.sectors_per_track,
            },
            "diskType": self.disk_type_name,
            "checksum": f"0x{self.checksum:08x}",
            "checksumValid": self.checksum_ok,
            "uniqueId": str(uuid.UUID(bytes=self.unique_id)),
            "savedState": bool(self.saved_state),
        }


def build_footer(
    virtual_size: int,
    *,
    timestamp: datetime | None = None,
    unique_id: bytes | None = None,
) -> bytes:
    """The 512-byte footer of a fixed VHD of *virtual_size* bytes."""
    when = timestamp or datetime.now(UTC)
    seconds = max(0, int((when - VHD_EPOCH).total_seconds())) & 0xFFFF_FFFF
    cylinders, heads, sectors = MAX_GEOMETRY
    fields = (
        COOKIE,
        FEATURES_RESERVED,
        VERSION,
        FIXED_DATA_OFFSET,
        seconds,
        CREATOR_APP,
        CREATOR_VERSION,
        CREATOR_OS,
        virtual_size,
        virtual_size,
        cylinders,
        heads,
        sectors,
        DISK_FIXED,
        0,
        unique_id or uuid.uuid4().bytes,
        0,
    )
    raw = bytearray(FOOTER_SIZE)
    _FOOTER.pack_into(raw, 0, *fields)
    struct.pack_into(">I", raw, 64, vhd_checksum(bytes(raw), 64))
    return bytes(raw)


@dataclass(frozen=True)
class DynamicHeader:
    """The dynamic disk header of a dynamic or differencing VHD."""

    offset: int
    cookie: bytes
    data_offset: int
    table_offset: int
    header_version: int
    max_table_entries: int
    block_size: int
    checksum: int
    computed_checksum: int

    @classmethod
    def parse(cls, raw: bytes, *, offset: int) -> DynamicHeader:
        cookie, data_offset, table, version, entries, block, checksum, _parent, _ts = (
            _DYNAMIC.unpack_from(raw)
        )
        computed = vhd_checksum(raw[:DYNAMIC_HEADER_SIZE], 36)
        return cls(offset, cookie, data_offset, table, version, entries, block, checksum, computed)

    @property
    def checksum_ok(self) -> bool:
        return self.checksum == self.computed_checksum

    @property
    def bitmap_size(self) -> int:
        """Bytes of the sector bitmap in front of each block, padded to whole sectors."""
        return _round_up(self.block_size // SECTOR // 8, SECTOR)

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "cookie": self.cookie.decode("latin-1"),
            "tableOffset": self.table_offset,
            "maxTableEntries": self.max_table_entries,
            "blockSize": self.block_size,
            "checksumValid": self.checksum_ok,
        }


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`inspect` found. ``virtual_size`` is 0 when the format is unknown."""

    path: Path
    format: Format
    file_size: int
    virtual_size: int
    azure_ready: bool
    problems: tuple[Problem, ...]
    footer: Footer | None
    dynamic_header: DynamicHeader | None = None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "path": str(self.path),
            "format": self.format,
            "file_size": self.file_size,
            "virtual_size": self.virtual_size,
            "azure_ready": self.azure_ready,
            "problems": [p.to_json() for p in self.problems],
            "footer": self.footer.to_json() if self.footer else None,
        }
        if self.dynamic_header is not None:
            data["dynamic_header"] = self.dynamic_header.to_json()
        return data


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` did. ``problems`` are those the output still has (usually none)."""

    source: Path
    destination: Path
    source_format: Format
    method: Literal["python", "qemu-img"]
    virtual_size: int
    file_size: int
    data_bytes: int
    actions: tuple[str, ...]
    seconds: float
    problems: tuple[Problem, ...]

    @property
    def azure_ready(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "source_format": self.source_format,
            "method": self.method,
            "virtual_size": self.virtual_size,
            "file_size": self.file_size,
            "data_bytes": self.data_bytes,
            "actions": list(self.actions),
            "seconds": round(self.seconds, 3),
            "azure_ready": self.azure_ready,
            "problems": [p.to_json() for p in self.problems],
        }


# --------------------------------------------------------------------------- helpers


def _round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def _mib(size: int) -> str:
    return f"{size / MIB:,.2f} MiB" if size % MIB else f"{size // MIB:,} MiB"


def format_size(size: int) -> str:
    """A size for people: bytes, KiB, MiB or GiB, exact when it is a whole number."""
    for unit, name in ((1 << 30, "GiB"), (MIB, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            return f"{size // unit:,} {name}" if size % unit == 0 else f"{size / unit:,.2f} {name}"
    return f"{size} bytes"


@contextlib.contextmanager
def _open_image(path: Path) -> Iterator[tuple[int, int]]:
    """Open *path* read-only; yield ``(fd, size)``. Every OS failure becomes an ImageError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(
            f"{path}: no such file", hint="Check the path, or build the image first"
        ) from None
    except PermissionError:
        raise ImageError(
            f"{path}: permission denied", hint="Make the file readable by this user"
        ) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot read: {exc.strerror}", hint="Check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageError(
            f"{path} is a directory, not an image file",
            hint="Pass the image file itself (for a Nix build output: the *.vhd inside it)",
        )
    if not stat.S_ISREG(st.st_mode):
        raise ImageError(f"{path} is not a regular file", hint="Pass an image file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except PermissionError:
        raise ImageError(
            f"{path}: permission denied", hint="Make the file readable by this user"
        ) from None
    except OSError as exc:
        raise ImageError(f"{path}: cannot open: {exc.strerror}", hint="Check the path") from None
    try:
        yield fd, os.fstat(fd).st_size
    finally:
        os.close(fd)


def _pread(fd: int, length: int, offset: int, path: Path) -> bytes:
    try:
        return os.pread(fd, length, offset)
    except OSError as exc:
        raise ImageError(
            f"{path}: read error at offset {offset}: {exc.strerror}",
            hint="The file or the disk under it is damaged; rebuild or copy it again",
        ) from None


def _data_regions(fd: int, size: int) -> list[tuple[int, int]]:
    """Regions the filesystem says may hold data, 512-aligned; the whole file without support."""
    regions: list[tuple[int, int]] = []
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
            regions.append((pos - pos % SECTOR, _round_up(size, SECTOR)))
            break
        start -= start % SECTOR
        end = min(_round_up(end, SECTOR), _round_up(size, SECTOR))
        if regions and regions[-1][1] >= start:
            regions[-1] = (regions[-1][0], end)
        else:
            regions.append((start, end))
        pos = end
    return regions


def _nonzero_spans(
    buf: bytes | bytearray, length: int, start: int = 0
) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of the runs of *buf[start:length]* that are not whole all-zero
    sectors, as offsets in *buf*.

    *start* and *length* are multiples of 512. ``bytearray.find`` of 512 zero
    bytes runs in C and skips dense data quickly; only zero runs are walked in
    Python.
    """
    run_start = start
    search = start
    while search < length:
        hit = buf.find(_ZERO_SECTOR, search, length)
        if hit < 0:
            break
        zero_start = _round_up(hit, SECTOR)
        zero_end = zero_start
        while (
            zero_end + _ZERO_BLOCK_SIZE <= length
            and buf[zero_end : zero_end + _ZERO_BLOCK_SIZE] == _ZERO_BLOCK
        ):
            zero_end += _ZERO_BLOCK_SIZE
        while zero_end + SECTOR <= length and buf[zero_end : zero_end + SECTOR] == _ZERO_SECTOR:
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


def _read_into(fd: int, view: memoryview, offset: int, path: Path) -> int:
    """Fill *view* from *offset*; return the bytes read (fewer only at the end of the file)."""
    done, error = read_fully(fd, view, offset)
    if error is not None:
        raise ImageError(
            f"{path}: read error at offset {offset + done}: {error.strerror}",
            hint="The file or the disk under it is damaged; rebuild or copy it again",
        )
    return done


def _file_runs(
    fd: int, size: int, path: Path, *, limit: int | None = None
) -> Iterator[tuple[int, memoryview]]:
    """``(offset, bytes)`` of every non-zero, 512-aligned run of the file's first *limit* bytes.

    The memoryview is only valid until the next item. Past the end of the file
    the last sector reads as zeros.
    """
    end_of_data = size if limit is None else min(size, limit)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    for start, end in _data_regions(fd, end_of_data):
        end = min(end, _round_up(end_of_data, SECTOR))  # noqa: PLW2901 - clamp to the limit
        pos = start
        while pos < end:
            want = min(CHUNK, end - pos)
            got = _read_into(fd, view[:want], pos, path)
            got = min(got, max(0, end_of_data - pos))
            if got < want:
                view[got:want] = bytes(want - got)
            for lo, hi in _nonzero_spans(buf, want):
                yield pos + lo, view[lo:hi]
            pos += want


# --------------------------------------------------------------------------- inspect


def inspect(path: Path) -> ImageInfo:
    """Identify the image format and check it against Azure's rules.

    Reads a few KiB of a VHD; of a raw disk also up to the last 64 MiB of data,
    looking for a footer that something appended space after.

    Raises :class:`ImageError` only when the file cannot be read at all; what is
    wrong with its contents is reported in ``problems``.
    """
    with _open_image(path) as (fd, size):
        return _inspect_open(path, fd, size)


def _inspect_open(path: Path, fd: int, size: int) -> ImageInfo:  # noqa: C901, PLR0912
    problems: list[Problem] = []
    if size == 0:
        problems.append(Problem("empty", "the file is empty"))
        return _info(path, "unknown", size, 0, problems, None)
    head = _pread(fd, SECTOR, 0, path)
    if head.startswith(_QCOW_MAGIC):
        virtual = struct.unpack_from(">Q", head, 24)[0] if len(head) >= 32 else 0  # noqa: PLR2004
        problems.append(
            Problem("not-vhd", f"a qcow2 image of {_mib(virtual)}; Azure needs a fixed VHD")
        )
        return _info(path, "qcow2", size, virtual, problems, None)
    for at, magic, name in _FOREIGN_MAGIC:
        if head[at : at + len(magic)] == magic:
            problems.append(Problem("not-vhd", f"a {name} image; Azure needs a fixed VHD"))
            return _info(path, "unknown", size, 0, problems, None)

    head_footer = Footer.parse(head) if head[:8] == COOKIE and len(head) == SECTOR else None
    tail = _pread(fd, SECTOR, size - SECTOR, path) if size >= SECTOR else b""
    footer: Footer | None = None
    if tail[:8] == COOKIE:
        footer = Footer.parse(tail, offset=size - SECTOR)
    elif _looks_like_footer(tail):
        footer = Footer.parse(tail, offset=size - SECTOR)
        problems.append(
            Problem(
                "bad-cookie",
                f"the footer's cookie is {footer.cookie!r}, not 'conectix' (Azure: "
                "\"Disk is expected to have cookie value 'conectix'\")",
            )
        )
    else:
        displaced = _find_displaced_footer(fd, size, path)
        if displaced is not None:
            footer = displaced
            after = size - footer.offset - FOOTER_SIZE
            problems.append(
                Problem(
                    "footer-not-at-end",
                    f"the footer is at offset {footer.offset:,}, followed by {after:,} more "
                    "bytes: something appended to the file after it was converted, and Azure "
                    "reads the footer from the last 512 bytes",
                )
            )
        elif head_footer is not None:
            footer = head_footer
            problems.append(
                Problem(
                    "truncated",
                    "the file starts with a VHD footer copy but does not end with a footer: "
                    "it is truncated or something was appended",
                )
            )
        elif size < SECTOR and head[:8] == COOKIE:
            problems.append(Problem("truncated", f"a VHD footer cut short at {size} bytes"))
            return _info(path, "unknown", size, 0, problems, None)
        else:
            problems.append(
                Problem("not-vhd", f"a raw disk image of {_mib(size)}; Azure needs a fixed VHD")
            )
            if size % SECTOR:
                problems.append(
                    Problem(
                        "raw-unaligned",
                        f"the size ({size:,} bytes) is not a whole number of 512-byte sectors",
                        "warning",
                    )
                )
            return _info(path, "raw", size, size, problems, None)

    fmt: Format
    if footer.disk_type == DISK_FIXED:
        fmt = "vhd-fixed"
    elif footer.disk_type == DISK_DYNAMIC:
        fmt = "vhd-dynamic"
    elif footer.disk_type == DISK_DIFFERENCING:
        fmt = "vhd-differencing"
    else:
        fmt = "unknown"
    _check_footer(footer, size, fmt, problems)
    dynamic = None
    if fmt in {"vhd-dynamic", "vhd-differencing"}:
        dynamic = _check_dynamic(fd, size, path, footer, head_footer, problems)
    return _info(path, fmt, size, footer.current_size, problems, footer, dynamic)


def _info(  # noqa: PLR0917 - a private constructor shorthand
    path: Path,
    fmt: Format,
    size: int,
    virtual: int,
    problems: list[Problem],
    footer: Footer | None,
    dynamic: DynamicHeader | None = None,
) -> ImageInfo:
    ready = fmt == "vhd-fixed" and not any(p.severity == "error" for p in problems)
    return ImageInfo(path, fmt, size, virtual, ready, tuple(problems), footer, dynamic)


def _looks_like_footer(raw: bytes) -> bool:
    """A footer whose cookie was damaged: the version and disk type fields still fit."""
    if len(raw) < FOOTER_SIZE:
        return False
    version, disk_type = struct.unpack_from(">I", raw, 12)[0], struct.unpack_from(">I", raw, 60)[0]
    return version == VERSION and disk_type in {DISK_FIXED, DISK_DYNAMIC, DISK_DIFFERENCING}


def _find_displaced_footer(fd: int, size: int, path: Path) -> Footer | None:
    """A fixed-disk footer followed by more bytes: at offset == its own current size.

    Looks backwards through the data (holes are skipped for free) for at most
    :data:`DISPLACED_FOOTER_SCAN` bytes. Requiring a valid checksum and the
    footer to sit exactly after the data area it describes keeps a VHD file
    that merely lives inside a raw disk's filesystem from matching.
    """
    budget = DISPLACED_FOOTER_SCAN
    for start, end in reversed(_data_regions(fd, size)):
        hi = end
        while hi > start and budget > 0:
            lo = max(start, hi - CHUNK)
            # Overlap one footer so that a footer across the chunk boundary is seen.
            data = _pread(fd, hi - lo + FOOTER_SIZE, lo, path)
            budget -= hi - lo
            at = data.rfind(COOKIE)
            while at >= 0:
                offset = lo + at
                if (
                    offset % SECTOR == 0
                    and offset + FOOTER_SIZE < size
                    and len(data) - at >= FOOTER_SIZE
                ):
                    candidate = Footer.parse(data[at : at + FOOTER_SIZE], offset=offset)
                    if (
                        candidate.checksum_ok
                        and candidate.disk_type == DISK_FIXED
                        and candidate.current_size == offset
                    ):
                        return candidate
                at = data.rfind(COOKIE, 0, at)
            hi = lo
        if budget <= 0:
            break
    return None


def _check_footer(  # noqa: C901, PLR0912 - one branch per rule
    footer: Footer, size: int, fmt: Format, problems: list[Problem]
) -> None:
    if footer.cookie == COOKIE and not footer.checksum_ok:
        problems.append(
            Problem(
                "bad-checksum",
                f"the footer checksum is 0x{footer.checksum:08x}, but its bytes sum to "
                f"0x{footer.computed_checksum:08x}: the footer is damaged",
            )
        )
    if footer.version != VERSION:
        problems.append(
            Problem(
                "bad-version",
                f"the footer's format version is 0x{footer.version:08x}, not 0x00010000",
                "warning",
            )
        )
    if fmt == "vhd-dynamic":
        problems.append(
            Problem("dynamic", "a dynamic VHD; Azure accepts only fixed VHDs (disk type 2)")
        )
    elif fmt == "vhd-differencing":
        problems.append(
            Problem(
                "differencing",
                "a differencing VHD: it needs its parent, and Azure accepts only fixed VHDs",
            )
        )
    elif fmt == "unknown":
        problems.append(
            Problem(
                "bad-disk-type",
                f"the footer's disk type is {footer.disk_type}; Azure needs 2 (fixed)",
            )
        )
    current = footer.current_size
    if fmt == "vhd-fixed":
        if footer.data_offset != FIXED_DATA_OFFSET:
            problems.append(
                Problem(
                    "bad-data-offset",
                    f"a fixed VHD's data offset should be 0xFFFFFFFFFFFFFFFF, "
                    f"not 0x{footer.data_offset:x}",
                    "warning",
                )
            )
        if footer.offset == size - FOOTER_SIZE and current != footer.offset:
            problems.append(
                Problem(
                    "size-mismatch",
                    f"the footer says the disk is {current:,} bytes, but the file holds "
                    f"{footer.offset:,} bytes before the footer",
                )
            )
    if current % MIB:
        chs = " (rounded to a CHS geometry, as qemu-img does without force_size)"
        problems.append(
            Problem(
                "size-not-mib",
                f"the virtual size, {current:,} bytes ({_mib(current)}), is not a whole number "
                f"of MiB{chs if current == footer.chs_size else ''}; Azure refuses it "
                '("The size must be a whole number (in MBs)")',
            )
        )
    if current < MIN_VIRTUAL_SIZE:
        problems.append(
            Problem(
                "too-small",
                f"the virtual size, {_mib(current)}, is below Azure's minimum of 20 MiB",
            )
        )
    elif current > MAX_VIRTUAL_SIZE:
        problems.append(
            Problem(
                "too-large",
                f"the virtual size, {_mib(current)}, is above Azure's maximum of 32 TiB",
            )
        )
    elif current > MAX_GALLERY_SIZE:
        problems.append(
            Problem(
                "gallery-too-large",
                f"the virtual size, {_mib(current)}, is over 2 TiB: a gallery image version "
                "needs shallow replication for that",
                "warning",
            )
        )
    if footer.saved_state:
        problems.append(
            Problem(
                "saved-state",
                "the footer's saved-state flag is set (the disk was captured from a "
                "suspended machine)",
                "warning",
            )
        )


def _check_dynamic(  # noqa: C901, PLR0917 - one branch per rule; private, called once
    fd: int,
    size: int,
    path: Path,
    footer: Footer,
    head_footer: Footer | None,
    problems: list[Problem],
) -> DynamicHeader | None:
    if head_footer is None:
        problems.append(
            Problem("footer-copy-missing", "the footer copy at the start of the file is missing")
        )
    elif footer.offset == size - FOOTER_SIZE and (
        head_footer.current_size != footer.current_size or head_footer.unique_id != footer.unique_id
    ):
        problems.append(
            Problem(
                "footer-copy-mismatch",
                "the footer copy at the start of the file differs from the footer at the end",
                "warning",
            )
        )
    at = footer.data_offset
    if at + DYNAMIC_HEADER_SIZE > size:
        problems.append(
            Problem(
                "truncated",
                f"the dynamic header at offset {at:,} lies beyond the end of the file",
            )
        )
        return None
    header = DynamicHeader.parse(_pread(fd, DYNAMIC_HEADER_SIZE, at, path), offset=at)
    if header.cookie != DYNAMIC_COOKIE:
        problems.append(
            Problem("bad-dynamic-header", f"the dynamic header's cookie is {header.cookie!r}")
        )
        return header
    if not header.checksum_ok:
        problems.append(Problem("bad-checksum", "the dynamic header's checksum is wrong"))
    block = header.block_size
    if block < SECTOR or block > MAX_BLOCK_SIZE or block & (block - 1):
        problems.append(Problem("bad-dynamic-header", f"the block size {block:,} is invalid"))
        return header
    if header.max_table_entries * 4 > MAX_TABLE_BYTES:
        problems.append(
            Problem(
                "bad-dynamic-header",
                f"the block allocation table claims {header.max_table_entries:,} entries",
            )
        )
        return header
    if header.max_table_entries * header.block_size < footer.current_size:
        problems.append(
            Problem(
                "bad-dynamic-header",
                "the block allocation table is too small for the disk size",
            )
        )
    table_bytes = header.max_table_entries * 4
    if header.table_offset + table_bytes > size:
        problems.append(
            Problem("truncated", "the block allocation table lies beyond the end of the file")
        )
        return header
    table = _pread(fd, table_bytes, header.table_offset, path)
    block_end = max(
        (
            entry * SECTOR + header.bitmap_size + header.block_size
            for (entry,) in struct.iter_unpack(">I", table)
            if entry != UNALLOCATED
        ),
        default=0,
    )
    data_end = footer.offset or size
    if block_end > data_end:
        problems.append(
            Problem(
                "truncated",
                f"allocated blocks reach offset {block_end:,}, past the footer at "
                f"{footer.offset:,}",
            )
        )
    return header


def require_azure_ready(path: Path) -> ImageInfo:
    """:func:`inspect` *path*; raise :class:`ImageError` unless Azure will accept it as is."""
    info = inspect(path)
    if info.azure_ready:
        return info
    errors = info.errors
    listed = "; ".join(f"{p.code}: {p.message}" for p in errors)
    unfixable = {"differencing", "too-large", "empty", "truncated", "bad-dynamic-header"}
    if any(p.code in unfixable for p in errors):
        hint = "Rebuild the image; `nixos-azure-publish inspect` shows the details"
    elif any(p.code == "too-small" for p in errors):
        hint = "Azure needs a disk of at least 20 MiB: make the image larger"
    else:
        hint = _CONVERT_HINT
    raise ImageError(f"{path} is not ready for Azure: {listed}", hint=hint)


# --------------------------------------------------------------------------- extents


def data_extents(path: Path, *, max_extent: int = DEFAULT_MAX_EXTENT) -> list[Extent]:
    """The byte ranges of *path* that hold non-zero data, footer included.

    Sorted, non-overlapping, 512-aligned, each at most *max_extent* bytes.
    Holes (``SEEK_HOLE``) are never read; data regions are read once and
    trimmed of all-zero sectors. A range may end past the end of a file whose
    size is not a multiple of 512 (never for a VHD).
    """
    _check_max_extent(max_extent)
    merged: list[list[int]] = []
    with _open_image(path) as (fd, size):
        for offset, data in _file_runs(fd, size, path):
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
    with _open_image(path) as (fd, size):
        return [
            piece
            for start, end in _data_regions(fd, size)
            for piece in _pieces(start, end, max_extent)
        ]


def sector_runs(buf: bytes | bytearray, start: int, end: int) -> Iterator[tuple[int, int]]:
    """``(lo, hi)`` offsets in *buf* of the runs of *buf[start:end]* that are not whole
    all-zero sectors; *start* and *end* are sector boundaries. Nothing is copied: a
    part of a larger buffer is searched in place."""
    if start % SECTOR or end % SECTOR or not 0 <= start <= end <= len(buf):
        msg = f"sector_runs needs sector boundaries within the buffer, not {start}..{end}"
        raise ValueError(msg)
    return _nonzero_spans(buf, end, start)


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


# --------------------------------------------------------------------------- convert


def convert(src: Path, dst: Path, *, overwrite: bool = False) -> ConvertResult:
    """Write an Azure-ready fixed VHD of *src* to *dst*; *src* is never modified.

    Raw images, dynamic VHDs and fixed VHDs with a wrong size or a misplaced or
    damaged footer are converted here, streaming and sparse (holes stay holes,
    all-zero sectors are not written). qcow2 and other formats go through
    ``qemu-img``. A differencing VHD is refused: its parent holds the rest.
    The output appears atomically: it is written to a temporary file next to
    *dst* and renamed.
    """
    started = time.monotonic()
    info = inspect(src)
    _check_convertible(src, dst, info, overwrite=overwrite)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
    actions: list[str] = []
    try:
        method, written = _write_fixed(src, tmp, info, actions)
        tmp.replace(dst)
    except OSError as exc:
        raise ImageError(
            f"cannot write {dst}: {exc.strerror or exc}",
            hint="Check free space and permissions of the output directory",
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(dst.parent)
    result_info = inspect(dst)
    if written is None:
        written = data_bytes(data_extents(dst))
    seconds = time.monotonic() - started
    log.debug("converted %s (%s) to %s in %.2f s", src, info.format, dst, seconds)
    return ConvertResult(
        source=src,
        destination=dst,
        source_format=info.format,
        method=method,
        virtual_size=result_info.virtual_size,
        file_size=result_info.file_size,
        data_bytes=written,
        actions=tuple(actions),
        seconds=seconds,
        problems=result_info.problems,
    )


def _check_convertible(src: Path, dst: Path, info: ImageInfo, *, overwrite: bool) -> None:
    if dst.exists():
        if dst.resolve() == src.resolve() or dst.samefile(src):
            raise ImageError(
                f"{dst} is the input file; convert never modifies its input",
                hint="Choose another output path",
            )
        if dst.is_dir():
            raise ImageError(f"{dst} is a directory", hint="Give the output file's path")
        if not overwrite:
            raise ImageError(
                f"{dst} already exists", hint="Remove it, choose another path or pass --force"
            )
    if not dst.parent.is_dir():
        raise ImageError(f"{dst.parent} does not exist", hint="Create the output directory first")
    codes = {p.code for p in info.problems}
    if info.format == "vhd-differencing":
        # Its unwritten sectors live in the parent; qemu-img reads them as zeros.
        raise ImageError(
            f"{src} is a differencing VHD: it holds only the changes against its parent disk",
            hint="Merge it into its parent first (Hyper-V: Merge-VHD), then convert the result",
        )
    if "empty" in codes:
        raise ImageError(f"{src} is empty", hint="Rebuild the image")
    if codes & {"truncated", "bad-dynamic-header"}:
        raise ImageError(
            f"{src} is a damaged VHD: "
            + "; ".join(p.message for p in info.errors if p.code != "dynamic"),
            hint="Rebuild the image or copy it again",
        )


def _write_fixed(
    src: Path, tmp: Path, info: ImageInfo, actions: list[str]
) -> tuple[Literal["python", "qemu-img"], int | None]:
    """Write the fixed VHD of *src* into *tmp*, flushed; return how, and the data bytes."""
    method: Literal["python", "qemu-img"] = "python"
    if info.format == "qcow2" or (info.format == "unknown" and info.footer is None):
        method = "qemu-img"
        virtual = _qemu_to_raw(src, tmp, info, actions)
        written: int | None = None
        out = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
    else:
        out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        if method == "python":
            if info.format == "vhd-dynamic":
                virtual, written = _copy_dynamic(src, out, info, actions)
            else:
                virtual, written = _copy_flat(src, out, info, actions)
        target = _round_up(max(virtual, SECTOR), MIB)
        if target != virtual:
            actions.append(f"rounded the virtual size up from {virtual:,} bytes to {_mib(target)}")
        os.ftruncate(out, target)
        _pwrite_all(out, build_footer(target), target)
        if written is not None:
            written += FOOTER_SIZE
        actions.append(f"wrote a fixed VHD footer for {_mib(target)} at offset {target:,}")
        os.fsync(out)
    finally:
        os.close(out)
    return method, written


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    view = memoryview(data)
    total = len(view)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return total


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Progress:
    """Follows a long copy: a log line every few seconds, and early writeback of the output.

    Without the writeback the kernel holds every written page dirty until the
    final fsync, which then waits for all of them. Asking for writeback of what
    is done (from a thread: the call itself takes a while) lets the disk work
    while we read and scan the rest.
    """

    WRITEBACK_EVERY: Final = 64 * MIB

    def __init__(self, what: str, total: int, out: int) -> None:
        self.what, self.total, self.out = what, total, out
        self.next_report = time.monotonic() + 5.0
        self.written_back = 0
        self.ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._writeback, name="vhd-writeback", daemon=True)
        self.thread.start()

    def _writeback(self) -> None:
        while (item := self.ranges.get()) is not None:
            with contextlib.suppress(OSError):  # only advice: a failure costs speed, not data
                os.posix_fadvise(self.out, item[0], item[1], os.POSIX_FADV_DONTNEED)

    def update(self, done: int) -> None:
        if done - self.written_back >= self.WRITEBACK_EVERY:
            self.ranges.put((self.written_back, done - self.written_back))
            self.written_back = done
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + 5.0
            log.info("%s: %s of %s", self.what, _mib(done), _mib(self.total))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ranges.put(None)
        self.thread.join()


def _copy_flat(src: Path, out: int, info: ImageInfo, actions: list[str]) -> tuple[int, int]:
    """Copy a raw image or a fixed VHD's data area; return the virtual size it needs."""
    footer = info.footer
    skip: tuple[int, int] | None = None
    if footer is None:  # raw
        limit = info.file_size
        virtual = info.file_size
        actions.append(f"copied the raw disk's data ({_mib(info.file_size)})")
    else:
        # Never drop bytes: whatever follows a misplaced footer stays part of
        # the disk (a partition may have been grown into it); only the old
        # footer sector itself is left out.
        limit = info.file_size
        skip = (footer.offset, footer.offset + FOOTER_SIZE)
        declared = footer.current_size if footer.checksum_ok else 0
        virtual = max(declared, info.file_size - FOOTER_SIZE)
        if footer.offset != info.file_size - FOOTER_SIZE:
            virtual = max(declared, info.file_size)
            actions.append(
                f"kept the {info.file_size - footer.offset - FOOTER_SIZE:,} bytes after the "
                f"misplaced footer at offset {footer.offset:,} as part of the disk and dropped "
                "the old footer"
            )
        else:
            actions.append("copied the fixed VHD's data area and dropped its old footer")
    written = 0
    with _Progress(f"converting {src}", limit, out) as progress, _open_image(src) as (fd, size):
        for offset, data in _file_runs(fd, size, src, limit=limit):
            if skip is not None and offset < skip[1] and offset + len(data) > skip[0]:
                written += _pwrite_skipping(out, data, offset, skip)
            else:
                _pwrite_all(out, data, offset)
                written += len(data)
            progress.update(offset)
    return virtual, written


def _pwrite_skipping(out: int, data: memoryview, offset: int, skip: tuple[int, int]) -> int:
    end = offset + len(data)
    written = 0
    if offset < skip[0]:
        written += _pwrite_all(out, data[: skip[0] - offset], offset)
    if end > skip[1]:
        written += _pwrite_all(out, data[skip[1] - offset :], skip[1])
    return written


def _copy_dynamic(src: Path, out: int, info: ImageInfo, actions: list[str]) -> tuple[int, int]:
    """Copy the allocated blocks of a dynamic VHD; unallocated blocks stay holes."""
    header = info.dynamic_header
    footer = info.footer
    if header is None or footer is None:  # inspect reported it; convert() refused earlier
        raise ImageError(f"{src}: no dynamic header", hint="Rebuild the image")
    virtual = footer.current_size
    block = header.block_size
    buf = bytearray(block)
    view = memoryview(buf)
    allocated = written = 0
    with (
        _Progress(f"converting {src}", virtual, out) as progress,
        _open_image(src) as (fd, _size),
    ):
        table = _pread(fd, header.max_table_entries * 4, header.table_offset, src)
        for index, (entry,) in enumerate(struct.iter_unpack(">I", table)):
            disk_offset = index * block
            if entry == UNALLOCATED or disk_offset >= virtual:
                continue
            allocated += 1
            length = _round_up(min(block, virtual - disk_offset), SECTOR)
            bitmap = _pread(fd, header.bitmap_size, entry * SECTOR, src)
            got = _read_into(fd, view[:length], entry * SECTOR + header.bitmap_size, src)
            got = min(got, virtual - disk_offset)  # a partial last sector ends in zeros
            view[got:length] = bytes(length - got)
            _apply_sector_bitmap(view, length, bitmap)
            for lo, hi in _nonzero_spans(buf, length):
                _pwrite_all(out, view[lo:hi], disk_offset + lo)
                written += hi - lo
            progress.update(disk_offset)
    actions.append(
        f"copied {allocated:,} allocated blocks of {_mib(block)} from the dynamic VHD; "
        "unallocated blocks stay holes"
    )
    return virtual, written


def _apply_sector_bitmap(view: memoryview, length: int, bitmap: bytes) -> None:
    """Zero the sectors the block's bitmap marks as never written (they read as zeros)."""
    sectors = length // SECTOR
    full = sectors // 8
    if bitmap[:full] == b"\xff" * full and (
        sectors % 8 == 0 or bitmap[full] | (0xFF >> (sectors % 8)) == 0xFF  # noqa: PLR2004
    ):
        return
    for sector in range(sectors):
        if not bitmap[sector // 8] & (0x80 >> (sector % 8)):
            view[sector * SECTOR : (sector + 1) * SECTOR] = _ZERO_SECTOR


def _qemu_to_raw(src: Path, tmp: Path, info: ImageInfo, actions: list[str]) -> int:
    """Let qemu-img write a sparse raw copy into *tmp*; return its size."""
    qemu_img = shutil.which("qemu-img")
    what = "a qcow2 image" if info.format == "qcow2" else "an image in a format we do not parse"
    if qemu_img is None:
        raise ImageError(
            f"converting {what} needs qemu-img, which is not on PATH",
            hint="Install it (Debian/Ubuntu: apt-get install qemu-utils; "
            "Nix: nix shell nixpkgs#qemu-utils) and run again",
        )
    argv = [qemu_img, "convert", "-O", "raw", str(src), str(tmp)]
    log.debug("running %s", " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageError(
            f"qemu-img could not convert {src}: {done.stderr.strip() or done.returncode}",
            hint="Check that the image is intact (`qemu-img info` shows what it sees)",
        )
    actions.append(f"converted {what} to a raw disk with qemu-img")
    return tmp.stat().st_size

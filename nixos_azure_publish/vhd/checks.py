"""Inspecting an image: its format, and every problem Azure would refuse it for."""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.errors import ImageError
from nixos_azure_publish.vhd.format import (
    COOKIE,
    DISK_DIFFERENCING,
    DISK_DYNAMIC,
    DISK_FIXED,
    DYNAMIC_COOKIE,
    DYNAMIC_HEADER_SIZE,
    FIXED_DATA_OFFSET,
    FOOTER_SIZE,
    MAX_GALLERY_SIZE,
    MAX_VIRTUAL_SIZE,
    MIB,
    MIN_VIRTUAL_SIZE,
    SECTOR,
    UNALLOCATED,
    VERSION,
    DynamicHeader,
    Footer,
    Format,
    Severity,
    mib,
)
from nixos_azure_publish.vhd.scan import READ_BUFFER, data_regions, open_image, pread

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)

# How far back from the end of a file we look for a footer that something
# appended space after (holes cost nothing; this bounds the bytes read).
DISPLACED_FOOTER_SCAN: Final = 64 * MIB
# Bounds that keep a damaged dynamic header from making us allocate or read
# gigabytes: 2 MiB blocks are the norm, and 64 MiB of table covers 32 TiB.
MAX_BLOCK_SIZE: Final = 256 * MIB
MAX_TABLE_BYTES: Final = 64 * MIB
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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an image. ``code`` is stable; ``message`` is for people."""

    code: str
    message: str
    severity: Severity = "error"

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "severity": self.severity}


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


def inspect(path: Path) -> ImageInfo:
    """Identify the image format and check it against Azure's rules.

    Reads a few KiB of a VHD; of a raw disk also up to the last 64 MiB of data,
    looking for a footer that something appended space after.

    Raises :class:`ImageError` only when the file cannot be read at all; what is
    wrong with its contents is reported in ``problems``.
    """
    with open_image(path) as (fd, size):
        return _inspect_open(path, fd, size)


def _inspect_open(path: Path, fd: int, size: int) -> ImageInfo:  # noqa: C901, PLR0912
    problems: list[Problem] = []
    if size == 0:
        problems.append(Problem("empty", "the file is empty"))
        return _info(path, "unknown", size, 0, problems, None)
    head = pread(fd, SECTOR, 0, path)
    if head.startswith(_QCOW_MAGIC):
        virtual = struct.unpack_from(">Q", head, 24)[0] if len(head) >= 32 else 0  # noqa: PLR2004
        problems.append(
            Problem("not-vhd", f"a qcow2 image of {mib(virtual)}; Azure needs a fixed VHD")
        )
        return _info(path, "qcow2", size, virtual, problems, None)
    for at, magic, name in _FOREIGN_MAGIC:
        if head[at : at + len(magic)] == magic:
            problems.append(Problem("not-vhd", f"a {name} image; Azure needs a fixed VHD"))
            return _info(path, "unknown", size, 0, problems, None)

    head_footer = Footer.parse(head) if head[:8] == COOKIE and len(head) == SECTOR else None
    tail = pread(fd, SECTOR, size - SECTOR, path) if size >= SECTOR else b""
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
                Problem("not-vhd", f"a raw disk image of {mib(size)}; Azure needs a fixed VHD")
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
    for start, end in reversed(data_regions(fd, size)):
        hi = end
        while hi > start and budget > 0:
            lo = max(start, hi - READ_BUFFER)
            # Overlap one footer so that a footer across the chunk boundary is seen.
            data = pread(fd, hi - lo + FOOTER_SIZE, lo, path)
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
                f"the virtual size, {current:,} bytes ({mib(current)}), is not a whole number "
                f"of MiB{chs if current == footer.chs_size else ''}; Azure refuses it "
                '("The size must be a whole number (in MBs)")',
            )
        )
    if current < MIN_VIRTUAL_SIZE:
        problems.append(
            Problem(
                "too-small",
                f"the virtual size, {mib(current)}, is below Azure's minimum of 20 MiB",
            )
        )
    elif current > MAX_VIRTUAL_SIZE:
        problems.append(
            Problem(
                "too-large",
                f"the virtual size, {mib(current)}, is above Azure's maximum of 32 TiB",
            )
        )
    elif current > MAX_GALLERY_SIZE:
        problems.append(
            Problem(
                "gallery-too-large",
                f"the virtual size, {mib(current)}, is over 2 TiB: a gallery image version "
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
    header = DynamicHeader.parse(pread(fd, DYNAMIC_HEADER_SIZE, at, path), offset=at)
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
    table = pread(fd, table_bytes, header.table_offset, path)
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

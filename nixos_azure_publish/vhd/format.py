"""The VHD format: sizes, cookies, the footer and the dynamic header, read and written.

All layouts follow Microsoft's VHD specification: big-endian, 512-byte footer
at the end of the file, a 1 KiB dynamic header for dynamic and differencing
disks.
"""

from __future__ import annotations

import logging
import struct
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

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

Format = Literal["vhd-fixed", "vhd-dynamic", "vhd-differencing", "raw", "qcow2", "unknown"]
Severity = Literal["error", "warning"]

# struct layouts, big-endian as the VHD specification says.
_FOOTER = struct.Struct(">8sIIQI4sI4sQQHBBII16sB")
_DYNAMIC = struct.Struct(">8sQQIIII16sI")


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
        return round_up(self.block_size // SECTOR // 8, SECTOR)

    def to_json(self) -> dict[str, Any]:
        return {
            "offset": self.offset,
            "cookie": self.cookie.decode("latin-1"),
            "tableOffset": self.table_offset,
            "maxTableEntries": self.max_table_entries,
            "blockSize": self.block_size,
            "checksumValid": self.checksum_ok,
        }


def round_up(value: int, unit: int) -> int:
    return -(-value // unit) * unit


def mib(size: int) -> str:
    return f"{size / MIB:,.2f} MiB" if size % MIB else f"{size // MIB:,} MiB"


def format_size(size: int) -> str:
    """A size for people: bytes, KiB, MiB or GiB, exact when it is a whole number."""
    for unit, name in ((1 << 30, "GiB"), (MIB, "MiB"), (1 << 10, "KiB")):
        if size >= unit:
            return f"{size // unit:,} {name}" if size % unit == 0 else f"{size / unit:,.2f} {name}"
    return f"{size} bytes"

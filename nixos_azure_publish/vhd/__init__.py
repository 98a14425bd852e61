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

The modules: :mod:`.format` (the footer and dynamic header), :mod:`.scan`
(data regions, non-zero runs, extents, pieces), :mod:`.checks` (inspection,
problems, :class:`ImageInfo`, :func:`require_azure_ready`) and
:mod:`.conversion`. The names below are the package's public interface.
"""

from __future__ import annotations

from nixos_azure_publish.vhd.checks import ImageInfo, Problem, inspect, require_azure_ready
from nixos_azure_publish.vhd.conversion import ConvertResult, convert
from nixos_azure_publish.vhd.format import (
    DISK_DIFFERENCING,
    DISK_DYNAMIC,
    DISK_FIXED,
    FIXED_DATA_OFFSET,
    FOOTER_SIZE,
    MAX_GALLERY_SIZE,
    MAX_GEOMETRY,
    MAX_VIRTUAL_SIZE,
    MIB,
    MIN_VIRTUAL_SIZE,
    SECTOR,
    UNALLOCATED,
    DynamicHeader,
    Footer,
    Format,
    build_footer,
    format_size,
    vhd_checksum,
)
from nixos_azure_publish.vhd.scan import (
    DEFAULT_MAX_EXTENT,
    Extent,
    Span,
    data_bytes,
    data_extents,
    data_pieces,
    read_fully,
    sector_runs,
)

__all__ = [
    "DEFAULT_MAX_EXTENT",
    "DISK_DIFFERENCING",
    "DISK_DYNAMIC",
    "DISK_FIXED",
    "FIXED_DATA_OFFSET",
    "FOOTER_SIZE",
    "MAX_GALLERY_SIZE",
    "MAX_GEOMETRY",
    "MAX_VIRTUAL_SIZE",
    "MIB",
    "MIN_VIRTUAL_SIZE",
    "SECTOR",
    "UNALLOCATED",
    "ConvertResult",
    "DynamicHeader",
    "Extent",
    "Footer",
    "Format",
    "ImageInfo",
    "Problem",
    "Span",
    "build_footer",
    "convert",
    "data_bytes",
    "data_extents",
    "data_pieces",
    "format_size",
    "inspect",
    "read_fully",
    "require_azure_ready",
    "sector_runs",
    "vhd_checksum",
]

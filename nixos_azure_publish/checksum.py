"""Per-request integrity checks for page writes: Azure Storage's CRC64, or MD5.

Azure checks either header against the body it received and fails the
request with 400 (``Crc64Mismatch`` / ``Md5Mismatch``) when they differ, so a
page corrupted in transit is retried instead of being stored.

Azure Storage's CRC64 is CRC-64/NVME: polynomial 0x9A6C9329AC4BC9B5
(reflected), initial value and final XOR all ones. The header carries its
8 bytes little-endian, base64-encoded, as the Azure SDKs send it. awscrt
computes it with carry-less multiplication at memory speed (0.15 ms per 4 MiB
here, against 2.7 ms for azure-storage-blob's ``ext-checksums`` extra and
5 ms for MD5); that extra is the fallback, MD5 the last resort. See
bench/RESULTS.md for what this is worth in an upload.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from typing import Final, Literal

from nixos_azure_publish.errors import UsageError

Checksum = Literal["auto", "crc64", "md5", "none"]
"""What the user asks for; ``auto`` is CRC64 where an implementation is installed, else MD5."""
Kind = Literal["crc64", "md5"]

CRC64_HEADER: Final = "x-ms-content-crc64"
MD5_HEADER: Final = "Content-MD5"

Buffer = bytes | bytearray | memoryview
Crc64 = Callable[[Buffer, int], int]
"""CRC64 of the data, continuing from the CRC64 of the bytes before it (0 for none)."""


def _load_crc64() -> tuple[Crc64, str] | None:
    try:
        from awscrt import checksums  # type: ignore[import-untyped] # noqa: PLC0415 - optional

        # An awscrt without crc64nvme (older than 0.23, as in nixos-24.11) is skipped.
        crc64nvme = checksums.crc64nvme

        def aws(data: Buffer, previous: int) -> int:
            value: int = crc64nvme(data, previous)
            return value

    except (ImportError, AttributeError):
        pass
    else:
        return aws, "awscrt"
    try:
        from azure.storage.extensions import (  # type: ignore[import-untyped,unused-ignore] # noqa: PLC0415
            checksums as extension,
        )

        def azure(data: Buffer, previous: int) -> int:
            value: int = extension.crc64.compute(
                data if isinstance(data, bytes) else bytes(data), previous
            )
            return value

    except ImportError:
        return None
    return azure, "azure-storage-extensions"


_CRC64: Final = _load_crc64()


def crc64_implementation() -> str | None:
    """The library that computes CRC64 here, or None when there is none."""
    return _CRC64[1] if _CRC64 else None


def crc64(data: Buffer, previous: int = 0) -> int:
    """Azure Storage's CRC64 of *data*, or of the bytes *previous* is the CRC64 of followed
    by *data*. Raises :class:`UsageError` without an implementation."""
    if _CRC64 is None:
        raise _missing_crc64()
    return _CRC64[0](data, previous)


def resolve(requested: Checksum) -> Kind | None:
    """The checksum to send for *requested*; None for no checksum."""
    if requested == "none":
        return None
    if requested == "md5":
        return "md5"
    if _CRC64 is not None:
        return "crc64"
    if requested == "crc64":
        raise _missing_crc64()
    return "md5"


def header_name(kind: Kind | None) -> str | None:
    """The name of the request header that carries a checksum of *kind*."""
    if kind is None:
        return None
    return CRC64_HEADER if kind == "crc64" else MD5_HEADER


def header(kind: Kind, data: Buffer) -> tuple[str, str]:
    """The request header that carries *data*'s checksum of *kind*."""
    running = Running(kind)
    running.update(data)
    return running.header()


class Running:
    """The checksum of *kind* of bytes given in parts: :meth:`header` after updates
    with the parts equals :func:`header` of the parts joined. Lets a reader
    checksum each part while it is still in the CPU's cache."""

    __slots__ = ("_crc", "_md5")

    def __init__(self, kind: Kind) -> None:
        self._crc = 0
        # hashlib releases the GIL on large buffers: workers hash in parallel.
        self._md5 = hashlib.md5() if kind == "md5" else None  # noqa: S324 - the service checks MD5

    def update(self, data: Buffer) -> None:
        if self._md5 is not None:
            self._md5.update(data)
        else:
            self._crc = crc64(data, self._crc)

    def header(self) -> tuple[str, str]:
        """The request header that carries the checksum of the bytes so far."""
        if self._md5 is not None:
            return MD5_HEADER, base64.b64encode(self._md5.digest()).decode()
        return CRC64_HEADER, base64.b64encode(self._crc.to_bytes(8, "little")).decode()


def _missing_crc64() -> UsageError:
    return UsageError(
        "CRC64 needs awscrt or azure-storage-blob[ext-checksums]; neither is installed",
        hint="Install one of them, or use checksum md5",
    )

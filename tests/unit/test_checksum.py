"""Per-request checksums: Azure Storage's CRC64 and MD5 headers."""

from __future__ import annotations

import base64
import hashlib
import random
import subprocess
import sys

import pytest

from nixos_azure_publish import checksum
from nixos_azure_publish.errors import UsageError

pytestmark = pytest.mark.unit

# Azure Storage's CRC64, written out bit by bit from its definition: the reflected
# polynomial 0x9A6C9329AC4BC9B5, all-ones initial value and final XOR.
_POLY = 0x9A6C9329AC4BC9B5
_MASK = (1 << 64) - 1


def reference_crc64(data: bytes) -> int:
    crc = _MASK
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
    return crc ^ _MASK


def test_crc64_check_value():
    # The catalogued check value of CRC-64/NVME, the same CRC as Azure Storage's.
    assert checksum.crc64(b"123456789") == 0xAE8B14860A799888
    assert reference_crc64(b"123456789") == 0xAE8B14860A799888
    assert checksum.crc64(b"") == 0


def test_crc64_matches_the_definition_on_every_length_and_alignment():
    rng = random.Random(7)  # noqa: S311 - test data
    data = rng.randbytes(3000)
    for length in [*range(40), 63, 64, 65, 511, 512, 513, 1024, 2999]:
        start = rng.randrange(0, 3000 - length + 1)
        piece = data[start : start + length]
        assert checksum.crc64(piece) == reference_crc64(piece), length
        assert checksum.crc64(memoryview(data)[start : start + length]) == reference_crc64(piece)
        assert checksum.crc64(bytearray(piece)) == reference_crc64(piece)


def test_crc64_header_equals_the_azure_sdks():
    """The header is what azure-storage-blob sends with validate_content='crc64'."""
    validation = pytest.importorskip("azure.storage.blob._shared.validation")
    pytest.importorskip("azure.storage.extensions")
    rng = random.Random(11)  # noqa: S311 - test data
    for size in (512, 4096, 1 << 20, 4 << 20):
        data = rng.randbytes(size)
        sdk = base64.b64encode(validation.calculate_crc64_bytes(data)).decode()
        assert checksum.header("crc64", data) == ("x-ms-content-crc64", sdk)


def test_md5_header():
    data = b"\x00" * 512 + b"nixos"
    expected = base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324
    assert checksum.header("md5", data) == ("Content-MD5", expected)
    assert checksum.header("md5", memoryview(data)) == ("Content-MD5", expected)


def test_resolve_prefers_crc64_when_installed():
    assert checksum.crc64_implementation() == "awscrt"
    assert checksum.resolve("auto") == "crc64"
    assert checksum.resolve("crc64") == "crc64"
    assert checksum.resolve("md5") == "md5"
    assert checksum.resolve("none") is None


def test_without_a_crc64_library_auto_is_md5_and_crc64_is_refused(monkeypatch):
    monkeypatch.setattr(checksum, "_CRC64", None)
    assert checksum.resolve("auto") == "md5"
    with pytest.raises(UsageError, match="CRC64 needs awscrt"):
        checksum.resolve("crc64")


def test_falls_back_to_the_sdk_extension_without_awscrt():
    pytest.importorskip("azure.storage.extensions")
    script = (
        "import sys; sys.modules['awscrt'] = None\n"
        "from nixos_azure_publish import checksum\n"
        "print(checksum.crc64_implementation(), hex(checksum.crc64(memoryview(b'123456789'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.split() == ["azure-storage-extensions", "0xae8b14860a799888"]


@pytest.mark.parametrize("kind", ["crc64", "md5"])
def test_a_checksum_taken_in_parts_equals_the_whole(kind):
    rng = random.Random(kind)  # noqa: S311 - test data
    data = rng.randbytes(100_000)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randrange(0, 6)))
        running = checksum.Running(kind)
        for lo, hi in zip([0, *cuts], [*cuts, len(data)], strict=True):
            running.update(memoryview(data)[lo:hi])
        assert running.header() == checksum.header(kind, data)
    assert checksum.Running(kind).header() == checksum.header(kind, b"")

"""The upload engine against a real Azurite, directly and through a fault-injecting proxy.

Every test checks what a user would notice: the blob's bytes (downloaded and
compared by digest with the file), its page ranges, the numbers reported,
the error shown. The blob is pre-created the way Azure's disk service does
it (an empty page blob of exactly the file's size) and the engine gets only a
SAS URL for it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from azure.storage.blob import (
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    generate_blob_sas,
)

from nixos_azure_publish import vhd
from nixos_azure_publish.cli import main
from nixos_azure_publish.emulator.azurite import ACCOUNT, ACCOUNT_KEY, Azurite, run_azurite
from nixos_azure_publish.emulator.certs import write_self_signed
from nixos_azure_publish.errors import ImageError, SasExpiredError, UploadError, UsageError
from nixos_azure_publish.upload import azcopy, engine, piece, progress, ranges, retry, transport
from nixos_azure_publish.upload.journal import JOURNAL_INTERVAL
from tests.conftest import REPO, require_tool
from tests.integration.faultproxy import FaultProxy, Faults, run_fault_proxy

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

MIB = 1024 * 1024
FAST_RETRY = retry.RetryPolicy(attempts=12, initial=0.02, maximum=0.3)


# --------------------------------------------------------------------------- helpers


def make_vhd(tmp_path: Path, name: str, virtual_mib: int, runs: list[tuple[int, int]], seed: int):
    """A fixed VHD (qemu-img, sparse) of *virtual_mib* MiB with random data at *runs*."""
    qemu = require_tool("qemu-img")
    rng = random.Random(seed)  # noqa: S311 - test data
    raw = tmp_path / f"{name}.raw"
    with raw.open("wb") as handle:
        handle.truncate(virtual_mib * MIB)
        for offset, length in runs:
            handle.seek(offset)
            handle.write(rng.randbytes(length))
    out = tmp_path / f"{name}.vhd"
    subprocess.run(
        [qemu, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size", raw, out],
        check=True,
    )
    raw.unlink()
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(4 * MIB):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Disk:
    """A page blob standing in for a managed disk's upload blob."""

    azurite: Azurite
    container: str
    name: str
    admin: BlobClient

    def sas(self, *, expiry: datetime | None = None, write: bool = True) -> str:
        token = generate_blob_sas(
            ACCOUNT,
            self.container,
            self.name,
            account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions(read=True, write=write),
            expiry=expiry or datetime.now(UTC) + timedelta(hours=1),
        )
        return f"{self.admin.url}?{token}"

    def digest(self) -> str:
        digest = hashlib.sha256()
        for chunk in self.admin.download_blob().chunks():
            digest.update(chunk)
        return digest.hexdigest()

    def ranges(self) -> list[tuple[int, int]]:
        return ranges.merge_spans(
            (r.start or 0, (r.end or 0) + 1) for r in self.admin.list_page_ranges()
        )


def upload_argv(image: Path, sas_file: Path, *extra: str) -> list[str]:
    """The command line of ``--json upload IMAGE --sas-url-file SAS_FILE EXTRA...``."""
    return [
        sys.executable,
        "-m",
        "nixos_azure_publish",
        "--json",
        "upload",
        str(image),
        "--sas-url-file",
        str(sas_file),
        *extra,
    ]


@pytest.fixture
def disk(azurite: Azurite) -> Callable[[int], Disk]:
    """Creates an empty page blob of a given size, as Azure's disk service does for an upload."""
    counter = iter(range(1000))

    def create(size: int) -> Disk:
        name = f"disk{next(counter)}.vhd"
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.get_container_client("disks")
        if not container.exists():
            container.create_container()
        admin = container.get_blob_client(name)
        admin.create_page_blob(size)
        return Disk(azurite, "disks", name, admin)

    return create


@pytest.fixture
def fault_proxy(azurite: Azurite) -> Callable[[Faults], AbstractContextManager[FaultProxy]]:
    """Runs a fault-injecting proxy in front of the test's Azurite."""

    def start(faults: Faults):
        return run_fault_proxy(azurite.host, azurite.port, faults)

    return start


def sig_of(sas_url: str) -> str:
    return sas_url.split("sig=", 1)[1].split("&", 1)[0]


# --------------------------------------------------------------------------- happy paths


def test_full_upload_is_byte_identical_and_sends_only_data(tmp_path, disk, fault_proxy):
    # 6 MiB of contiguous data (more than one 4 MiB request), a small run, and the footer.
    image = make_vhd(tmp_path, "full", 24, [(1 * MIB, 6 * MIB), (20 * MIB + 4096, 8192)], seed=1)
    target = disk(image.stat().st_size)
    with fault_proxy(Faults()) as proxy:
        result = engine.upload_vhd(
            path=image,
            sas_url=proxy.url(target.sas()),
            journal_dir=tmp_path / "journal",
            verify="full",
        )
    assert target.digest() == sha256_file(image)
    assert result.verified
    assert result.data_bytes == 6 * MIB + 8192 + 512
    assert result.bytes_sent == result.data_bytes
    # Azure's 4 MiB Put Page limit is ours to keep (Azurite would take more).
    assert proxy.stats.max_page_write == 4 * MIB
    # Every page write carried a correct CRC64 (the proxy checks it, as Azure does).
    assert proxy.stats.checked == {"crc64": proxy.stats.page_writes}
    assert proxy.stats.mismatches == 0
    assert result.ranges_sent == proxy.stats.page_writes == 4
    assert target.ranges() == [
        (1 * MIB, 7 * MIB),
        (20 * MIB + 4096, 20 * MIB + 12288),
        (24 * MIB, 24 * MIB + 512),
    ]


def test_sparse_image_sends_exactly_its_data(tmp_path, disk):
    rng = random.Random(7)  # noqa: S311 - test data
    runs = sorted(
        {(rng.randrange(0, 255) * 256 * 1024, 4096 * rng.randrange(1, 8)) for _ in range(40)}
    )
    image = make_vhd(tmp_path, "sparse", 64, runs, seed=2)
    target = disk(image.stat().st_size)
    result = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=tmp_path / "journal")
    written = sum(length for _, length in runs) + 512
    assert result.bytes_sent == result.data_bytes
    # Overlapping random runs may merge; the data never exceeds what was written.
    assert written - 64 * 1024 <= result.data_bytes <= written
    assert result.data_bytes < image.stat().st_size // 20
    assert target.digest() == sha256_file(image)


def test_reused_blob_with_stale_data_is_cleared(tmp_path, disk):
    image = make_vhd(tmp_path, "reused", 32, [(4 * MIB, 2 * MIB)], seed=3)
    target = disk(image.stat().st_size)
    # Leftovers of an earlier image: where the new one has zeros, and inside its data.
    for offset in (0, 10 * MIB, 4 * MIB + 512 * 1024, 31 * MIB):
        target.admin.upload_page(os.urandom(128 * 1024), offset=offset, length=128 * 1024)
    result = engine.upload_vhd(path=image, sas_url=target.sas(), use_journal=False)
    assert target.digest() == sha256_file(image)
    assert target.ranges() == [(4 * MIB, 6 * MIB), (32 * MIB, 32 * MIB + 512)]
    assert result.verified
    assert result.ranges_cleared == 3
    assert result.bytes_sent == 2 * MIB + 512


def test_another_image_written_in_between_is_never_skipped_on_an_old_journal(tmp_path, disk):
    # A, then B, then A again into the same blob: the pages hold B's bytes where A's
    # journal says A's are; the journal is per blob, so uploading B replaced it.
    runs = [(0, 3 * MIB), (8 * MIB, 4096)]
    first = make_vhd(tmp_path, "first", 24, runs, seed=21)
    second = make_vhd(tmp_path, "second", 24, runs, seed=22)
    target = disk(first.stat().st_size)
    journals = tmp_path / "journals"
    for image in (first, second):
        engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journals)
        assert target.digest() == sha256_file(image)
    again = engine.upload_vhd(path=first, sas_url=target.sas(), journal_dir=journals)
    assert target.digest() == sha256_file(first)
    assert again.bytes_sent == again.data_bytes
    assert len(list(journals.iterdir())) == 1


def test_a_failed_full_verification_forgets_the_journal(tmp_path, disk):
    image = make_vhd(tmp_path, "verified", 24, [(0, 2 * MIB)], seed=23)
    target = disk(image.stat().st_size)
    journals = tmp_path / "journals"
    engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journals)
    # Something else overwrites data behind the journal's back.
    target.admin.upload_page(os.urandom(512), offset=MIB, length=512)
    with pytest.raises(UploadError, match="verification failed"):
        engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journals, verify="full")
    rerun = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journals)
    assert target.digest() == sha256_file(image)
    assert rerun.bytes_sent == rerun.data_bytes


def test_a_journal_of_another_file_is_deleted_before_any_page_is_written(tmp_path, disk):
    # B's upload dies before it records a page (its first write's answer lost): A's
    # journal must not survive it, or a rerun of A would skip what B overwrote.
    runs = [(0, 3 * MIB)]
    first = make_vhd(tmp_path, "first", 24, runs, seed=24)
    second = make_vhd(tmp_path, "second", 24, runs, seed=25)
    target = disk(first.stat().st_size)
    journals = tmp_path / "journals"
    engine.upload_vhd(path=first, sas_url=target.sas(), journal_dir=journals)
    # B's first write reached the disk, but B died before it could record it.
    target.admin.upload_page(second.read_bytes()[: 3 * MIB], offset=0, length=3 * MIB)

    class DiesAtFirstWrite(transport.SdkPageBlob):
        def put_pages(self, *_args: object, **_kwargs: object) -> None:
            raise RuntimeError("killed")

    api = DiesAtFirstWrite(target.sas())
    try:
        with pytest.raises(UploadError, match="killed"):
            engine.upload_vhd(path=second, sas_url=target.sas(), journal_dir=journals, api=api)
    finally:
        api.close()
    again = engine.upload_vhd(path=first, sas_url=target.sas(), journal_dir=journals)
    assert target.digest() == sha256_file(first)
    assert again.bytes_sent == again.data_bytes


def test_a_full_verification_that_cannot_finish_keeps_the_journal(tmp_path, disk):
    image = make_vhd(tmp_path, "kept", 24, [(0, 2 * MIB)], seed=26)
    target = disk(image.stat().st_size)
    journals = tmp_path / "journals"
    engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journals)

    class SasGone(transport.SdkPageBlob):
        def read(self, *_args: object) -> bytes:
            raise retry.PageWriteError(403, "AuthenticationFailed", "expired", {})

    api = SasGone(target.sas())
    try:
        with pytest.raises(UploadError, match="SAS"):
            engine.upload_vhd(
                path=image, sas_url=target.sas(), journal_dir=journals, verify="full", api=api
            )
    finally:
        api.close()
    rerun = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journals)
    assert rerun.bytes_sent == 0
    assert rerun.ranges_skipped == rerun.ranges_sent + rerun.ranges_skipped > 0
    assert target.digest() == sha256_file(image)


class RecordingProgress:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def start(self, total: int) -> None:
        self.calls.append(("start", total, 0))

    def update(self, done: int, sent: int) -> None:
        self.calls.append(("update", done, sent))

    def finish(self, done: int, sent: int) -> None:
        self.calls.append(("finish", done, sent))


def is_file(fd: int, path: Path) -> bool:
    """Whether the open file descriptor *fd* is *path*."""
    return Path(f"/proc/self/fd/{fd}").readlink() == path


def transfer_reads_of(image: Path, monkeypatch) -> list[tuple[int, int]]:
    """Every read of *image* once the transfer starts (after the image's header
    and footer are inspected), as ``(offset, length)``."""
    reads: list[tuple[int, int]] = []
    started = threading.Event()
    real_pread, real_preadv, real_pieces = os.pread, os.preadv, engine._pieces

    def record(fd: int, offset: int, length: int) -> None:
        if started.is_set() and is_file(fd, image):
            reads.append((offset, length))

    def pread(fd: int, length: int, offset: int) -> bytes:
        record(fd, offset, length)
        return real_pread(fd, length, offset)

    def preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        got = real_preadv(fd, buffers, offset)
        record(fd, offset, got)
        return got

    def pieces(path: Path, size: int) -> list[tuple[int, int]]:
        started.set()
        return real_pieces(path, size)

    monkeypatch.setattr(os, "pread", pread)
    monkeypatch.setattr(os, "preadv", preadv)
    monkeypatch.setattr(engine, "_pieces", pieces)
    return reads


def test_the_image_is_read_once_and_zero_sectors_are_not_sent(
    tmp_path, disk, fault_proxy, monkeypatch
):
    # Written zeros are data to the filesystem (so they are read) but not to Azure.
    image = tmp_path / "zeros.vhd"
    rng = random.Random(11)  # noqa: S311 - test data
    with image.open("wb") as handle:
        handle.truncate(40 * MIB)
        handle.seek(MIB)
        handle.write(rng.randbytes(MIB) + bytes(MIB + 4096) + rng.randbytes(3 * MIB))
        handle.seek(20 * MIB)
        handle.write(rng.randbytes(5 * MIB))
        handle.seek(40 * MIB)
        handle.write(vhd.build_footer(40 * MIB))
    target = disk(image.stat().st_size)
    pieces = [(p.offset, p.offset + p.length) for p in vhd.data_pieces(image)]
    reads = transfer_reads_of(image, monkeypatch)
    progress = RecordingProgress()
    with fault_proxy(Faults()) as proxy:
        result = engine.upload_vhd(
            path=image,
            sas_url=proxy.url(target.sas()),
            use_journal=False,
            concurrency=2,
            progress=progress,
        )
    assert target.digest() == sha256_file(image)
    # Each byte of the data regions was read once (in cache-sized chunks), nothing
    # else (no separate scan).
    assert sum(n for _, n in reads) == sum(e - s for s, e in pieces)
    assert ranges.merge_spans((o, o + n) for o, n in reads) == ranges.merge_spans(pieces)
    assert max(n for _, n in reads) <= piece.CACHE_CHUNK
    # The 1 MiB + 4 KiB of zeros inside the data were read, not sent.
    assert result.bytes_sent == result.data_bytes == 9 * MIB + 512
    assert proxy.stats.page_bytes == result.bytes_sent
    assert target.ranges() == [
        (MIB, 2 * MIB),
        (3 * MIB + 4096, 6 * MIB + 4096),
        (20 * MIB, 25 * MIB),
        (40 * MIB, 40 * MIB + 512),
    ]
    # Progress counts the data regions, read to the end.
    total = sum(e - s for s, e in pieces)
    assert progress.calls[0] == ("start", total, 0)
    assert progress.calls[-1] == ("finish", total, result.bytes_sent)


def test_a_read_error_stops_the_upload_and_a_rerun_resumes(tmp_path, disk, monkeypatch):
    image = make_vhd(tmp_path, "readerr", 40, [(0, 12 * MIB), (30 * MIB, 1 * MIB)], seed=9)
    target = disk(image.stat().st_size)
    real = os.preadv

    def failing_preadv(fd: int, buffers: list[memoryview], offset: int) -> int:
        if offset == 8 * MIB + piece.CACHE_CHUNK and is_file(fd, image):
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", failing_preadv)
    journal = tmp_path / "journal"
    # The error names the piece it is in.
    with pytest.raises(ImageError, match="cannot read the image at bytes 8388608-12582911: "):
        engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journal, concurrency=1)
    monkeypatch.setattr(os, "preadv", real)
    result = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journal)
    assert target.digest() == sha256_file(image)
    # The data sent before the error is not sent again.
    assert result.bytes_sent == result.data_bytes - 8 * MIB
    assert result.ranges_skipped == 2


def test_second_run_over_a_complete_blob_sends_nothing(tmp_path, disk):
    image = make_vhd(tmp_path, "again", 24, [(0, 5 * MIB)], seed=4)
    target = disk(image.stat().st_size)
    journal = tmp_path / "journal"
    first = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journal)
    second = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journal)
    assert first.bytes_sent == first.data_bytes == 5 * MIB + 512
    assert second.bytes_sent == 0
    assert second.ranges_skipped == 3
    assert second.verified
    # The journal is trusted only where the blob agrees: wiped pages are sent again.
    target.admin.clear_page(offset=0, length=4 * MIB)
    fourth = engine.upload_vhd(path=image, sas_url=target.sas(), journal_dir=journal)
    assert fourth.bytes_sent == 4 * MIB
    assert target.digest() == sha256_file(image)
    # A lost journal costs time, never correctness: everything is sent again.
    third = engine.upload_vhd(path=image, sas_url=target.sas(), use_journal=False)
    assert third.bytes_sent == third.data_bytes
    assert target.digest() == sha256_file(image)


def test_resume_after_the_process_is_killed_sends_only_what_is_missing(tmp_path, disk, fault_proxy):
    image = make_vhd(tmp_path, "resume", 40, [(0, 32 * MIB)], seed=5)
    target = disk(image.stat().st_size)
    journal = tmp_path / "journal"
    sas_file = tmp_path / "sas"
    with fault_proxy(Faults(hold_after=3)) as proxy:
        sas_file.write_text(proxy.url(target.sas()))
        argv = upload_argv(image, sas_file, "--journal-dir", str(journal), "--concurrency", "2")
        proc = subprocess.Popen(
            argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 30
            while proxy.stats.held < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert proxy.stats.page_writes == 3, proc.poll()
            time.sleep(2 * JOURNAL_INTERVAL + 0.5)  # the journal is flushed each second
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        sent_before_kill = proxy.stats.page_bytes
        assert sent_before_kill == 3 * 4 * MIB
        proxy.release()
        second = engine.upload_vhd(
            path=image, sas_url=proxy.url(target.sas()), journal_dir=journal, retry=FAST_RETRY
        )
    assert second.data_bytes == 32 * MIB + 512
    assert second.bytes_sent == second.data_bytes - sent_before_kill
    assert second.ranges_skipped == 3
    assert target.digest() == sha256_file(image)


# --------------------------------------------------------------------------- faults


@pytest.mark.parametrize(("seed", "checksum"), [(1, "auto"), (2, "md5"), (3, "auto")])
def test_upload_through_faults_ends_byte_identical(tmp_path, disk, fault_proxy, seed, checksum):
    rng = random.Random(seed)  # noqa: S311 - test data
    runs = [(i * MIB + rng.randrange(0, 64) * 4096, 256 * 1024) for i in range(20)]
    image = make_vhd(tmp_path, f"faults{seed}", 24, runs, seed=seed)
    target = disk(image.stat().st_size)
    faults = Faults(
        seed=seed,
        reset_before=0.06,
        reset_after=0.06,
        error_500=0.06,
        error_503=0.06,
        throttle_429=0.03,
        stall=0.03,
        stall_seconds=1.5,
        corrupt=0.05,
        all_requests=seed == 3,  # properties and page-range listings fail too
    )
    with fault_proxy(faults) as proxy:
        result = engine.upload_vhd(
            path=image,
            sas_url=proxy.url(target.sas()),
            journal_dir=tmp_path / "journal",
            concurrency=4,
            read_timeout=1.0,
            retry=FAST_RETRY,
            checksum=checksum,
        )
    injected = sum(proxy.stats.injected.values())
    assert injected >= 3, proxy.stats
    # A body corrupted on the way is caught by its checksum, refused, and sent again.
    assert proxy.stats.mismatches == proxy.stats.injected["corrupt"]
    assert set(proxy.stats.checked) == {"crc64" if checksum == "auto" else "md5"}
    assert result.ranges_retried >= 1
    assert result.verified
    assert target.digest() == sha256_file(image)


def test_a_connection_the_server_closed_while_idle_is_opened_again_not_failed(
    tmp_path, disk, fault_proxy
):
    # Servers close idle keep-alive connections without notice (Azure after minutes,
    # Azurite after 5 s); a page write must not be sent into one and fail.
    target = disk(MIB)
    data = random.Random(4).randbytes(512)  # noqa: S311 - test data
    with fault_proxy(Faults(idle_timeout=0.2)) as proxy:
        blob = transport.SdkPageBlob(proxy.url(target.sas()), pool_size=1)
        try:
            blob.put_pages(0, data)
            time.sleep(0.6)  # the proxy has closed the connection by now
            blob.put_pages(512, data)
            blob.clear_pages(0, 512)
        finally:
            blob.close()
    assert proxy.stats.connections == 2
    assert proxy.stats.page_writes == 3  # two updates and a clear
    assert target.ranges() == [(512, 1024)]


def test_uploads_through_the_proxy_the_environment_names(tmp_path, disk, fault_proxy, monkeypatch):
    image = make_vhd(tmp_path, "proxied", 24, [(0, 5 * MIB), (12 * MIB, 4096)], seed=12)
    target = disk(image.stat().st_size)
    with fault_proxy(Faults()) as proxy:
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy.port}")
        result = engine.upload_vhd(path=image, sas_url=target.sas(), use_journal=False)
        monkeypatch.undo()
    assert target.digest() == sha256_file(image)
    # Every page write went through the proxy, naming the whole URL as RFC 9112 asks.
    assert proxy.stats.page_writes == result.ranges_sent == 4  # 4 MiB, 1 MiB, 4 KiB, footer
    assert proxy.stats.proxied == proxy.stats.requests >= result.ranges_sent


@contextlib.contextmanager
def tls_disk(tmp_path: Path, size: int) -> Iterator[tuple[Disk, Path]]:
    """A page blob of *size* bytes in an Azurite serving HTTPS with a self-signed
    certificate; the disk and the certificate."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    write_self_signed(cert, key)
    with run_azurite(location=tmp_path / "azurite", cert=cert, key=key) as azurite:
        service = BlobServiceClient.from_connection_string(
            azurite.connection_string, connection_verify=str(cert)
        )
        admin = service.create_container("disks").get_blob_client("disk.vhd")
        admin.create_page_blob(size)
        yield Disk(azurite, "disks", "disk.vhd", admin), cert


def test_uploads_over_https_and_refuses_an_untrusted_certificate(tmp_path, monkeypatch):
    image = make_vhd(tmp_path, "tls", 24, [(0, 5 * MIB), (12 * MIB, 4096)], seed=13)
    size = image.stat().st_size
    for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    with tls_disk(tmp_path, size) as (target, cert):
        azurite, admin = target.azurite, target.admin
        assert target.sas().startswith("https://")
        # Without trusting the certificate: one clear error, nothing written.
        with pytest.raises(
            UploadError,
            match=r"TLS with https://127\.0\.0\.1:\d+/\S+ failed: .*CERTIFICATE_VERIFY_FAILED",
        ):
            engine.upload_vhd(path=image, sas_url=target.sas(), use_journal=False)
        assert target.ranges() == []
        result = engine.upload_vhd(
            path=image, sas_url=target.sas(), use_journal=False, connection_verify=str(cert)
        )
        assert result.verified
        assert target.digest() == sha256_file(image)
        # The same through a forward proxy (CONNECT), as HTTPS_PROXY asks.
        admin.clear_page(offset=0, length=size)
        with run_fault_proxy(azurite.host, azurite.port, Faults()) as proxy:
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            for name in ("HTTPS_PROXY", "https_proxy"):
                monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
            again = engine.upload_vhd(
                path=image, sas_url=target.sas(), use_journal=False, connection_verify=str(cert)
            )
            for name in ("HTTPS_PROXY", "https_proxy"):
                monkeypatch.delenv(name)
        assert again.bytes_sent == result.bytes_sent
        # The SDK's requests went through it (one tunnel), and so did the page writer's
        # connections (the others).
        assert proxy.stats.tunnels >= 2, proxy.stats.tunnels
        assert target.digest() == sha256_file(image)


def test_a_tunnel_the_proxy_closed_is_opened_again_with_connect(tmp_path, monkeypatch):
    # A closed urllib3 connection forgets its CONNECT tunnel: reopening the same object
    # would start TLS with the proxy itself (and, to an https proxy, send the request
    # with its SAS to the proxy). A new connection, with a new tunnel, is used instead.
    data = random.Random(14).randbytes(512)  # noqa: S311 - test data
    with tls_disk(tmp_path, MIB) as (target, cert):
        azurite = target.azurite
        with run_fault_proxy(azurite.host, azurite.port, Faults(idle_timeout=0.2)) as proxy:
            for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
                monkeypatch.delenv(name, raising=False)
            for name in ("HTTPS_PROXY", "https_proxy"):
                monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
            blob = transport.SdkPageBlob(target.sas(), pool_size=1, connection_verify=str(cert))
            try:
                blob.put_pages(0, data)
                time.sleep(1.0)  # the proxy has closed the idle tunnel by now
                blob.put_pages(512, data)
            finally:
                blob.close()
            for name in ("HTTPS_PROXY", "https_proxy"):
                monkeypatch.delenv(name)
        assert target.ranges() == [(0, 1024)]
    assert proxy.stats.not_http == 0
    assert proxy.stats.tunnels == 2


def test_throttling_honours_retry_after(tmp_path, disk, fault_proxy):
    image = make_vhd(tmp_path, "throttle", 24, [(0, 4096)], seed=6)
    target = disk(image.stat().st_size)
    with fault_proxy(Faults(throttle_429=1.0, retry_after=1)) as proxy:
        started = time.monotonic()
        with pytest.raises(
            UploadError, match=r"put page bytes \d+-\d+ failed 3 times; last: HTTP 429"
        ):
            engine.upload_vhd(
                path=image,
                sas_url=proxy.url(target.sas()),
                use_journal=False,
                retry=retry.RetryPolicy(attempts=3, initial=0.01, maximum=0.01),
            )
        elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 10, "two retries, each after the 1 s the server asked for"
    assert target.ranges() == []


def test_sas_already_expired_is_reported_as_such(tmp_path, disk, fault_proxy):
    image = make_vhd(tmp_path, "expired", 24, [(0, MIB)], seed=7)
    target = disk(image.stat().st_size)
    sas = target.sas(expiry=datetime.now(UTC) - timedelta(minutes=1))
    with fault_proxy(Faults()) as proxy, pytest.raises(SasExpiredError) as caught:
        engine.upload_vhd(path=image, sas_url=proxy.url(sas), use_journal=False)
    assert "expired" in caught.value.message
    assert "nothing was written" in caught.value.message
    assert sig_of(sas) not in str(caught.value)
    assert proxy.stats.requests == 0


def test_sas_expiring_mid_upload_stops_all_workers_and_resumes_with_a_new_one(
    tmp_path, disk, fault_proxy, caplog
):
    caplog.set_level(logging.DEBUG)
    image = make_vhd(tmp_path, "midway", 40, [(0, 32 * MIB)], seed=8)
    target = disk(image.stat().st_size)
    journal = tmp_path / "journal"
    expiry = datetime.now(UTC) + timedelta(seconds=2)
    short = target.sas(expiry=expiry)
    failures: list[BaseException] = []

    def run(sas_url: str) -> None:
        try:
            engine.upload_vhd(path=image, sas_url=sas_url, journal_dir=journal, concurrency=2)
        except BaseException as error:  # noqa: BLE001 - handed to the test thread
            failures.append(error)

    # Two page writes get through, then the proxy holds the upload until the SAS has expired.
    with fault_proxy(Faults(hold_after=2)) as proxy:
        worker = threading.Thread(target=run, args=(proxy.url(short),))
        worker.start()
        while datetime.now(UTC) < expiry + timedelta(seconds=1.1):
            time.sleep(0.05)
        proxy.release()
        worker.join(timeout=60)
        assert len(failures) == 1
        error = failures[0]
        assert isinstance(error, SasExpiredError), error
        assert "expired" in error.message
        assert "put page bytes" in error.message  # which range failed
        assert "fresh SAS" in (error.hint or "")
        written_before = proxy.stats.page_bytes
        assert written_before == 2 * 4 * MIB
        fresh = target.sas()
        result = engine.upload_vhd(path=image, sas_url=proxy.url(fresh), journal_dir=journal)
    assert result.bytes_sent == result.data_bytes - written_before
    assert target.digest() == sha256_file(image)
    for sas in (short, fresh):
        assert sig_of(sas) not in caplog.text
        assert sig_of(sas) not in str(error)


def test_wrong_size_is_refused_with_nothing_written(tmp_path, disk, fault_proxy):
    image = make_vhd(tmp_path, "size", 24, [(0, MIB)], seed=9)
    target = disk(image.stat().st_size + MIB)
    with fault_proxy(Faults()) as proxy, pytest.raises(UploadError) as caught:
        engine.upload_vhd(path=image, sas_url=proxy.url(target.sas()), use_journal=False)
    assert f"holds {image.stat().st_size + MIB} bytes" in caught.value.message
    assert "nothing was written" in caught.value.message
    assert "uploadSizeBytes" in (caught.value.hint or "")
    assert proxy.stats.page_writes == 0
    assert target.ranges() == []


def test_an_image_azure_rejects_is_refused_before_any_request(tmp_path, disk, fault_proxy):
    raw = tmp_path / "plain.raw"
    raw.write_bytes(os.urandom(MIB))
    with raw.open("r+b") as handle:
        handle.truncate(24 * MIB)
    target = disk(24 * MIB)
    with fault_proxy(Faults()) as proxy, pytest.raises(ImageError):
        engine.upload_vhd(path=raw, sas_url=proxy.url(target.sas()), use_journal=False)
    assert proxy.stats.requests == 0
    assert target.ranges() == []


def test_a_read_only_sas_is_refused_with_a_clear_error(tmp_path, disk):
    image = make_vhd(tmp_path, "readonly", 24, [(0, MIB)], seed=10)
    target = disk(image.stat().st_size)
    with pytest.raises(UploadError, match="does not allow writing"):
        engine.upload_vhd(path=image, sas_url=target.sas(write=False), use_journal=False)


def test_a_missing_blob_is_reported_not_created(tmp_path, disk):
    image = make_vhd(tmp_path, "missing", 24, [(0, MIB)], seed=11)
    target = disk(image.stat().st_size)
    target.admin.delete_blob()
    with pytest.raises(UploadError, match="does not exist"):
        engine.upload_vhd(path=image, sas_url=target.sas(), use_journal=False)
    assert not target.admin.exists()


# --------------------------------------------------------------------------- secrets, CLI


def test_no_sas_signature_reaches_logs_errors_or_output(tmp_path, disk, fault_proxy, capfd):
    image = make_vhd(tmp_path, "secret", 24, [(0, 2 * MIB)], seed=12)
    target = disk(image.stat().st_size)
    with fault_proxy(Faults(seed=4, error_500=0.15, reset_before=0.1, all_requests=True)) as proxy:
        sas = proxy.url(target.sas())
        # -vv: our debug logs and the SDK's and urllib3's HTTP logs, which print request URLs.
        code = main(
            [
                "-vv",
                "--json",
                "upload",
                str(image),
                "--sas-url",
                sas,
                "--journal-dir",
                str(tmp_path / "journal"),
            ]
        )
        out, err = capfd.readouterr()
        assert code == 0, err
        assert proxy.stats.injected
        expired = target.sas(expiry=datetime.now(UTC) - timedelta(seconds=5))
        failed = main(
            ["-vv", "upload", str(image), "--sas-url", proxy.url(expired), "--no-journal"]
        )
        out2, err2 = capfd.readouterr()
    assert failed == 6
    assert "expired" in err2
    assert "sig=REDACTED" in err  # the HTTP logs were there, redacted
    for text in (out, err, out2, err2):
        assert sig_of(sas) not in text
        assert sig_of(expired) not in text


def test_cli_prints_the_result_as_json(tmp_path, disk):
    image = make_vhd(tmp_path, "cli", 24, [(0, MIB)], seed=13)
    target = disk(image.stat().st_size)
    sas_file = tmp_path / "sas"
    sas_file.write_text(target.sas() + "\n")
    proc = subprocess.run(
        upload_argv(image, sas_file, "--no-journal", "--verify", "full"),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert list(data) == list(progress.UploadResult(0, 0, 0, 0, 0, 0.0, verified=False).to_json())
    assert data["bytes_sent"] == data["data_bytes"] == MIB + 512
    assert data["verified"] is True
    assert "uploaded" in proc.stderr  # the progress log line (no terminal here)
    assert target.digest() == sha256_file(image)


# --------------------------------------------------------------------------- azcopy backend


def test_azcopy_backend_needs_azcopy_on_path(tmp_path, disk, monkeypatch):
    image = make_vhd(tmp_path, "noazcopy", 24, [(0, MIB)], seed=14)
    target = disk(image.stat().st_size)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(UsageError, match="azcopy is not on PATH"):
        azcopy.upload_with_azcopy(path=image, sas_url=target.sas())


def test_azcopy_backend_runs_azcopy_copy_as_a_page_blob(tmp_path, disk, monkeypatch, caplog):
    # azcopy is not packaged for Debian and cannot be downloaded here: a stand-in script
    # records its arguments. What is tested is our command line and our error handling.
    caplog.set_level(logging.DEBUG)
    image = make_vhd(tmp_path, "azcopy", 24, [(0, MIB)], seed=15)
    target = disk(image.stat().st_size)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    record = tmp_path / "argv.json"
    fake = bindir / "azcopy"
    fake.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"json.dump(sys.argv[1:], open({str(record)!r}, 'w'))\n"
        "print('INFO: copying to ' + sys.argv[3])\n"
        "sys.exit(int(__import__('os').environ.get('FAKE_AZCOPY_STATUS', '0')))\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    sas = target.sas()
    result = azcopy.upload_with_azcopy(path=image, sas_url=sas)
    assert json.loads(record.read_text()) == ["copy", str(image), sas, "--blob-type", "PageBlob"]
    assert result.data_bytes == MIB + 512
    assert not result.verified
    monkeypatch.setenv("FAKE_AZCOPY_STATUS", "3")
    with pytest.raises(UploadError, match="azcopy failed with status 3") as caught:
        azcopy.upload_with_azcopy(path=image, sas_url=sas)
    assert sig_of(sas) not in str(caught.value)
    assert sig_of(sas) not in caplog.text


# --------------------------------------------------------------------------- strict Azurite


def test_upload_to_a_strict_azurite_falls_back_to_md5_with_one_warning(tmp_path):
    # Azurite's default mode answers a CRC64 header 500 FeatureNotSupported: permanent, not
    # retried; the upload switches to Content-MD5 once and goes on.
    image = make_vhd(tmp_path, "strict", 24, [(0, 5 * MIB), (12 * MIB, 3 * MIB)], seed=21)
    with run_azurite(location=tmp_path / "azurite", loose=False) as strict:
        service = BlobServiceClient.from_connection_string(strict.connection_string)
        service.create_container("disks")
        admin = service.get_container_client("disks").get_blob_client("strict.vhd")
        admin.create_page_blob(image.stat().st_size)
        target = Disk(strict, "disks", "strict.vhd", admin)
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "nixos_azure_publish",
                "upload",
                str(image),
                "--sas-url",
                target.sas(),
                "--no-journal",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        warnings = [line for line in proc.stderr.splitlines() if "WARNING" in line.upper()]
        assert len(warnings) == 1, proc.stderr
        assert "CRC64" in warnings[0]
        assert "Content-MD5" in warnings[0]
        assert time.monotonic() - started < 30  # no rounds of retries
        assert target.digest() == sha256_file(image)

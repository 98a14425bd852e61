"""An image from an ``https://`` URL, streamed into a page blob: nothing stored locally.

The URL is read once, front to back, in pieces of one Put Page (4 MiB); the
non-zero sectors of each piece are written while the next pieces are read, at
most *concurrency* pieces in memory at a time. ``--sha256`` is checked over
the whole stream before the upload counts as complete. Before anything is
written the URL is probed: its size (a fixed VHD is whole MiB plus its 512-byte
footer), the footer itself (read with one ranged GET), whether it is an Azure
blob (``x-ms-blob-type``), and an expired SAS is reported as such.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import random
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import urllib3

from nixos_azure_publish import __version__, vhd
from nixos_azure_publish.errors import ImageError, Interrupted, SourceSasExpiredError, UploadError
from nixos_azure_publish.upload.limits import DEFAULT_CONCURRENCY
from nixos_azure_publish.upload.progress import LogProgress, UploadResult
from nixos_azure_publish.upload.ranges import merge_spans
from nixos_azure_publish.upload.retry import (
    RetryPolicy,
    display_url,
    sas_expiry,
    with_retries,
)
from nixos_azure_publish.upload.transport import SdkPageBlob
from nixos_azure_publish.vhd.format import Footer

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nixos_azure_publish.upload.progress import ProgressSink
    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)

PIECE: Final = 4 * 1024 * 1024
MIB: Final = 1024 * 1024
FIXED: Final = 2


@dataclass(frozen=True)
class UrlImage:
    """What a probe of the URL found."""

    url: str
    """Without its query: safe to show and to tag."""
    size: int
    blob_type: str | None
    version: str
    """What identifies this content: the ETag, else Last-Modified and size."""
    footer: Footer


def _pool(*, connection_verify: bool | str) -> urllib3.PoolManager:
    kwargs: dict[str, Any] = {"retries": urllib3.Retry(total=3, backoff_factor=0.5)}
    if connection_verify is False:
        kwargs["cert_reqs"] = "CERT_NONE"
    elif isinstance(connection_verify, str):
        kwargs["ca_certs"] = connection_verify
    return urllib3.PoolManager(
        headers={"User-Agent": f"nixos-azure-publish/{__version__}"}, **kwargs
    )


def check_sas(url: str, *, now: dt.datetime | None = None) -> None:
    """Refuse a source URL whose SAS has expired: Azure would answer 403 to every read."""
    expiry = sas_expiry(url)
    moment = now or dt.datetime.now(dt.UTC)
    if expiry is not None and expiry <= moment:
        raise SourceSasExpiredError(
            f"the SAS of {display_url(url)} expired at {expiry.isoformat()}",
            hint="Ask for a new SAS URL of the source (e.g. `az disk grant-access` or"
            " `az storage blob generate-sas`) and run again",
        )


def probe(url: str, *, connection_verify: bool | str = True) -> UrlImage:
    """Size, blob type, version and footer of the VHD at *url*; an error when it is not one."""
    check_sas(url)
    shown = display_url(url)
    pool = _pool(connection_verify=connection_verify)
    try:
        head = pool.request("HEAD", url, timeout=urllib3.Timeout(connect=20, read=60))
        _check_status(head.status, head.headers, shown)
        size = int(head.headers.get("Content-Length") or 0)
        if size < MIB + vhd.SECTOR or (size - vhd.SECTOR) % MIB:
            raise ImageError(
                f"{shown} is {size} bytes: a fixed VHD for Azure is a whole number of MiB"
                " plus its 512-byte footer",
                hint="Point at a fixed, MiB-aligned VHD (`nixos-azure-publish convert` makes one)",
            )
        tail = pool.request(
            "GET",
            url,
            headers={"Range": f"bytes={size - vhd.SECTOR}-{size - 1}"},
            timeout=urllib3.Timeout(connect=20, read=60),
        )
        _check_status(tail.status, tail.headers, shown)
        raw = tail.data[-vhd.SECTOR :]
    except urllib3.exceptions.HTTPError as error:
        raise UploadError(
            f"cannot read {shown}: {error}", hint="Check the URL and the network", rerun_helps=True
        ) from None
    finally:
        pool.clear()
    footer = Footer.parse(raw) if len(raw) == vhd.SECTOR else None
    if (
        footer is None
        or footer.cookie != b"conectix"
        or not footer.checksum_ok
        or footer.disk_type != FIXED
        or footer.current_size != size - vhd.SECTOR
    ):
        raise ImageError(
            f"{shown} does not end in the footer of a fixed VHD of its size",
            hint="Point at a fixed VHD (dynamic VHDs are converted with `nixos-azure-publish"
            " convert` first)",
        )
    etag = head.headers.get("ETag")
    version = etag.strip('"') if etag else f"{head.headers.get('Last-Modified', '')}/{size}"
    return UrlImage(
        url=shown,
        size=size,
        blob_type=head.headers.get("x-ms-blob-type"),
        version=version,
        footer=footer,
    )


def _check_status(status: int, headers: Any, shown: str) -> None:  # noqa: ANN401
    if status in {200, 206}:
        return
    code = headers.get("x-ms-error-code") or ""
    if code == "AuthenticationFailed" or (status == 403 and "expired" in code.lower()):  # noqa: PLR2004
        raise SourceSasExpiredError(
            f"{shown} refused access ({status} {code}): its SAS has expired or is not valid",
            hint="Ask for a new SAS URL of the source and run again",
        )
    raise UploadError(
        f"{shown} answered {status}{f' {code}' if code else ''}",
        hint="Check that the URL is right and readable (a public blob, or a SAS with read)",
        rerun_helps=status >= 500,  # noqa: PLR2004
    )


class _Writer:
    """The page writes of one stream: bounded in flight, retried, counted."""

    def __init__(
        self, blob: SdkPageBlob, *, sas_url: str, concurrency: int, retry: RetryPolicy
    ) -> None:
        self.blob = blob
        self.sas_url = sas_url
        self.retry = retry
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.concurrency = concurrency
        self.slots = threading.BoundedSemaphore(concurrency)
        self.bytes_sent = self.ranges_sent = self.retried = 0
        self.written: list[Span] = []
        self.rng = random.Random()  # noqa: S311 - jitter, not secrets

    def put(self, offset: int, data: bytes, runs: list[Span]) -> None:
        """Write the runs of one piece (a worker; the piece's slot is freed at the end)."""
        try:
            for lo, hi in runs:
                self._put_run(offset + lo, memoryview(data)[lo:hi])
                with self.lock:
                    self.bytes_sent += hi - lo
                    self.ranges_sent += 1
                    self.written.append((offset + lo, offset + hi))
        finally:
            self.slots.release()

    def _put_run(self, offset: int, data: memoryview) -> None:
        with_retries(
            lambda: self.blob.put_pages(offset, data),
            what=f"writing bytes {offset}-{offset + len(data) - 1}",
            sas_url=self.sas_url,
            policy=self.retry,
            stop=self.stop,
            rng=self.rng,
            hint="Check the network and the storage endpoint, then run again",
            on_retry=self._count_retry,
        )

    def _count_retry(self) -> None:
        with self.lock:
            self.retried += 1


def stream_into(
    *,
    url: str,
    sas_url: str,
    size: int,
    sha256: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    connection_verify: bool | str = True,
    destination_verify: bool | str = True,
    progress: ProgressSink | None = None,
    retry: RetryPolicy | None = None,
) -> UploadResult:
    """Stream the VHD at *url* into the page blob behind *sas_url*; only non-zero sectors.

    Memory holds at most *concurrency* + 1 pieces. Raises :class:`ImageError`
    when the stream ends early or its sha256 differs, :class:`UploadError` on
    write failures that retries did not cure.
    """
    began = time.monotonic()
    sink = progress or LogProgress()
    blob = SdkPageBlob(sas_url, pool_size=concurrency, connection_verify=destination_verify)
    writer = _Writer(blob, sas_url=sas_url, concurrency=concurrency, retry=retry or RetryPolicy())
    try:
        digest = _pump(
            url, size, writer, sink, connection_verify=connection_verify, hashed=sha256 is not None
        )
        if sha256 is not None and digest != sha256.lower():
            raise ImageError(
                f"{display_url(url)} has sha256 {digest}, not the expected {sha256.lower()}",
                hint="Check --sha256 and the URL; nothing was published",
            )
        expected = merge_spans(writer.written)
        if merge_spans(blob.page_ranges(0, size)) != expected:
            raise UploadError(
                "the disk's written pages differ from what was sent",
                hint="Run again: the upload disk is replaced",
                rerun_helps=True,
            )
    finally:
        blob.close()
    return UploadResult(
        bytes_sent=writer.bytes_sent,
        data_bytes=writer.bytes_sent,
        ranges_sent=writer.ranges_sent,
        ranges_skipped=0,
        ranges_retried=writer.retried,
        seconds=time.monotonic() - began,
        verified=True,
    )


def _pump(
    url: str,
    size: int,
    writer: _Writer,
    sink: ProgressSink,
    *,
    connection_verify: bool | str,
    hashed: bool,
) -> str:
    """Read the URL once, hand each piece's non-zero runs to the writers; its sha256 when
    *hashed* (hashing costs more CPU here than reading the stream over TLS)."""
    shown = display_url(url)
    digest = hashlib.sha256() if hashed else None
    pool = _pool(connection_verify=connection_verify)
    futures: list[Future[None]] = []
    done = 0
    sink.start(size)
    try:
        response = pool.request(
            "GET", url, preload_content=False, timeout=urllib3.Timeout(connect=20, read=120)
        )
        _check_status(response.status, response.headers, shown)
        with ThreadPoolExecutor(max_workers=writer.concurrency) as workers:
            try:
                while done < size and not any(f.done() and f.exception() for f in futures):
                    want = min(PIECE, size - done)
                    data = _read(response, want, at=done, size=size, shown=shown)
                    if digest is not None:
                        digest.update(data)
                    runs = list(vhd.sector_runs(data, 0, len(data)))
                    if runs:
                        writer.slots.acquire()  # bounded memory: wait for a free slot
                        futures.append(workers.submit(writer.put, done, data, runs))
                    done += len(data)
                    with writer.lock:
                        sink.update(done, writer.bytes_sent)
                finished, _ = wait(futures, return_when=FIRST_EXCEPTION)
                _raise_first(finished)
            except BaseException:
                writer.stop.set()  # the writers still running give up at once
                raise
        response.release_conn()
    except KeyboardInterrupt:
        raise Interrupted(
            f"streaming {shown} interrupted", hint="Run the same command again"
        ) from None
    except urllib3.exceptions.HTTPError as error:
        raise UploadError(
            f"reading {shown} failed: {error}", hint="Run again", rerun_helps=True
        ) from None
    finally:
        pool.clear()
        sink.finish(done, writer.bytes_sent)
    return digest.hexdigest() if digest is not None else ""


def _raise_first(futures: Iterable[Future[None]]) -> None:
    for future in futures:
        error = future.exception()
        if error is not None:
            raise error


def _read(response: Any, length: int, *, at: int, size: int, shown: str) -> bytes:  # noqa: ANN401
    """Exactly *length* bytes of the stream (a short read means it ended early)."""
    parts = []
    got = 0
    while got < length:
        chunk = response.read(length - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    if got < length:
        raise ImageError(
            f"{shown} ended at byte {at + got} of {size}",
            hint="The source changed or the connection broke; run again",
        )
    return b"".join(parts)

"""An image from an ``https://`` URL, streamed into a page blob: nothing stored locally.

Before anything is written the URL is probed: its size (a fixed VHD is whole
MiB plus its 512-byte footer), the footer itself (read with one ranged GET),
whether it is an Azure blob (``x-ms-blob-type``), whether it serves byte
ranges (``Accept-Ranges: bytes`` and a 206 for the footer), and an expired SAS
is reported as such.

The stream is a bounded pipeline over pieces of one Put Page (4 MiB), each read
straight into a reused buffer (``readinto``, no bytes objects per read):

- readers: a server that serves ranges is read by :data:`READERS` connections
  at once, one ranged GET per piece (retried on its own when it fails, with
  ``If-Match`` the probed ETag, so a source that changes midway is caught);
  any other by one GET of the whole URL, front to back;
- as soon as a piece is read its non-zero sectors are found (in C: ``find`` of
  a zero sector, and ``memcmp`` of slices) and handed to the writers;
- writers: *concurrency* Put Page requests in flight, one per non-zero run of
  a piece (at most 4 MiB), retried like ``upload``'s;
- with ``--sha256`` the pieces are hashed in file order as they complete, by
  whichever thread completes the next one (hashlib releases the GIL meanwhile).

Memory: at most ``readers + concurrency`` piece buffers (48 MiB with the
defaults). A reader takes a buffer and the next piece's number in one step,
so the piece the in-order hash waits for always holds a buffer: the pipeline
cannot deadlock on its bound. bench/RESULTS.md has the measurements.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import logging
import random
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar
from urllib.parse import urlsplit

import urllib3

from nixos_azure_publish import __version__, vhd
from nixos_azure_publish.errors import (
    ImageError,
    InternalError,
    Interrupted,
    SourceSasExpiredError,
    UploadError,
)
from nixos_azure_publish.upload.limits import DEFAULT_CONCURRENCY, MAX_PAGE_WRITE
from nixos_azure_publish.upload.progress import LogProgress, UploadResult
from nixos_azure_publish.upload.ranges import merge_spans
from nixos_azure_publish.upload.retry import (
    PageWriteError,
    RetryPolicy,
    display_url,
    sas_expiry,
    with_retries,
)
from nixos_azure_publish.upload.transport import SdkPageBlob
from nixos_azure_publish.vhd.format import Footer

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from nixos_azure_publish.upload.progress import ProgressSink
    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)

PIECE: Final = MAX_PAGE_WRITE
MIB: Final = 1024 * 1024
FIXED: Final = 2
READERS: Final = 4
"""Ranged GETs of the source in flight. More connections than cores still pays: a
reader waits for its response while the others decrypt (bench/RESULTS.md)."""
READ_TIMEOUT: Final = 120.0
_TRANSIENT_READ: Final = frozenset({408, 429, 500, 502, 503, 504})
_T = TypeVar("_T")


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
    ranges: bool = False
    """The server serves byte ranges: it says so, and answered the footer's GET with 206."""
    etag: str | None = None
    """A strong ETag, sent as ``If-Match`` with each ranged GET."""


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
    ranges = (
        head.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
        and tail.status == 206  # noqa: PLR2004
        and tail.headers.get("Content-Range", "").startswith(f"bytes {size - vhd.SECTOR}-")
    )
    return UrlImage(
        url=shown,
        size=size,
        blob_type=head.headers.get("x-ms-blob-type"),
        version=version,
        footer=footer,
        ranges=ranges,
        etag=etag if etag and not etag.startswith("W/") else None,
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


def _tls_context(*, verify: bool | str) -> ssl.SSLContext:
    """The source's TLS settings, as the probe's urllib3 pool has them: the CA bundle
    given (and only it), else the system's certificates; or no verification at all."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # host names and certificates checked
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if verify is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        if Path(verify).is_dir():
            context.load_verify_locations(capath=verify)
        else:
            context.load_verify_locations(cafile=verify)
    else:
        context.load_default_certs()
    return context


class _Source:
    """GET requests to the URL over one keep-alive connection of one reader thread."""

    def __init__(self, url: str, context: ssl.SSLContext) -> None:
        parts = urlsplit(url)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._target = f"{parts.path or '/'}{f'?{parts.query}' if parts.query else ''}"
        self._context = context
        self._conn: http.client.HTTPConnection | None = None

    def get(self, headers: dict[str, str]) -> http.client.HTTPResponse:
        if self._conn is None:
            self._conn = (
                http.client.HTTPSConnection(
                    self._host, self._port, timeout=READ_TIMEOUT, context=self._context
                )
                if self._https
                else http.client.HTTPConnection(self._host, self._port, timeout=READ_TIMEOUT)
            )
        try:
            self._conn.request(
                "GET",
                self._target,
                headers={"User-Agent": f"nixos-azure-publish/{__version__}", **headers},
            )
            return self._conn.getresponse()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _read_into(response: http.client.HTTPResponse, view: memoryview) -> int:
    """Fill *view* from the body; the bytes read (fewer: the body ended)."""
    got = 0
    while got < len(view):
        n = response.readinto(view[got:])
        if not n:
            break
        got += n
    return got


class _Buffers:
    """The piece buffers, at most *count*, reused; each taken with the next piece's number."""

    def __init__(self, count: int, pieces: int, stop: threading.Event) -> None:
        self._count = count
        self._made = 0
        self._free: list[bytearray] = []
        self._next = 0
        self._pieces = pieces
        self._stop = stop
        self._cond = threading.Condition()

    def take(self) -> tuple[int, bytearray] | None:
        """The next piece and a buffer for it; None when all are taken or the stream stops."""
        with self._cond:
            while True:
                if self._stop.is_set() or self._next >= self._pieces:
                    return None
                if self._free:
                    buffer = self._free.pop()
                    break
                if self._made < self._count:
                    self._made += 1
                    buffer = bytearray(PIECE)
                    break
                self._cond.wait(0.2)
            index = self._next
            self._next += 1
            return index, buffer

    def give(self, buffer: bytearray) -> None:
        with self._cond:
            if any(free is buffer for free in self._free):
                # Two pieces would be read into one buffer: corrupt data, sent as it is.
                raise InternalError("internal: a piece buffer was given back twice")
            self._free.append(buffer)
            self._cond.notify()


class _Digest:
    """sha256 of pieces completed in any order, hashed in file order."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.hashed = 0
        self._ready: dict[int, tuple[memoryview, Callable[[], None]]] = {}
        self._busy = False
        self._lock = threading.Lock()

    def add(self, index: int, data: memoryview, done: Callable[[], None]) -> None:
        """Piece *index*; *done* runs once it is hashed. The caller hashes whatever is
        next in order, unless another thread already does."""
        with self._lock:
            self._ready[index] = (data, done)
            if self._busy:
                return
            self._busy = True
        while True:
            with self._lock:
                item = self._ready.pop(self.hashed, None)
                if item is None:
                    self._busy = False
                    return
                self.hashed += 1
            self.hash.update(item[0])
            item[1]()


@dataclass
class _Piece:
    offset: int
    buffer: bytearray
    holds: int
    """Parts of the pipeline still using the buffer (its writes, its hash)."""


class _Stream:
    """One stream: its readers, writers, buffers, digest and counters."""

    def __init__(
        self,
        *,
        url: str,
        size: int,
        blob: SdkPageBlob,
        sas_url: str,
        etag: str | None,
        context: ssl.SSLContext,
        retry: RetryPolicy,
        sink: ProgressSink,
        hashed: bool,
        readers: int,
        concurrency: int,
    ) -> None:
        self.url = url
        self.shown = display_url(url)
        self.size = size
        self.blob = blob
        self.sas_url = sas_url
        self.etag = etag
        self.context = context
        self.retry = retry
        self.sink = sink
        self.pieces = -(-size // PIECE)
        self.stop = threading.Event()
        self.buffers = _Buffers(readers + concurrency, self.pieces, self.stop)
        self.digest = _Digest() if hashed else None
        self.lock = threading.Lock()
        self.failures: list[BaseException] = []
        self.done = self.bytes_sent = self.ranges_sent = self.retried = 0
        self.written: list[Span] = []
        self.rng = random.Random()  # noqa: S311 - jitter, not secrets
        self.writers = ThreadPoolExecutor(concurrency, thread_name_prefix="stream-write")

    # -- failures

    def fail(self, error: BaseException) -> None:
        with self.lock:
            self.failures.append(error)
        self.stop.set()

    def count_retry(self) -> None:
        with self.lock:
            self.retried += 1

    def call(self, fn: Callable[[], _T], *, what: str, reading: bool) -> _T:
        """*fn*, one request to the source (*reading*) or the disk, retried and counted."""
        return with_retries(
            fn,
            what=what,
            sas_url=self.url if reading else self.sas_url,
            policy=self.retry,
            stop=self.stop,
            rng=self.rng,
            hint="Check the URL and the network, then run again"
            if reading
            else "Check the network and the storage endpoint, then run again",
            on_retry=self.count_retry,
        )

    def next_pieces(self) -> Iterator[tuple[int, bytearray, memoryview]]:
        """The pieces this reader takes, each with a buffer: offset, buffer, the view to fill."""
        while (taken := self.buffers.take()) is not None:
            index, buffer = taken
            start = index * PIECE
            yield start, buffer, memoryview(buffer)[: min(PIECE, self.size - start)]

    # -- readers

    def read_ranges(self) -> None:
        """A reader thread: ranged GETs of the next pieces until none is left."""
        source = _Source(self.url, self.context)
        try:
            for start, buffer, view in self.next_pieces():
                self.call(
                    lambda: self._get_range(source, start, view),  # noqa: B023 - called at once
                    what=f"reading bytes {start}-{start + len(view) - 1} of {self.shown}",
                    reading=True,
                )
                self.piece_read(start, buffer, len(view))
        except BaseException as error:  # noqa: BLE001 - the caller raises the first
            self.fail(error)
        finally:
            source.close()

    def _get_range(self, source: _Source, start: int, view: memoryview) -> None:
        end = start + len(view) - 1
        headers = {"Range": f"bytes={start}-{end}"}
        if self.etag:
            headers["If-Match"] = self.etag
        response = source.get(headers)
        if response.status != 206:  # noqa: PLR2004
            source.close()  # not reading what may be the whole file
            self._refuse(response, wanted=f"bytes {start}-{end}")
        if not response.getheader("Content-Range", "").startswith(f"bytes {start}-{end}/"):
            source.close()
            raise UploadError(
                f"{self.shown} answered bytes {start}-{end} with"
                f" {response.getheader('Content-Range', 'no Content-Range')}",
                hint="The server does not serve byte ranges as it says; run again",
                rerun_helps=True,
            )
        got = _read_into(response, view)
        if got < len(view):
            source.close()
            raise http.client.IncompleteRead(b"", len(view) - got)  # transient: retried

    def _refuse(self, response: http.client.HTTPResponse, *, wanted: str) -> None:
        status = response.status
        if status == 412:  # noqa: PLR2004 - If-Match failed
            raise ImageError(
                f"{self.shown} changed while it was read (its ETag is no longer {self.etag})",
                hint="Run again: the new content is read from the start",
            )
        if status in _TRANSIENT_READ:
            raise PageWriteError(status, "", response.reason or "", dict(response.headers))
        _check_status(status, response.headers, self.shown)
        raise UploadError(
            f"{self.shown} answered {wanted} with {status} instead of 206",
            hint="The server does not serve byte ranges as it says; run again",
            rerun_helps=True,
        )

    def read_whole(self) -> None:
        """The one reader of a server without ranges: one GET, read front to back."""
        source = _Source(self.url, self.context)
        try:
            response = self.call(
                lambda: self._get_whole(source), what=f"reading {self.shown}", reading=True
            )
            for start, buffer, view in self.next_pieces():
                self._read_next(response, start, view)
                self.piece_read(start, buffer, len(view))
        except BaseException as error:  # noqa: BLE001 - the caller raises the first
            self.fail(error)
        finally:
            source.close()

    def _read_next(self, response: http.client.HTTPResponse, start: int, view: memoryview) -> None:
        try:
            got = _read_into(response, view)
        except (OSError, http.client.HTTPException) as error:
            raise UploadError(
                f"reading {self.shown} failed at byte {start}: {error}",
                hint="Run again",
                rerun_helps=True,
            ) from None
        if got < len(view):
            raise ImageError(
                f"{self.shown} ended at byte {start + got} of {self.size}",
                hint="The source changed or the connection broke; run again",
            )

    def _get_whole(self, source: _Source) -> http.client.HTTPResponse:
        response = source.get({})
        if response.status in _TRANSIENT_READ:
            source.close()
            raise PageWriteError(response.status, "", response.reason or "", dict(response.headers))
        _check_status(response.status, response.headers, self.shown)
        if response.length is not None and response.length != self.size:
            response.close()
            raise ImageError(
                f"{self.shown} is now {response.length} bytes, not {self.size}",
                hint="The source changed since it was probed; run again",
            )
        return response

    # -- what follows a read

    def piece_read(self, offset: int, buffer: bytearray, length: int) -> None:
        """Hand a piece's non-zero runs to the writers and the piece to the digest."""
        runs = list(vhd.sector_runs(buffer, 0, length))
        holds = bool(runs) + (self.digest is not None)
        piece = _Piece(offset, buffer, holds=holds)
        if not holds:
            self.buffers.give(buffer)
        if runs:
            self.writers.submit(self.write, piece, runs)
        if self.digest is not None:
            self.digest.add(offset // PIECE, memoryview(buffer)[:length], lambda: self.free(piece))
        with self.lock:
            self.done += length
            self.sink.update(self.done, self.bytes_sent)

    def free(self, piece: _Piece) -> None:
        with self.lock:
            piece.holds -= 1
            last = piece.holds == 0
        if last:
            self.buffers.give(piece.buffer)

    def write(self, piece: _Piece, runs: list[Span]) -> None:
        """A writer: the Put Page requests of one piece's non-zero runs."""
        view = memoryview(piece.buffer)
        try:
            for lo, hi in runs:
                if self.stop.is_set():
                    return
                offset = piece.offset + lo
                self.call(
                    lambda: self.blob.put_pages(offset, view[lo:hi]),  # noqa: B023 - called at once
                    what=f"writing bytes {offset}-{piece.offset + hi - 1}",
                    reading=False,
                )
                with self.lock:
                    self.bytes_sent += hi - lo
                    self.ranges_sent += 1
                    self.written.append((offset, piece.offset + hi))
        except BaseException as error:  # noqa: BLE001 - the caller raises the first
            self.fail(error)
        finally:
            self.free(piece)

    # -- the whole

    def run(self, *, ranges: bool, readers: int) -> None:
        """Read every piece and write its data; raise the first failure."""
        count = min(readers, self.pieces) if ranges else 1
        threads = [
            threading.Thread(
                target=self.read_ranges if ranges else self.read_whole,
                name=f"stream-read-{n}",
                daemon=True,
            )
            for n in range(count)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        except BaseException:
            self.stop.set()  # readers and writers still running give up at once
            raise
        finally:
            self.writers.shutdown(wait=True)
        if self.failures:
            raise self.failures[0]
        if self.done != self.size or (self.digest and self.digest.hashed != self.pieces):
            raise UploadError(  # pragma: no cover - a stop without a failure
                f"streaming {self.shown} stopped at byte {self.done} of {self.size}",
                hint="Run again",
                rerun_helps=True,
            )


def stream_into(
    *,
    url: str,
    sas_url: str,
    size: int,
    sha256: str | None = None,
    ranges: bool = False,
    etag: str | None = None,
    readers: int = READERS,
    concurrency: int = DEFAULT_CONCURRENCY,
    connection_verify: bool | str = True,
    destination_verify: bool | str = True,
    progress: ProgressSink | None = None,
    retry: RetryPolicy | None = None,
) -> UploadResult:
    """Stream the VHD at *url* into the page blob behind *sas_url*; only non-zero sectors.

    *ranges*: the server serves byte ranges (:func:`probe` says), so *readers*
    ranged GETs run at once, each with ``If-Match: etag`` when *etag* is given.
    Memory holds at most *readers* + *concurrency* pieces of 4 MiB. Raises
    :class:`ImageError` when the stream ends early, the source changes or its
    sha256 differs, :class:`UploadError` on failures that retries did not cure.
    """
    began = time.monotonic()
    sink = progress or LogProgress()
    blob = SdkPageBlob(sas_url, pool_size=concurrency, connection_verify=destination_verify)
    stream = _Stream(
        url=url,
        size=size,
        blob=blob,
        sas_url=sas_url,
        etag=etag,
        context=_tls_context(verify=connection_verify),
        retry=retry or RetryPolicy(),
        sink=sink,
        hashed=sha256 is not None,
        readers=readers,
        concurrency=concurrency,
    )
    sink.start(size)
    try:
        try:
            stream.run(ranges=ranges, readers=readers)
        except KeyboardInterrupt:
            raise Interrupted(
                f"streaming {display_url(url)} interrupted", hint="Run the same command again"
            ) from None
        finally:
            sink.finish(stream.done, stream.bytes_sent)
        if stream.digest is not None and sha256 is not None:
            digest = stream.digest.hash.hexdigest()
            if digest != sha256.lower():
                raise ImageError(
                    f"{display_url(url)} has sha256 {digest}, not the expected {sha256.lower()}",
                    hint="Check --sha256 and the URL; nothing was published",
                )
        if merge_spans(blob.page_ranges(0, size)) != merge_spans(stream.written):
            raise UploadError(
                "the disk's written pages differ from what was sent",
                hint="Run again: the upload disk is replaced",
                rerun_helps=True,
            )
    finally:
        blob.close()
    return UploadResult(
        bytes_sent=stream.bytes_sent,
        data_bytes=stream.bytes_sent,
        ranges_sent=stream.ranges_sent,
        ranges_skipped=0,
        ranges_retried=stream.retried,
        seconds=time.monotonic() - began,
        verified=True,
    )

"""The upload engine: writes a fixed VHD into an existing page blob through its SAS URL.

This is where a publish spends most of its time, so it sends only what must
be sent. It never creates, resizes or deletes the blob (a managed disk's
upload blob must only receive pages). The plan:

1. refuse unless the image is Azure-ready and the blob's size equals the file size;
2. list the blob's page ranges once, and load the local journal of ranges
   finished by an earlier run (one per blob, by URL and creation time, for
   the file it names: :class:`Journal`);
3. send every data extent of the image (the VHD module's: non-zero sectors,
   at most 4 MiB each) with a bounded pool of workers, except extents an
   earlier run finished and the blob still holds. The workers take the
   filesystem's data regions in pieces of 4 MiB and read each piece once,
   finding its extents and their checksums as they read (:mod:`.piece`);
4. clear the pages the blob holds where the image has no data (a reused disk);
5. verify: the blob's page ranges equal the expected ones, or (``full``)
   read every data range back and compare digests.

Transient failures retry per request with exponential backoff and jitter,
honouring ``Retry-After``; a fatal one (expired SAS, missing blob) stops every
worker and names the range. SAS URLs only ever appear in logs and errors as
their redacted form.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

from nixos_azure_publish import checksum as checksums
from nixos_azure_publish import state, vhd
from nixos_azure_publish.errors import (
    ImageError,
    InternalError,
    Interrupted,
    SasExpiredError,
    UploadError,
    UsageError,
)
from nixos_azure_publish.upload import Verify, piece
from nixos_azure_publish.upload.journal import JOURNAL_INTERVAL, Journal
from nixos_azure_publish.upload.limits import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    MAX_PAGE_WRITE,
    MIN_CONCURRENCY,
    PAGE,
)
from nixos_azure_publish.upload.progress import LogProgress, ProgressSink, UploadResult, mib
from nixos_azure_publish.upload.ranges import (
    clip_spans,
    merge_spans,
    span_text,
    split_span,
    subtract_spans,
)
from nixos_azure_publish.upload.retry import (
    SAS_HINT,
    RetryPolicy,
    display_url,
    sas_expiry,
    with_retries,
)
from nixos_azure_publish.upload.transport import BlobInfo, Checksum, PageBlobApi, SdkPageBlob

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path

    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)

BUFFER_BUDGET: Final = 32 * 1024 * 1024
"""Image bytes in flight at once, whatever the concurrency. With the idle buffers kept
for reuse, the image data in memory stays under twice this."""
PAGE_RANGE_WINDOW: Final = 64 * 1024**3
"""List page ranges in windows, so that a fragmented large disk never times out one call."""

_T = TypeVar("_T")


class _Stopped(Exception):  # noqa: N818 - control flow, never shown
    """Another worker failed; this one stops quietly."""


class _Budget:
    """A counting semaphore over bytes: bounds the image data held in memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int, stop: threading.Event) -> Iterator[None]:
        amount = min(amount, self._limit)
        with self._cond:
            while self._used + amount > self._limit:
                if stop.is_set():
                    raise _Stopped
                self._cond.wait(0.1)
            self._used += amount
        try:
            yield
        finally:
            with self._cond:
                self._used -= amount
                self._cond.notify_all()


@dataclass
class _Counters:
    bytes_sent: int = 0
    done: int = 0
    ranges_sent: int = 0
    ranges_skipped: int = 0
    ranges_cleared: int = 0
    retried: set[Span] = field(default_factory=set)


class _Engine:
    def __init__(
        self,
        *,
        api: PageBlobApi,
        fd: int,
        sas_url: str,
        concurrency: int,
        retry: RetryPolicy,
        progress: ProgressSink,
        journal: Journal,
    ) -> None:
        self.api = api
        self.fd = fd
        self.sas_url = sas_url
        self.concurrency = concurrency
        self.retry = retry
        self.progress = progress
        self.journal = journal
        self.stop = threading.Event()
        self.budget = _Budget(max(BUFFER_BUDGET, MAX_PAGE_WRITE))
        self.buffers: list[bytearray] = []
        """Idle piece buffers of MAX_PAGE_WRITE bytes, for reuse."""
        self.read_lock = threading.Lock()
        """One worker reads a piece at a time. Reading is far faster than sending, and
        readers taking turns neither fight over the GIL between the chunks of their
        pieces nor break the disk's sequential read-ahead (see bench/RESULTS.md)."""
        self.counters = _Counters()
        self.runs: list[Span] = []
        """The image's data: the non-zero runs of the pieces read so far."""
        self.lock = threading.Lock()
        self.rng = random.Random()  # noqa: S311 - jitter, not cryptography

    @property
    def in_cache_checksum(self) -> checksums.Kind | None:
        """CRC64 is taken as each piece is read. MD5 costs 5 ms per 4 MiB wherever the
        bytes are, so it is left to ``put_pages``, outside the read lock: workers then
        hash in parallel (hashlib releases the GIL). Asked per piece: the transport may
        fall back from CRC64 to MD5 during the upload."""
        return "crc64" if self.api.checksum_kind == "crc64" else None

    # -- one request, with retries

    def call(self, what: str, span: Span | None, fn: Callable[[], _T]) -> _T:
        """*fn* (one request), retried while it fails transiently; *span* names its range."""
        if span is not None:
            what = f"{what} {span_text(span)}"

        def count_retry() -> None:
            if span is not None:
                with self.lock:
                    self.counters.retried.add(span)

        try:
            return with_retries(
                fn,
                what=what,
                sas_url=self.sas_url,
                policy=self.retry,
                stop=self.stop,
                rng=self.rng,
                hint="Check the network and the storage endpoint, then rerun to resume",
                on_retry=count_retry,
            )
        except Interrupted:
            if not self.stop.is_set():  # pragma: no cover - with_retries raises it on stop only
                raise
            # Another worker failed or the upload was interrupted: this one stops quietly.
            raise _Stopped from None

    # -- the pool

    def run_pool(self, items: Iterable[_T], work: Callable[[_T], None]) -> None:
        """Run *work* over *items* with the worker pool; the first failure stops all."""
        iterator = iter(items)
        take = threading.Lock()
        failures: list[BaseException] = []

        def worker() -> None:
            while not self.stop.is_set():
                with take:
                    item = next(iterator, None)
                if item is None:
                    return
                try:
                    work(item)
                except _Stopped:
                    return
                except BaseException as error:  # noqa: BLE001 - re-raised by the caller
                    with self.lock:
                        failures.append(error)
                    self.stop.set()
                    return

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="upload") as pool:
            futures = [pool.submit(worker) for _ in range(self.concurrency)]
            try:
                for future in futures:
                    while not future.done():
                        with contextlib.suppress(TimeoutError):
                            future.result(timeout=0.2)
            except KeyboardInterrupt:
                self.stop.set()
                raise
        if failures:
            raise failures[0]

    # -- reading the image

    def pread(self, span: Span) -> bytes:
        start, end = span
        try:
            data = os.pread(self.fd, end - start, start)
        except OSError as error:
            raise ImageError(f"cannot read the image at {span_text(span)}: {error}") from error
        if len(data) != end - start:
            raise ImageError(
                f"the image ended early at byte {start + len(data)}: it changed during the upload",
                hint="Do not modify the image while it uploads; rerun",
            )
        return data

    # -- the work items

    def clear(self, span: Span) -> None:
        self.call("clear", span, lambda: self.api.clear_pages(*span))
        with self.lock:
            self.counters.ranges_cleared += 1

    @contextlib.contextmanager
    def piece_buffer(self, length: int) -> Iterator[bytearray]:
        """A buffer for a piece of *length* bytes, within the memory budget.

        Pieces larger than a read chunk (most are a whole Put Page) reuse
        buffers of :data:`MAX_PAGE_WRITE` bytes: a fresh one per piece would be
        zeroed and faulted in again each time. Each holds its full size of the
        budget, so at most ``BUFFER_BUDGET / MAX_PAGE_WRITE`` are ever made.
        Smaller pieces get a buffer of their own size, so many can be in flight.
        """
        if length <= piece.CACHE_CHUNK:
            with self.budget.hold(length, self.stop):
                yield bytearray(length)
            return
        with self.budget.hold(MAX_PAGE_WRITE, self.stop):
            with self.lock:
                buffer = self.buffers.pop() if self.buffers else bytearray(MAX_PAGE_WRITE)
            try:
                yield buffer
            finally:
                with self.lock:
                    self.buffers.append(buffer)

    def send_piece(self, span: Span, server: list[Span]) -> None:
        """Read one piece of a data region and send its non-zero runs, except runs an
        earlier run sent and the blob still holds. Each byte of the image is read once."""
        start, end = span
        with self.piece_buffer(end - start) as buffer:
            with self.read_lock:
                runs = piece.read_piece(self.fd, buffer, start, end - start, self.in_cache_checksum)
            view = memoryview(buffer)
            for run in runs:
                lo, hi = run.start, run.end
                sent = (start + lo, start + hi)
                with self.lock:
                    self.runs.append(sent)
                if sent in self.journal and clip_spans(server, *sent) == [sent]:
                    with self.lock:
                        self.counters.ranges_skipped += 1
                    continue
                self.call(
                    "put page",
                    sent,
                    partial(self.api.put_pages, sent[0], view[lo:hi], run.checksum),
                )
                with self.lock:
                    self.counters.ranges_sent += 1
                    self.counters.bytes_sent += hi - lo
                self.journal.record(sent)
        with self.lock:
            self.counters.done += end - start
            self.progress.update(self.counters.done, self.counters.bytes_sent)

    def check_range(self, span: Span) -> None:
        with self.budget.hold(2 * (span[1] - span[0]), self.stop):
            remote = self.call("read back", span, lambda: self.api.read(*span))
            local = self.pread(span)
        if hashlib.sha256(remote).digest() != hashlib.sha256(local).digest():
            self.journal.discard()  # so that the rerun this asks for rewrites everything
            raise UploadError(
                f"verification failed: the disk differs from the image at {span_text(span)}",
                hint="Rerun the upload; it rewrites what differs",
            )


def _pieces(path: Path, size: int) -> list[Span]:
    """The image's data regions in pieces of at most one Put Page (no reads)."""
    pieces: list[Span] = []
    for extent in vhd.data_pieces(path, max_extent=MAX_PAGE_WRITE):
        start, end = extent.offset, extent.offset + extent.length
        # The 4 MiB Put Page limit is ours to enforce, whatever the VHD module says.
        if start % PAGE or end % PAGE or start < 0 or end > size or end - start > MAX_PAGE_WRITE:
            raise InternalError(
                f"internal: data piece {span_text((start, end))} is not a page-aligned "
                f"Put Page within the {size}-byte image"
            )
        pieces.append((start, end))
    return pieces


def _list_ranges(engine: _Engine, size: int) -> list[Span]:
    found: list[Span] = []
    for window in split_span((0, size), PAGE_RANGE_WINDOW):
        found.extend(
            engine.call("list page ranges", window, partial(engine.api.page_ranges, *window))
        )
    return merge_spans(found)


def _check_destination(engine: _Engine, size: int, sas_url: str) -> BlobInfo:
    info = engine.call("read blob properties", None, engine.api.properties)
    blob = display_url(sas_url)
    if info.blob_type.lower() != "pageblob":
        raise UploadError(
            f"{blob} is a {info.blob_type}, not a page blob; nothing was written",
            hint="Use the write SAS of a managed disk created with createOption Upload",
        )
    if info.size != size:
        raise UploadError(
            f"{blob} holds {info.size} bytes but the image file has {size}; nothing was written",
            hint="Create the upload disk with uploadSizeBytes equal to the VHD file size",
        )
    return info


def upload_vhd(
    *,
    path: Path,
    sas_url: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    verify: Verify = "ranges",
    journal_dir: Path | None = None,
    use_journal: bool = True,
    progress: ProgressSink | None = None,
    connection_verify: bool | str = True,
    connection_timeout: float = 20.0,
    read_timeout: float = 60.0,
    retry: RetryPolicy | None = None,
    checksum: Checksum = "auto",
    api: PageBlobApi | None = None,
) -> UploadResult:
    """Write the fixed VHD at *path* into the existing page blob behind *sas_url*.

    *journal_dir* defaults to ``<state dir>/uploads``; ``use_journal=False``
    disables it. *api* replaces the SDK client (it must behave like one).
    Raises :class:`ImageError`, :class:`UploadError` or :class:`SasExpiredError`.
    """
    if not MIN_CONCURRENCY <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(
            f"concurrency must be {MIN_CONCURRENCY}..{MAX_CONCURRENCY}, not {concurrency}"
        )
    began = time.monotonic()
    size = _preflight(path, sas_url)
    client = api or SdkPageBlob(
        sas_url,
        pool_size=concurrency,
        connection_verify=connection_verify,
        connection_timeout=connection_timeout,
        read_timeout=read_timeout,
        checksum=checksum,
    )
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        if api is None and isinstance(client, SdkPageBlob):
            client.close()
        raise ImageError(f"cannot open {path}: {error.strerror or error}") from None
    engine = _Engine(
        api=client,
        fd=fd,
        sas_url=sas_url,
        concurrency=concurrency,
        retry=retry or RetryPolicy(),
        progress=progress or LogProgress(),
        journal=Journal(None, {}),
    )
    try:
        info = _check_destination(engine, size, sas_url)
        server = _list_ranges(engine, size)
        directory = (journal_dir or state.default_state_dir() / "uploads") if use_journal else None
        engine.journal = Journal.for_upload(
            directory, image=path, blob_url=display_url(sas_url), blob=info
        )
        expected = _transfer(engine, path=path, size=size, server=server)
        verified = _verify(engine, verify, size, expected)
        c = engine.counters
        result = UploadResult(
            bytes_sent=c.bytes_sent,
            data_bytes=sum(e - s for s, e in expected),
            ranges_sent=c.ranges_sent,
            ranges_skipped=c.ranges_skipped,
            ranges_retried=len(c.retried),
            seconds=time.monotonic() - began,
            verified=verified,
            ranges_cleared=c.ranges_cleared,
        )
    except UploadError as error:
        # What this attempt sent counts in the report of a run that resumes after it.
        error.bytes_sent = engine.counters.bytes_sent
        raise
    except KeyboardInterrupt:
        raise Interrupted(
            f"upload interrupted after sending {mib(engine.counters.bytes_sent)}",
            hint="Run the same command again; it resumes where it stopped",
        ) from None
    finally:
        engine.stop.set()
        os.close(fd)
        if api is None and isinstance(client, SdkPageBlob):
            client.close()
    log.info("upload finished: %s", json.dumps(result.to_json()))
    return result


def _preflight(path: Path, sas_url: str) -> int:
    """Check what needs no network: the image, the SAS's expiry; the image's size."""
    vhd.require_azure_ready(path)
    size = path.stat().st_size
    expiry = sas_expiry(sas_url)
    if expiry is not None and expiry <= datetime.now(UTC):
        raise SasExpiredError(
            f"the SAS for {display_url(sas_url)} expired at {expiry:%Y-%m-%d %H:%M:%S} UTC; "
            "nothing was written",
            hint=SAS_HINT,
        )
    return size


def _transfer(engine: _Engine, *, path: Path, size: int, server: list[Span]) -> list[Span]:
    """Send the image's data, then clear stale pages; the page ranges the blob must now hold.

    The work is the data regions the filesystem reports (no reads), in pieces of
    at most 4 MiB: each worker reads its piece once and sends the non-zero runs
    in it (the VHD module's data extents), so sending starts at once and the
    image is read once. The pages the blob holds where the image has no data are
    known when every piece has been read, and are cleared then.
    """
    pieces = _pieces(path, size)
    total = sum(e - s for s, e in pieces)
    log.info(
        "uploading %s (data regions of %s in %d pieces) to %s; the blob holds %s, "
        "%d ranges journalled",
        path,
        mib(total),
        len(pieces),
        display_url(engine.sas_url),
        mib(sum(e - s for s, e in server)),
        len(engine.journal),
    )
    stop_flusher = threading.Event()
    flusher = _start_flusher(engine.journal, stop_flusher)
    engine.progress.start(total)
    try:
        engine.run_pool(pieces, partial(engine.send_piece, server=server))
        expected = merge_spans(engine.runs)
        stale = subtract_spans(server, expected)
        if stale:
            log.info("clearing %d stale ranges the image has no data in", len(stale))
            engine.run_pool(stale, engine.clear)
    finally:
        engine.progress.finish(engine.counters.done, engine.counters.bytes_sent)
        stop_flusher.set()
        flusher.join()
        engine.journal.flush()
    return expected


def _verify(engine: _Engine, verify: Verify, size: int, expected: list[Span]) -> bool:
    if verify == "none":
        return False
    _verify_ranges(engine, size, expected)
    if verify == "full":
        engine.run_pool(
            [part for run in expected for part in split_span(run, MAX_PAGE_WRITE)],
            engine.check_range,
        )
    return True


def _start_flusher(journal: Journal, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(JOURNAL_INTERVAL):
            journal.flush()

    thread = threading.Thread(target=loop, name="upload-journal", daemon=True)
    thread.start()
    return thread


def _verify_ranges(engine: _Engine, size: int, expected: list[Span]) -> None:
    actual = _list_ranges(engine, size)
    if actual == expected:
        return
    missing = subtract_spans(expected, actual)
    extra = subtract_spans(actual, expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} data ranges missing, first {span_text(missing[0])}")
    if extra:
        problems.append(f"{len(extra)} unexpected ranges, first {span_text(extra[0])}")
    raise UploadError(
        "verification failed: the disk's page ranges differ from the image's data: "
        + "; ".join(problems),
        hint="Rerun the upload; it rewrites what differs",
    )

"""A blob URL copied into a page blob server-side: Put Page From URL, no byte through us.

The source is any blob the URL can read (a SAS, or a public blob). For a page
blob only its page ranges are copied; for another blob type every range (the
service reads it, not this machine). Each request copies at most 4 MiB
(Azure's limit for Put Page From URL); requests run in parallel and are
retried like page writes; afterwards the destination's page ranges are
compared with the source's. A rerun copies only what the destination lacks.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Final

from azure.storage.blob import BlobClient

from nixos_azure_publish.errors import Interrupted, UploadError
from nixos_azure_publish.upload.limits import DEFAULT_CONCURRENCY
from nixos_azure_publish.upload.progress import LogProgress, UploadResult
from nixos_azure_publish.upload.ranges import merge_spans, split_span, subtract_spans
from nixos_azure_publish.upload.retry import RetryPolicy, display_url, with_retries
from nixos_azure_publish.upload.transport import SdkPageBlob

if TYPE_CHECKING:
    from nixos_azure_publish.upload.progress import ProgressSink
    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)

MAX_FROM_URL: Final = 4 * 1024 * 1024


def source_ranges(
    url: str, *, size: int, page_blob: bool, connection_verify: bool | str
) -> list[Span]:
    """What to copy: a page blob's page ranges, else the whole blob."""
    if not page_blob:
        return [(0, size)]
    client = BlobClient.from_blob_url(url, connection_verify=connection_verify)
    try:
        ranges = client.list_page_ranges()
        return merge_spans([(r.start or 0, (r.end or 0) + 1) for r in ranges if not r.cleared])
    finally:
        client.close()


def split(spans: list[Span], limit: int = MAX_FROM_URL) -> list[Span]:
    """*spans* cut into pieces of at most *limit* bytes."""
    return [piece for span in spans for piece in split_span(span, limit)]


class _Copier:
    """Put Page From URL requests for one copy: retried, counted, stoppable."""

    def __init__(
        self, destination: BlobClient, *, url: str, sas_url: str, retry: RetryPolicy,
        sink: ProgressSink,
    ) -> None:  # fmt: skip
        self.destination = destination
        self.url = url
        self.sas_url = sas_url
        self.retry = retry
        self.sink = sink
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.copied = self.ranges = self.retried = 0
        self.rng = random.Random()  # noqa: S311 - jitter, not secrets

    def copy(self, span: Span) -> None:
        start, end = span
        with_retries(
            lambda: self.destination.upload_pages_from_url(
                self.url, offset=start, length=end - start, source_offset=start
            ),
            what=f"copying bytes {start}-{end - 1} from {display_url(self.url)}",
            sas_url=self.sas_url,
            policy=self.retry,
            stop=self.stop,
            rng=self.rng,
            hint="Check that the source URL is readable, then run again",
            on_retry=self._count_retry,
            source_url=self.url,
        )
        with self.lock:
            self.copied += end - start
            self.ranges += 1
            self.sink.update(self.copied, 0)

    def _count_retry(self) -> None:
        with self.lock:
            self.retried += 1

    def run(self, spans: list[Span], concurrency: int) -> None:
        try:
            with ThreadPoolExecutor(max_workers=concurrency) as workers:
                for future in [workers.submit(self.copy, span) for span in spans]:
                    future.result()
        except BaseException:
            self.stop.set()
            raise
        finally:
            self.sink.finish(self.copied, 0)


def copy_from_url(
    *,
    url: str,
    sas_url: str,
    size: int,
    page_blob: bool,
    concurrency: int = DEFAULT_CONCURRENCY,
    connection_verify: bool | str = True,
    progress: ProgressSink | None = None,
    retry: RetryPolicy | None = None,
) -> UploadResult:
    """Copy the blob at *url* into the page blob behind *sas_url* with Put Page From URL."""
    began = time.monotonic()
    wanted = source_ranges(url, size=size, page_blob=page_blob, connection_verify=connection_verify)
    destination = BlobClient.from_blob_url(
        sas_url, connection_verify=connection_verify, retry_total=0
    )
    pages = SdkPageBlob(sas_url, pool_size=concurrency, connection_verify=connection_verify)
    sink = progress or LogProgress()
    copier = _Copier(destination, url=url, sas_url=sas_url, retry=retry or RetryPolicy(), sink=sink)
    total = sum(e - s for s, e in wanted)
    try:
        # A rerun copies only what the disk lacks.
        have = merge_spans(pages.page_ranges(0, size))
        todo = split(subtract_spans(wanted, have) if page_blob else wanted)
        sink.start(total)
        copier.run(todo, concurrency)
        if page_blob and merge_spans(pages.page_ranges(0, size)) != wanted:
            raise UploadError(
                "the disk's pages differ from the source's after the copy",
                hint="Run again: the upload disk is replaced",
                rerun_helps=True,
            )
    except KeyboardInterrupt:
        raise Interrupted(
            f"copying {display_url(url)} interrupted", hint="Run the same command again to resume"
        ) from None
    finally:
        pages.close()
        destination.close()
    return UploadResult(
        bytes_sent=0,
        data_bytes=total,
        ranges_sent=copier.ranges,
        ranges_skipped=len(split(wanted)) - len(todo),
        ranges_retried=copier.retried,
        seconds=time.monotonic() - began,
        verified=page_blob,
    )

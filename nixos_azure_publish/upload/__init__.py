"""Writing a fixed VHD into a page blob: the publish's longest step.

The modules, in the order an upload uses them:

- :mod:`.limits`: Azure's limits and our defaults (page size, Put Page size, concurrency);
- :mod:`.ranges`: byte-range algebra (merge, clip, subtract, split);
- :mod:`.piece`: reading one piece of the image, finding its runs and their checksums;
- :mod:`.transport`: the storage protocol (:class:`~.transport.PageBlobApi`) and its
  implementation over HTTP(S), proxies and TLS included;
- :mod:`.retry`: which failures are transient, the backoff, the errors users see;
- :mod:`.journal`: what earlier runs finished, so that a rerun resumes;
- :mod:`.progress`: the result of an upload and how progress is reported;
- :mod:`.engine`: the native upload (:func:`~.engine.upload_vhd`);
- :mod:`.azcopy`: the optional azcopy backend.

:func:`upload` is the one entry point that chooses between the two backends.

Words for byte ranges, used the same way across this package and :mod:`..vhd`:

- **span**: a byte range ``[start, end)`` as a ``(start, end)`` tuple
  (:data:`~nixos_azure_publish.vhd.scan.Span`), the one type for a range of bytes;
- **data region**: a span the filesystem reports as allocated (``SEEK_DATA``);
- **piece**: a span of a data region at most one Put Page (4 MiB) long, read at once;
- **run**: a span inside a piece that is not whole all-zero sectors: what is sent;
- **extent**: a run of the whole image, given as offset and length
  (:class:`~nixos_azure_publish.vhd.scan.Extent`);
- **page range**: a span the blob holds written pages in, as Azure lists them.

Nothing here is imported until it is used: the Azure SDK loads only when an
upload starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from nixos_azure_publish.upload.limits import DEFAULT_CONCURRENCY

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.upload.progress import ProgressSink, UploadResult
    from nixos_azure_publish.upload.transport import Checksum

Backend = Literal["native", "azcopy"]
"""The built-in engine, or ``azcopy copy``."""
Verify = Literal["none", "ranges", "full"]
"""After the upload: nothing, compare the page ranges, or also read every data range back."""


def upload(
    *,
    path: Path,
    sas_url: str,
    backend: Backend = "native",
    concurrency: int = DEFAULT_CONCURRENCY,
    verify: Verify = "ranges",
    checksum: Checksum = "auto",
    journal_dir: Path | None = None,
    use_journal: bool = True,
    progress: ProgressSink | None = None,
    connection_verify: bool | str = True,
    read_timeout: float = 60.0,
) -> UploadResult:
    """Upload the fixed VHD at *path* into the page blob behind *sas_url* with *backend*.

    The native backend resumes, verifies (*verify*) and reports *progress*;
    azcopy does neither (its other settings are ignored). Raises what the
    backend raises: :class:`ImageError`, :class:`UploadError`,
    :class:`SasExpiredError` or :class:`UsageError`.
    """
    if backend == "azcopy":
        from nixos_azure_publish.upload.azcopy import upload_with_azcopy  # noqa: PLC0415

        return upload_with_azcopy(path=path, sas_url=sas_url)
    from nixos_azure_publish.upload.engine import upload_vhd  # noqa: PLC0415

    return upload_vhd(
        path=path,
        sas_url=sas_url,
        concurrency=concurrency,
        verify=verify,
        checksum=checksum,
        journal_dir=journal_dir,
        use_journal=use_journal,
        progress=progress,
        connection_verify=connection_verify,
        read_timeout=read_timeout,
    )

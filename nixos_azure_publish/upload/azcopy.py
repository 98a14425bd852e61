"""The optional azcopy backend: ``azcopy copy FILE SAS --blob-type PageBlob``."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from typing import TYPE_CHECKING

from nixos_azure_publish import vhd
from nixos_azure_publish.errors import (
    UploadError,
    UsageError,
)
from nixos_azure_publish.redact import redact
from nixos_azure_publish.upload.limits import MAX_PAGE_WRITE
from nixos_azure_publish.upload.progress import UploadResult
from nixos_azure_publish.upload.retry import display_url

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

log = logging.getLogger(__name__)


def upload_with_azcopy(
    *,
    path: Path,
    sas_url: str,
    azcopy: str | None = None,
    extra_args: Sequence[str] = (),
    environ: dict[str, str] | None = None,
) -> UploadResult:
    """Upload with ``azcopy copy FILE SAS --blob-type PageBlob`` (the optional backend).

    azcopy does its own retries and zero skipping; it resumes only whole
    files. No verification is done here (``verified`` is false).
    """
    vhd.require_azure_ready(path)
    executable = azcopy or shutil.which("azcopy")
    if executable is None:
        raise UsageError(
            "the azcopy backend was chosen but azcopy is not on PATH",
            hint='Install azcopy, or use the native backend (upload.backend = "native")',
        )
    argv = [executable, "copy", str(path), sas_url, "--blob-type", "PageBlob", *extra_args]
    log.info("running %s", redact(" ".join([*argv[:3], display_url(sas_url), *argv[4:]])))
    began = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=environ)
    except OSError as error:
        raise UploadError(f"could not run azcopy: {error}") from error
    output = redact((proc.stdout or "") + (proc.stderr or ""))
    for line in output.splitlines():
        log.debug("azcopy: %s", line)
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
        raise UploadError(
            f"azcopy failed with status {proc.returncode}: {tail or 'no output'}",
            hint="See azcopy's log, or rerun with the native backend",
        )
    size = path.stat().st_size
    data = sum(e.length for e in vhd.data_extents(path, max_extent=MAX_PAGE_WRITE))
    return UploadResult(
        bytes_sent=size,
        data_bytes=data,
        ranges_sent=0,
        ranges_skipped=0,
        ranges_retried=0,
        seconds=time.monotonic() - began,
        verified=False,
    )

"""`upload`: write a fixed VHD into an existing page blob (a managed disk's write SAS)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import click

from nixos_azure_publish.checksum import Checksum
from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import IMAGE, flag, shown
from nixos_azure_publish.errors import UsageError
from nixos_azure_publish.upload import Backend, Verify, limits
from nixos_azure_publish.upload import upload as upload_image
from nixos_azure_publish.upload.progress import ProgressSink, progress_line

if TYPE_CHECKING:
    from collections.abc import Callable

SAS_ENV = "NIXOS_AZURE_PUBLISH_SAS_URL"
CA_CERT_ENV = "NIXOS_AZURE_PUBLISH_CA_CERT"


class TerminalProgress:
    """A live one-line bar on stderr: data done, bytes sent, rate, ETA."""

    def __init__(
        self,
        *,
        width: int = 30,
        interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.width = width
        self.interval = interval
        self.clock = clock
        self._total = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, total: int) -> None:
        self._total = total
        self._started = self.clock()
        self._last = 0.0

    def _draw(self, done: int, sent: int, *, final: bool = False) -> None:
        filled = self.width * done // self._total if self._total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        line = progress_line(done, sent, self._total, self.clock() - self._started)
        click.echo(f"\r[{bar}] {line}\x1b[K", err=True, nl=final)

    def update(self, done: int, sent: int) -> None:
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(done, sent)

    def finish(self, done: int, sent: int) -> None:
        self._draw(done, sent, final=True)


def _read_sas(sas_url: str | None, sas_url_file: str | None) -> str:
    if sas_url and sas_url_file:
        raise UsageError("give either --sas-url or --sas-url-file, not both")
    if sas_url_file:
        if sas_url_file == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(sas_url_file).read_text(encoding="utf-8")
            except OSError as error:
                raise UsageError(f"cannot read the SAS URL file: {error}") from error
        sas_url = text.strip()
    if not sas_url:
        raise UsageError(
            "no SAS URL given",
            hint=f"Pass --sas-url-file FILE (or - for stdin), --sas-url, or set {SAS_ENV}",
        )
    if not sas_url.startswith(("https://", "http://")):
        raise UsageError("the SAS URL must start with https:// (or http:// for a local emulator)")
    return sas_url


@click.command("upload")
@click.argument("image", type=IMAGE)
@click.option(
    "--sas-url",
    envvar=SAS_ENV,
    show_envvar=True,
    help="Write SAS URL of the disk's blob. Prefer --sas-url-file or the environment variable: "
    "command lines are visible to other users.",
)
@click.option(
    "--sas-url-file",
    metavar="FILE",
    help="Read the SAS URL from FILE (`-` for stdin).",
)
@shown(
    "--concurrency",
    type=click.IntRange(limits.MIN_CONCURRENCY, limits.MAX_CONCURRENCY),
    default=limits.DEFAULT_CONCURRENCY,
    help="Parallel Put Page requests.",
)
@shown(
    "--verify",
    type=click.Choice(get_args(Verify)),
    default="ranges",
    help="After the upload: compare the blob's page ranges with the image's data (ranges), "
    "also read every data range back (full), or nothing (none).",
)
@shown(
    "--backend",
    type=click.Choice(get_args(Backend)),
    default="native",
    help="The built-in engine, or `azcopy copy` (must be on PATH).",
)
@shown(
    "--checksum",
    type=click.Choice(get_args(Checksum)),
    default="auto",
    help="Per-request integrity check: auto is Azure Storage's CRC64 (MD5 where no CRC64 "
    "library is installed).",
)
@click.option(
    "--journal-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where resume journals live (default: the state directory's uploads/).",
)
@flag("--no-journal", help="Keep no resume journal.")
@click.option(
    "--ca-cert",
    envvar=CA_CERT_ENV,
    show_envvar=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="PEM certificate to trust for the storage endpoint (a local emulator).",
)
@shown(
    "--timeout",
    type=click.FloatRange(min=1),
    default=60.0,
    help="Seconds to wait for a response before retrying a request.",
)
def upload(
    *,
    image: Path,
    sas_url: str | None,
    sas_url_file: str | None,
    concurrency: int,
    verify: Verify,
    backend: Backend,
    checksum: Checksum,
    journal_dir: Path | None,
    no_journal: bool,
    ca_cert: Path | None,
    timeout: float,
) -> None:
    """Upload IMAGE (a fixed VHD) into the existing page blob behind a write SAS.

    The blob must already exist with exactly the image's size (a managed disk
    created with createOption Upload); it is never created or resized. Only
    data ranges are sent; a rerun resumes. With --json prints bytes_sent,
    data_bytes, ranges_sent, ranges_skipped, ranges_retried, seconds, verified.

    \b
    Example:
      nixos-azure-publish upload result/ --sas-url-file sas.txt
    """
    ctx = app_context()
    url = _read_sas(sas_url, sas_url_file)
    progress: ProgressSink | None = None
    if backend == "native" and sys.stderr.isatty() and not ctx.json:
        progress = TerminalProgress()
    result = upload_image(
        path=image,
        sas_url=url,
        backend=backend,
        concurrency=concurrency,
        verify=verify,
        journal_dir=journal_dir,
        use_journal=not no_journal,
        progress=progress,
        connection_verify=str(ca_cert) if ca_cert else True,
        read_timeout=timeout,
        checksum=checksum,
    )
    rate = result.bytes_sent / result.seconds / 1024**2 if result.seconds > 0 else 0.0
    human = (
        f"uploaded {image}: sent {result.bytes_sent} of {result.data_bytes} data bytes "
        f"in {result.ranges_sent} requests ({result.ranges_skipped} ranges skipped, "
        f"{result.ranges_retried} retried) in {result.seconds:.1f}s ({rate:.1f} MiB/s)"
        + ("; verified" if result.verified else "; not verified")
    )
    ctx.emit(result.to_json(), human)

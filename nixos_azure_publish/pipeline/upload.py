"""The steps that put the image into Azure: the resource group, the upload disk, the upload."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import group as azgroup
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.errors import (
    AzureError,
    SasExpiredError,
    UploadError,
)
from nixos_azure_publish.pipeline.context import (
    Context,
    Step,
    StepResult,
    done,
    skipped,
)
from nixos_azure_publish.report import (
    Action,
    UploadStats,
)
from nixos_azure_publish.upload import upload as upload_image

if TYPE_CHECKING:
    from nixos_azure_publish.upload.progress import UploadResult

log = logging.getLogger(__name__)

OTHER_UPLOAD_TIMEOUT: Final = 1800.0
MAX_REGRANTS: Final = 3
"""Write access granted again at most this many times when the SAS expires mid-upload."""
"""Seconds to wait for a concurrent publisher that is uploading the same image."""


class EnsureGroup(Step):
    """The resource group."""

    name = "ensure group"

    def plan(self, ctx: Context) -> StepResult:
        action: Action = "exists" if ctx.group_exists else "would-create"
        ctx.report.resource("resource group", ctx.target.resource_group, action)
        return done(action)

    def run(self, ctx: Context) -> StepResult:
        t = ctx.target
        if ctx.group_exists:
            ctx.report.resource("resource group", t.resource_group, "reused")
            return done("exists")
        created = azgroup.ensure_group(
            ctx.clients, t.resource_group, location=t.location, tags=ctx.container_tags
        )
        ctx.group_exists = True
        ctx.report.resource("resource group", t.resource_group, "created" if created else "reused")
        return done("created" if created else "exists")


class EnsureDisk(Step):
    """The content-addressed upload disk (reused when it holds or awaits this image)."""

    name = "ensure upload disk"

    def plan(self, ctx: Context) -> StepResult:
        if ctx.already_published:
            return skipped("not needed: already published")
        action: Action
        if ctx.disk is None:
            action = "would-create"
        elif ctx.disk.writable or ctx.disk.uploaded:
            action = "exists"
        else:
            action = "would-create"
        size = ctx.info.file_size if ctx.info else 0
        ctx.report.resource("disk", ctx.disk_name, action, detail=f"{size} bytes, upload")
        return done(action)

    def run(self, ctx: Context) -> StepResult:
        if ctx.already_published:
            return skipped("not needed: already published")
        if ctx.has_gallery and ctx.definition is not None:
            # Another publisher may have finished while we were checking.
            ctx.published = azversion.find_published(ctx.clients, ctx.target, ctx.hash)
            if ctx.published is not None:
                ctx.version_name = ctx.published.name
                return skipped(f"not needed: published meanwhile as {ctx.published.name}")
        size = ctx.info.file_size if ctx.info else 0
        try:
            disk, created = azdisk.ensure_upload_disk(
                ctx.clients, ctx.target, name=ctx.disk_name, size=size, tags=ctx.tags()
            )
        except AzureError:
            # A concurrent publisher may have created the same disk a moment before us.
            again = azdisk.get_disk(ctx.clients, ctx.target.resource_group, ctx.disk_name)
            if again is None:
                raise
            azdisk.check_reusable(again, content_hash=ctx.hash, size=size)
            disk, created = again, False
        ctx.disk = disk
        ctx.report.resource(
            "disk", disk.name, "created" if created else "reused", id=disk.id, detail=disk.state
        )
        if "startedAt" not in ctx.journal:
            ctx.save_journal(startedAt=ctx.options.now().isoformat(), disk=disk.id)
        return done(f"{'created' if created else 'reused'} {disk.name} ({disk.state})")


class Upload(Step):
    """Grant write access, write the image's pages, verify, mark, and always revoke."""

    name = "upload"

    def plan(self, ctx: Context) -> StepResult:
        if ctx.already_published:
            return skipped("not needed: already published")
        if ctx.disk is not None and ctx.disk.uploaded:
            return skipped("not needed: the disk holds the whole image")
        return done(
            f"would upload {ctx.data_bytes} data bytes of {ctx.info.file_size if ctx.info else 0}"
        )

    def run(self, ctx: Context) -> StepResult:
        disk = ctx.disk
        if ctx.already_published or disk is None:
            return skipped("not needed: already published")
        if disk.uploaded:
            return skipped("not needed: the disk holds the whole image")
        group = ctx.target.resource_group
        lifetime = azdisk.SAS_SECONDS
        granted = time.monotonic()
        sas = azdisk.grant_write(ctx.clients, group, disk.name, seconds=lifetime)
        complete = False
        handed_over = False
        regrants = 0
        sent_before = 0  # by attempts that stopped when the SAS expired
        started = time.monotonic()
        try:
            while True:
                try:
                    result = self._upload(ctx, sas)
                    break
                except SasExpiredError as error:
                    sent_before += error.bytes_sent
                    if time.monotonic() - granted >= lifetime:
                        if regrants >= MAX_REGRANTS:
                            raise
                        # Our own SAS ran out (a slow link, a huge image): grant access
                        # again; the journal makes the upload resume where it was.
                        regrants += 1
                        log.warning(
                            "the write SAS of disk %s expired during the upload; granting"
                            " access again and resuming",
                            disk.name,
                        )
                        granted = time.monotonic()
                        sas = azdisk.grant_write(ctx.clients, group, disk.name, seconds=lifetime)
                        continue
                    # Refused before its time: a concurrent publisher of the same image
                    # granted access after us (which replaces our SAS) or finished and
                    # revoked it: its verified upload is as good as ours, so wait for it
                    # instead of fighting over the disk.
                    other = self._wait_for_other_upload(ctx, disk.name)
                    if other is None:
                        raise
                    handed_over = True
                    ctx.disk = other
                    return skipped("not needed: another publisher uploaded this image")
            current = azdisk.get_disk(ctx.clients, group, disk.name) or disk
            azdisk.mark_uploaded(ctx.clients, current)
            ctx.save_journal(uploaded=disk.id)
            complete = True
        finally:
            if not handed_over:
                self._revoke(ctx, disk.name, strict=complete)
        ctx.disk = azdisk.get_disk(ctx.clients, group, disk.name) or disk
        stats = UploadStats(
            file_size=ctx.info.file_size if ctx.info else 0,
            data_bytes=result.data_bytes,
            bytes_sent=sent_before + result.bytes_sent,
            ranges_sent=result.ranges_sent,
            ranges_skipped=result.ranges_skipped,
            ranges_retried=result.ranges_retried,
            seconds=result.seconds if not regrants else time.monotonic() - started,
            verified=ctx.target.upload.verify if result.verified else "none",
        )
        ctx.report.upload = stats
        return done(f"sent {stats.bytes_sent} of {result.data_bytes} data bytes")

    @staticmethod
    def _upload(ctx: Context, sas: str) -> UploadResult:
        settings = ctx.target.upload
        return upload_image(
            path=ctx.image_path,
            sas_url=sas,
            backend=settings.backend,
            concurrency=settings.concurrency,
            verify=settings.verify,
            journal_dir=ctx.options.state_dir / "uploads" if ctx.options.state_dir else None,
            progress=ctx.options.progress,
            connection_verify=ctx.clients.settings.connection_verify,
        )

    @staticmethod
    def _wait_for_other_upload(ctx: Context, name: str) -> azdisk.DiskState | None:
        """The disk once another publisher's upload finished; None when nobody else uploads."""
        group = ctx.target.resource_group
        current = azdisk.get_disk(ctx.clients, group, name)
        if current is None or current.uploaded:
            return current
        if current.state != "ActiveUpload":
            return None
        log.info("another publisher is uploading this image to disk %s; waiting for it", name)
        interval = 0.2 if ctx.clients.settings.emulator else 5.0
        deadline = time.monotonic() + OTHER_UPLOAD_TIMEOUT
        while time.monotonic() < deadline:
            ctx.options.sleep(interval)
            current = azdisk.get_disk(ctx.clients, group, name)
            if current is None or current.state != "ActiveUpload" or current.uploaded:
                return current if current is not None and current.uploaded else None
        raise UploadError(
            f"another publisher's upload to disk {name} did not finish"
            f" within {OTHER_UPLOAD_TIMEOUT:.0f}s",
            hint="Run again once no other publish of this image is running",
        )

    @staticmethod
    def _revoke(ctx: Context, name: str, *, strict: bool) -> None:
        """Revoke write access; runs in ``finally``, also on Ctrl-C.

        After a failed or interrupted upload Azure may refuse to finish the upload
        (the VHD is incomplete) while still revoking the SAS: that is logged, and
        the original error is what the user sees.
        """
        for attempt in range(3):
            try:
                azdisk.revoke(ctx.clients, ctx.target.resource_group, name)
            except KeyboardInterrupt:
                # A second Ctrl-C must not skip the revoke.
                log.warning("still revoking access to disk %s; please wait", name)
                continue
            except AzureError as error:
                if strict and attempt == 2:  # noqa: PLR2004
                    raise
                if not strict:
                    log.warning("revoking access to disk %s: %s", name, error)
                    return
                log.warning("revoking access failed (%s); retrying", error)
                continue
            log.info("revoked write access to disk %s", name)
            return

"""The steps after the version exists: the smoke test, deleting the upload disk, retention."""

from __future__ import annotations

import logging

from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import image as azimage
from nixos_azure_publish.azure import replication as azreplication
from nixos_azure_publish.azure import retention as azretention
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.azure import vm as azvm
from nixos_azure_publish.azure.names import TAG_CONTENT
from nixos_azure_publish.errors import (
    SmokeTestError,
)
from nixos_azure_publish.pipeline.context import Context, Step, StepResult, done, skipped

log = logging.getLogger(__name__)


class Cleanup(Step):
    """Delete the upload disk once a replicated version holds the image (per config), and
    with it the managed image made only as the version's source (``managedImage`` keeps it)."""

    name = "cleanup"

    def plan(self, ctx: Context) -> StepResult:
        if not ctx.target.cleanup.delete_upload_disk or not ctx.has_gallery:
            return done("keeping the upload disk")
        if _throwaway_image(ctx) and ctx.managed_image is not None:
            # A new one is reported by its step as made and deleted after.
            ctx.report.resource("managed image", ctx.image_name, "would-delete")
        if ctx.disk is not None:
            ctx.report.resource("disk", ctx.disk_name, "would-delete")
            return done(f"would delete disk {ctx.disk_name}")
        return done("nothing to delete")

    def run(self, ctx: Context) -> StepResult:
        if not ctx.has_gallery or ctx.published is None or not ctx.published.replicated:
            return done("keeping the upload disk")
        if not ctx.target.cleanup.delete_upload_disk:
            if ctx.disk is not None:
                ctx.report.resource("disk", ctx.disk_name, "kept", id=ctx.disk.id)
            return done("keeping the upload disk (cleanup.deleteUploadDisk is false)")
        group = ctx.target.resource_group
        deleted_image = _delete_throwaway_image(ctx)
        # Look again: the disk may exist although Discover ran before it was made.
        current = azdisk.get_disk(ctx.clients, group, ctx.disk_name)
        if current is None:
            return done(
                f"deleted managed image {ctx.image_name}" if deleted_image else "nothing to delete"
            )
        if current.writable:
            # An upload was interrupted here (by a concurrent publisher): close it first.
            azdisk.revoke(ctx.clients, group, current.name)
        azdisk.delete_disk(ctx.clients, group, current.name)
        earlier = [r for r in ctx.report.resources if r.kind == "disk" and r.action == "created"]
        detail = "created, then deleted once the version held the image" if earlier else ""
        ctx.report.resource("disk", current.name, "deleted", id=current.id, detail=detail)
        return done(f"deleted disk {current.name}")


def _throwaway_image(ctx: Context) -> bool:
    """The managed image exists only as the version's source: it goes with the disk."""
    return ctx.version_needs_image and not ctx.target.managed_image.enable


def _delete_throwaway_image(ctx: Context) -> bool:
    """Delete the managed image made only as the version's source; True if it was there."""
    if not _throwaway_image(ctx):
        return False
    group = ctx.target.resource_group
    image = azimage.get_image(ctx.clients, group, ctx.image_name)
    if image is None or (image.get("tags") or {}).get(TAG_CONTENT) != ctx.tags().get(TAG_CONTENT):
        return False
    azimage.delete_image(ctx.clients, group, ctx.image_name)
    ctx.managed_image = None
    ctx.report.resource(
        "managed image",
        ctx.image_name,
        "deleted",
        id=image.get("id"),
        detail="the version's source, deleted once the version held the image",
    )
    return True


class SmokeTest(Step):
    """Boot a throwaway VM from the version; promote it to latest when it boots."""

    name = "smoke test"

    def plan(self, ctx: Context) -> StepResult:
        s = ctx.target.smoke_test
        if not s.enable or not ctx.has_gallery:
            return skipped("not enabled")
        if ctx.published is not None and _smoke_passed(ctx.published):
            return skipped(f"not needed: {ctx.published.name} passed earlier")
        where = azvm.smoke_location(ctx.target)
        ctx.report.resource(
            "virtual machine",
            f"smoke-{ctx.target.name}",
            "would-create",
            detail=f"{s.vm_size} in {where}, with NIC and VNet; deleted after the test",
        )
        promote = "" if ctx.target.version.exclude_from_latest else "; then include it in latest"
        return done(
            f"would boot {ctx.version_name or '?'} on {s.vm_size} in {where} and wait up to"
            f" {s.timeout_seconds}s for /{s.expect}/ in the serial log{promote}"
        )

    def run(self, ctx: Context) -> StepResult:
        s = ctx.target.smoke_test
        if not s.enable or not ctx.has_gallery or ctx.published is None:
            return skipped("not enabled")
        version = ctx.published
        if _smoke_passed(version):
            return skipped(f"not needed: {version.name} passed earlier")
        interval = ctx.options.smoke_interval
        if interval is None:
            interval = 0.2 if ctx.clients.settings.emulator else 10.0
        result = azvm.run_smoke_test(
            ctx.clients,
            ctx.target,
            version_id=version.id,
            content_hash=ctx.hash,
            timeout=ctx.options.smoke_timeout,
            interval=interval,
            sleep=ctx.options.sleep,
        )
        ctx.report.resource(
            "virtual machine",
            result.vm_name,
            "deleted",
            detail=f"smoke test in {result.location}, with its disk, NIC and VNet",
        )
        if not result.passed:
            ctx.report.resource(
                "image version",
                version.name,
                "kept",
                id=version.id,
                detail="smoke test failed; excluded from latest",
            )
            raise SmokeTestError(
                f"smoke test of image version {version.name} failed: /{s.expect}/ did not appear"
                f" in the serial log within {result.seconds:.0f}s; the version stays excluded"
                " from latest",
                hint="Read the serial log below; fix the image (or smokeTest.expect) and"
                " publish again",
                details=result.log_tail or "(the serial log was empty)",
            )
        promote = not ctx.target.version.exclude_from_latest
        azversion.mark_smoke_test(
            ctx.clients,
            ctx.target,
            version,
            tag=azvm.TAG_SMOKE_TEST,
            value=azvm.PASSED,
            promote=promote,
        )
        ctx.published = azreplication.get_version(ctx.clients, ctx.target, version.name) or version
        detail = "smoke test passed" + ("; included in latest" if promote else "")
        ctx.report.resource("image version", version.name, "updated", id=version.id, detail=detail)
        return done(
            f"passed in {result.seconds:.0f}s" + ("; promoted to latest" if promote else "")
        )


def _smoke_passed(version: azreplication.VersionState) -> bool:
    return version.tags.get(azvm.TAG_SMOKE_TEST) == azvm.PASSED


class Retention(Step):
    """Delete older versions of ours: beyond keepVersions, or past their end of life."""

    name = "retention"

    def _doomed(self, ctx: Context) -> list[azretention.Doomed] | None:
        r = ctx.target.retention
        if not ctx.has_gallery or (r.keep_versions is None and not r.delete_after_end_of_life):
            return None
        if ctx.definition is None:
            return []
        return azretention.plan(
            ctx.clients, ctx.target, current=ctx.version_name, now=ctx.options.now()
        )

    def plan(self, ctx: Context) -> StepResult:
        doomed = self._doomed(ctx)
        if doomed is None:
            return skipped("not enabled")
        for d in doomed:
            ctx.report.resource("image version", d.name, "would-delete", id=d.id, detail=d.reason)
        return done(
            "would delete " + ", ".join(d.name for d in doomed) if doomed else "nothing to delete"
        )

    def run(self, ctx: Context) -> StepResult:
        doomed = self._doomed(ctx)
        if doomed is None:
            return skipped("not enabled")
        for d in doomed:
            log.info("retention: deleting image version %s (%s)", d.name, d.reason)
            azversion.delete_version(ctx.clients, ctx.target, d.name)
            ctx.report.resource("image version", d.name, "deleted", id=d.id, detail=d.reason)
        return done(
            "deleted " + ", ".join(d.name for d in doomed) if doomed else "nothing to delete"
        )

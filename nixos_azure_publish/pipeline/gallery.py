"""The gallery steps: gallery, image definition, managed image, image version, replication."""

from __future__ import annotations

import logging

from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import gallery as azgallery
from nixos_azure_publish.azure import image as azimage
from nixos_azure_publish.azure import replication as azreplication
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.errors import AzureError, InternalError
from nixos_azure_publish.pipeline.checks import version_name
from nixos_azure_publish.pipeline.context import Context, Step, StepResult, done, skipped
from nixos_azure_publish.report import (
    Action,
    RegionRecord,
)

log = logging.getLogger(__name__)


class EnsureGallery(Step):
    """The Compute Gallery (with community sharing when configured)."""

    name = "ensure gallery"

    def plan(self, ctx: Context) -> StepResult:
        if ctx.target.gallery is None:
            return skipped("no gallery configured")
        action: Action = "exists" if ctx.gallery_exists else "would-create"
        ctx.report.resource("gallery", ctx.target.gallery.name, action)
        return done(action)

    def run(self, ctx: Context) -> StepResult:
        g = ctx.target.gallery
        if g is None:
            return skipped("no gallery configured")
        if ctx.gallery_exists:
            ctx.report.resource("gallery", g.name, "reused")
            return done("exists")
        created = azgallery.ensure_gallery(ctx.clients, ctx.target, tags=ctx.container_tags)
        ctx.gallery_exists = True
        if g.community is not None:
            gallery = azgallery.get_gallery(ctx.clients, ctx.target.resource_group, g.name)
            ctx.public_name = azgallery.public_name(gallery or {})
        ctx.report.resource("gallery", g.name, "created" if created else "reused")
        return done("created" if created else "exists")


class EnsureDefinition(Step):
    """The image definition (an existing one was checked by Discover)."""

    name = "ensure definition"

    def plan(self, ctx: Context) -> StepResult:
        d = ctx.target.image_definition
        if d is None:
            return skipped("no definition configured")
        action: Action = "exists" if ctx.definition is not None else "would-create"
        t = ctx.target
        detail = f"{t.hyper_v_generation}, {t.architecture}, {t.security_type}"
        ctx.report.resource("image definition", d.name, action, detail=detail)
        return done(action)

    def run(self, ctx: Context) -> StepResult:
        d = ctx.target.image_definition
        if d is None:
            return skipped("no definition configured")
        if ctx.definition is not None:
            ctx.report.resource("image definition", d.name, "reused", id=ctx.definition.get("id"))
            return done("exists")
        created = azgallery.ensure_definition(ctx.clients, ctx.target, tags=ctx.container_tags)
        ctx.definition = azgallery.get_definition(ctx.clients, ctx.target)
        def_id = ctx.definition.get("id") if ctx.definition else None
        ctx.report.resource(
            "image definition", d.name, "created" if created else "reused", id=def_id
        )
        return done("created" if created else "exists")


class ManagedImage(Step):
    """The managed image, made from the upload disk: when asked for, and as the source of a
    Trusted Launch-type definition's version (Azure refuses a managed disk there)."""

    name = "managed image"

    @staticmethod
    def _why(ctx: Context) -> str:
        if ctx.target.managed_image.enable:
            return ""
        return "the version's source (a Trusted Launch definition takes no disk); deleted after"

    def plan(self, ctx: Context) -> StepResult:
        if not ctx.needs_managed_image:
            return skipped("not enabled")
        if ctx.already_published and not ctx.target.managed_image.enable:
            return skipped("not needed: already published")
        action: Action = "exists" if ctx.managed_image is not None else "would-create"
        ctx.report.resource("managed image", ctx.image_name, action, detail=self._why(ctx))
        return done(action)

    def run(self, ctx: Context) -> StepResult:
        if not ctx.needs_managed_image:
            return skipped("not enabled")
        if ctx.already_published and not ctx.target.managed_image.enable:
            return skipped("not needed: already published")
        if ctx.managed_image is not None:
            ctx.managed_image = azimage.wait_until_ready(
                ctx.clients, ctx.target.resource_group, ctx.image_name, ctx.managed_image
            )
            ctx.report.resource(
                "managed image", ctx.image_name, "reused", id=ctx.managed_image.get("id")
            )
            return done("exists")
        image, created = azimage.ensure_image(
            ctx.clients,
            ctx.target,
            name=ctx.image_name,
            disk_id=ctx.disk.id if ctx.disk else None,
            tags=ctx.tags(),
        )
        ctx.managed_image = image
        ctx.report.resource(
            "managed image",
            ctx.image_name,
            "created" if created else "reused",
            id=image.get("id"),
            detail=self._why(ctx),
        )
        return done("created" if created else "exists")


class CreateVersion(Step):
    """The image version, with target regions, replicas, storage SKU, EOL and mode."""

    name = "create version"

    def plan(self, ctx: Context) -> StepResult:
        if not ctx.has_gallery:
            return skipped("no gallery configured")
        name = ctx.version_name or "?"
        regions = ", ".join(f"{r.name} x{r.replicas}" for r in ctx.target.regions)
        if not ctx.already_published:
            for failed in ctx.failed_versions:
                ctx.report.resource(
                    "image version", failed.name, "would-delete", detail=failed.provisioning_state
                )
        action: Action = "exists" if ctx.already_published else "would-create"
        ctx.report.resource("image version", name, action, detail=regions)
        ctx.report.version = ctx.version_name
        return done(f"{action} {name} in {regions}")

    def run(self, ctx: Context) -> StepResult:
        if not ctx.has_gallery:
            return skipped("no gallery configured")
        if ctx.published is None:
            ctx.published, ctx.failed_versions = azversion.find_versions(
                ctx.clients, ctx.target, ctx.hash
            )
        if ctx.published is not None:
            ctx.version_name = ctx.published.name
            ctx.report.resource("image version", ctx.published.name, "reused", id=ctx.published.id)
            return done(f"exists: {ctx.published.name}")
        for failed in ctx.failed_versions:
            # Ours (tagged with this image) and unusable: replace it, do not make the user.
            log.warning("deleting version %s: it holds this image but failed", failed.name)
            azversion.delete_version(ctx.clients, ctx.target, failed.name)
            ctx.report.resource(
                "image version", failed.name, "deleted", id=failed.id, detail="failed; replaced"
            )
        disk = ctx.disk
        if disk is not None:
            # Read the disk again: a concurrent publisher's create may have set its time.
            disk = azdisk.get_disk(ctx.clients, ctx.target.resource_group, disk.name) or disk
            ctx.disk = disk
        # An import's version is made from the source version, server-side.
        storage = ctx.resolved.storage_profile() if ctx.resolved is not None else None
        source_id, from_disk = ("", False) if storage is not None else self._source(ctx)
        # A version waiting for its smoke test is kept out of `latest` until it passes.
        exclude = True if ctx.target.smoke_test.enable else None
        body = azversion.version_body(
            ctx.target,
            source_id=source_id,
            from_disk=from_disk,
            tags=ctx.tags(),
            exclude_from_latest=exclude,
            storage_profile=storage,
        )
        wanted = version_name(ctx)
        name = wanted
        for attempt in range(azversion.MAX_NAME_BUMPS):
            name = azversion.free_version_name(
                ctx.clients, ctx.target, wanted, content_hash=ctx.hash
            )
            ctx.version_name = name
            try:
                azversion.create_version(ctx.clients, ctx.target, name, body)
                break
            except azversion.VersionNameTakenError:
                # Another image's publisher created this name after we looked (two images
                # in the same second): look again, which moves on to the next free patch;
                # a name from the user's own template is refused there instead.
                if attempt == azversion.MAX_NAME_BUMPS - 1:
                    raise
                log.info("version %s was just taken by another image; looking again", wanted)
        ctx.save_journal(version=name)
        replaced = name in {failed.name for failed in ctx.failed_versions}
        detail = "replaces the failed version of that name" if replaced else ""
        ctx.report.resource("image version", name, "created", detail=detail)
        return done(f"created {name}")

    @staticmethod
    def _source(ctx: Context) -> tuple[str, bool]:
        if ctx.managed_image is not None and ctx.managed_image.get("id"):
            return str(ctx.managed_image["id"]), False
        if ctx.version_needs_image:  # pragma: no cover - ManagedImage always runs first
            raise InternalError("internal: a Trusted Launch version needs its managed image")
        if ctx.disk is None:
            raise AzureError(
                "the upload disk is gone before the version was created",
                hint="Run again: the image will be uploaded again",
            )
        return ctx.disk.id, True


class WaitReplication(Step):
    """Wait until the version is replicated to every target region."""

    name = "replicate"

    def plan(self, ctx: Context) -> StepResult:
        if not ctx.has_gallery:
            return skipped("no gallery configured")
        if ctx.published is not None:
            _record_regions(ctx, ctx.published)
            change = azversion.drift(ctx.target, ctx.published)
            remove = ctx.options.remove_unlisted_regions
            _report_unlisted(ctx, ctx.published, change)
            if change.update_needed_with(remove_extra=remove):
                what = change.describe(remove_extra=remove)
                ctx.report.resource(
                    "image version", ctx.published.name, "would-update", detail=what
                )
                return done("would " + what)
            return done(azreplication.describe(ctx.published))
        return done("would wait for " + ", ".join(r.name for r in ctx.target.regions))

    def run(self, ctx: Context) -> StepResult:
        if not ctx.has_gallery or ctx.version_name is None:
            return skipped("no gallery configured")
        published = ctx.published
        remove = ctx.options.remove_unlisted_regions
        change = azversion.drift(ctx.target, published) if published is not None else None
        if published is not None and change is not None:
            _report_unlisted(ctx, published, change)
        if published is not None and change and change.update_needed_with(remove_extra=remove):
            # The target changed since this version was published (regions, replicas,
            # storage, end of life): Azure must hold what the report will say.
            azversion.update_publishing(ctx.clients, ctx.target, published, remove_extra=remove)
            ctx.report.resource(
                "image version",
                published.name,
                "updated",
                id=published.id,
                detail=change.describe(remove_extra=remove, done=True),
            )
        elif published is not None and published.replicated:
            _record_regions(ctx, published)
            return done(azreplication.describe(published))
        interval = ctx.options.replication_interval
        if interval is None:
            interval = 15.0 if not ctx.clients.settings.emulator else 0.2
        final = azreplication.wait_for_replication(
            ctx.clients,
            ctx.target,
            ctx.version_name,
            interval=interval,
            timeout=ctx.options.replication_timeout,
            on_progress=lambda s: _record_regions(ctx, s),
            sleep=ctx.options.sleep,
        )
        ctx.published = final
        _record_regions(ctx, final)
        return done(azreplication.describe(final))


def _report_unlisted(
    ctx: Context, version: azreplication.VersionState, change: azversion.PublishingDrift
) -> None:
    """Say which regions Azure holds that the target no longer lists, and that they stay."""
    if not change.extra or ctx.options.remove_unlisted_regions:
        return  # with the option, the update's own record says it removes them
    regions = ", ".join(change.extra)
    log.warning(
        "image version %s is replicated to %s, which the target no longer lists; kept"
        " (--remove-unlisted-regions removes them)",
        version.name,
        regions,
    )
    ctx.report.resource(
        "image version",
        version.name,
        "kept",
        id=version.id,
        detail=f"regions {regions} are no longer in the target; kept",
    )


def _record_regions(ctx: Context, state_: azreplication.VersionState) -> None:
    # What Azure holds, not what the target asks: they differ until an update lands.
    settings = {r.region: r for r in state_.region_settings}
    records = []
    for status in state_.regions:
        setting = settings.get(status.region)
        records.append(
            RegionRecord(
                region=status.region,
                state=status.state,
                progress=status.progress,
                replicas=setting.replicas if setting else None,
                storage_account_type=setting.storage_account_type if setting else None,
                details=status.details,
            )
        )
    ctx.report.regions = records
    ctx.report.version = state_.name
    ctx.report.version_id = state_.id or None
    definition = ctx.target.image_definition
    if ctx.public_name and definition is not None:
        ctx.report.community_image_id = (
            f"/CommunityGalleries/{ctx.public_name}/Images/{definition.name}/Versions/{state_.name}"
        )

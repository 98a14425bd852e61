"""The steps that change nothing: check the image, then discover what Azure already holds.

Everything that can fail without uploading fails here: the image, the
credentials, the name rules and the image definition's compatibility.
"""

from __future__ import annotations

import logging

from nixos_azure_publish import state, vhd
from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import gallery as azgallery
from nixos_azure_publish.azure import group as azgroup
from nixos_azure_publish.azure import image as azimage
from nixos_azure_publish.azure import names, preflight
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.pipeline.context import Context, ReadStep, StepResult, done

log = logging.getLogger(__name__)


class CheckImage(ReadStep):
    """The VHD is acceptable to Azure; its content id and data size."""

    name = "check image"

    def run(self, ctx: Context) -> StepResult:
        path = ctx.image_path
        info = vhd.require_azure_ready(path)
        extents = vhd.data_extents(path)
        ctx.info = info
        ctx.data_bytes = sum(e.length for e in extents)
        ctx.content = names.content_id(path, store_path=ctx.input.store_path)
        ctx.report.image_file = path.name
        ctx.report.file_size = info.file_size
        ctx.report.store_path = ctx.content.source
        ctx.report.store_hash = ctx.content.hash
        journal = state.read_json(ctx.journal_path) or {}
        if journal.get("contentHash") == ctx.content.hash:
            ctx.journal = journal
            finished = ", ".join(journal.get("steps") or {}) or "nothing yet"
            log.info("resuming an earlier publish of this image (it finished: %s)", finished)
        return done(f"{info.format}, {info.file_size} bytes, {ctx.data_bytes} data bytes")


class Discover(ReadStep):
    """Read-only: credentials, and what already exists in Azure. Refuses conflicts early."""

    name = "discover"

    def run(self, ctx: Context) -> StepResult:
        t = ctx.target
        clients = ctx.clients
        clients.check_credentials()
        preflight.check_regions(clients, t)
        ctx.group_exists = azgroup.group_exists(clients, t.resource_group)
        found: list[str] = []
        if ctx.group_exists:
            found.append(f"group {t.resource_group}")
            self._discover_gallery(ctx, found)
            ctx.disk = azdisk.get_disk(clients, t.resource_group, ctx.disk_name)
            if ctx.disk is not None:
                azdisk.check_reusable(ctx.disk, content_hash=ctx.hash, size=self._size(ctx))
                found.append(f"disk {ctx.disk.name} ({ctx.disk.state})")
            if ctx.needs_managed_image:
                ctx.managed_image = azimage.get_image(clients, t.resource_group, ctx.image_name)
        if ctx.published is None and ctx.has_gallery:
            ctx.version_name = version_name(ctx)
            self._check_version_name_free(ctx)
        return done("found " + (", ".join(found) if found else "nothing"))

    @staticmethod
    def _size(ctx: Context) -> int:
        return ctx.info.file_size if ctx.info else 0

    @staticmethod
    def _discover_gallery(ctx: Context, found: list[str]) -> None:
        t = ctx.target
        if t.gallery is None:
            return
        existing = azgallery.get_gallery(ctx.clients, t.resource_group, t.gallery.name)
        ctx.gallery_exists = existing is not None
        if existing is None:
            return
        azgallery.check_gallery(existing, t.gallery)
        ctx.public_name = azgallery.public_name(existing)
        found.append(f"gallery {t.gallery.name}")
        ctx.definition = azgallery.get_definition(ctx.clients, t)
        if ctx.definition is None:
            azgallery.check_identifier_free(ctx.clients, t)
            return
        azgallery.check_definition(ctx.definition, t)
        found.append(f"definition {t.image_definition.name if t.image_definition else ''}")
        ctx.published, ctx.failed_versions = azversion.find_versions(ctx.clients, t, ctx.hash)
        found.extend(f"failed version {failed.name}" for failed in ctx.failed_versions)
        if ctx.published is not None:
            ctx.version_name = ctx.published.name
            found.append(f"version {ctx.published.name}")

    @staticmethod
    def _check_version_name_free(ctx: Context) -> None:
        if ctx.version_name is None or ctx.definition is None:
            return
        ctx.version_name = azversion.free_version_name(
            ctx.clients, ctx.target, ctx.version_name, content_hash=ctx.hash
        )


def version_name(ctx: Context) -> str:
    """The version name this image gets: see :func:`.azure.version.choose_version_name`."""
    return azversion.choose_version_name(
        ctx.target,
        content_hash=ctx.hash,
        disk_created=ctx.disk.time_created if ctx.disk else None,
        started_at=ctx.journal.get("startedAt"),
        now=ctx.options.now(),
    )

"""An import: the publish pipeline with another source.

The first step resolves the source (``latest`` included) and refuses a target
that contradicts it, reading only. The source version gets a content id (a
digest of the source and its version), so the rest of the pipeline works as
for a publish: Discover finds a version already holding it (a rerun is a
no-op), the version is created with the source version as its
``storageProfile.source`` (no image byte passes through this machine), then
replication, the smoke test and retention, unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, cast

from nixos_azure_publish import vhd
from nixos_azure_publish.azure import importsource, names
from nixos_azure_publish.errors import ConfigError, InternalError
from nixos_azure_publish.pipeline.after import Retention, SmokeTest
from nixos_azure_publish.pipeline.checks import Discover
from nixos_azure_publish.pipeline.context import (
    Context,
    ReadStep,
    Step,
    StepResult,
    done,
    skipped,
)
from nixos_azure_publish.pipeline.gallery import (
    CreateVersion,
    EnsureDefinition,
    EnsureGallery,
    WaitReplication,
)
from nixos_azure_publish.pipeline.runner import FROM_DISK
from nixos_azure_publish.pipeline.upload import EnsureDisk, EnsureGroup, Upload
from nixos_azure_publish.upload import fromurl, stream

if TYPE_CHECKING:
    from nixos_azure_publish.config import PublishTarget
    from nixos_azure_publish.upload.progress import UploadResult

log = logging.getLogger(__name__)


class ResolveSource(ReadStep):
    """Read the source version and what it needs of the definition; refuse contradictions."""

    name = "resolve source"

    def run(self, ctx: Context) -> StepResult:
        ctx.clients.check_credentials()
        resolved = importsource.resolve(ctx.clients, ctx.source, location=ctx.target.location)
        target = destination_for(ctx.target, resolved)
        ctx.input = dataclasses.replace(ctx.input, target=target)
        ctx.resolved = resolved
        store_path = resolved.tags.get(names.TAG_STORE_PATH)
        ctx.content = names.ContentId(hash=resolved.content_hash, store_path=None)
        ctx.extra_tags = import_tags(target, resolved)
        ctx.report.source = f"{resolved.reference}@{resolved.version}"
        ctx.report.store_hash = resolved.content_hash
        ctx.report.store_path = store_path
        return done(
            f"{resolved.source.kind} {resolved.reference} version {resolved.version}"
            f" ({resolved.hyper_v_generation}, {resolved.architecture}, {resolved.security_type})"
        )


def import_tags(target: PublishTarget, resolved: importsource.ResolvedSource) -> dict[str, str]:
    """The tags that record where an imported version came from."""
    tags = {
        names.TAG_SOURCE: resolved.reference,
        names.TAG_SOURCE_VERSION: resolved.version,
    }
    # A source published by this tool says what it holds: keep that where the target is silent.
    store = resolved.tags.get(names.TAG_STORE_PATH)
    if store:
        tags[names.TAG_STORE_PATH] = store
    for key, own in (
        (names.TAG_LABEL, target.nixos.label),
        (names.TAG_RELEASE, target.nixos.release),
    ):
        if not own and resolved.tags.get(key):
            tags[key] = resolved.tags[key]
    return tags


def destination_for(target: PublishTarget, resolved: importsource.ResolvedSource) -> PublishTarget:
    """The target with the source's security type and features; a usage error on conflict.

    Generation and architecture are the target's to state and must match; the
    security type and features, when the target leaves them out, are the source's.
    """
    problems = []
    if target.hyper_v_generation.lower() != resolved.hyper_v_generation.lower():
        problems.append(
            f"hyperVGeneration: the target says {target.hyper_v_generation}, the source is"
            f" {resolved.hyper_v_generation}"
        )
    if target.architecture.lower() != resolved.architecture.lower():
        problems.append(
            f"architecture: the target says {target.architecture}, the source is"
            f" {resolved.architecture}"
        )
    d = target.image_definition
    if d is not None and d.security_type and d.security_type != resolved.security_type:
        problems.append(
            f"imageDefinition.securityType: the target says {d.security_type}, the source is"
            f" {resolved.security_type}"
        )
    if problems:
        raise ConfigError(
            [*problems, f"(importing {resolved.reference} version {resolved.version})"],
        )
    if d is None:
        return target
    changes: dict[str, Any] = {"security_type": resolved.security_type}
    if resolved.features.get("IsAcceleratedNetworkSupported", "").lower() == "true":
        changes["accelerated_networking"] = True
    controllers = resolved.features.get("DiskControllerTypes")
    if controllers and d.disk_controller_types is None:
        changes["disk_controller_types"] = tuple(
            cast("Any", c.strip()) for c in controllers.split(",") if c.strip()
        )
    return dataclasses.replace(target, image_definition=dataclasses.replace(d, **changes))


GALLERY_IMPORT_STEPS: Final[tuple[type[Step], ...]] = (
    ResolveSource,
    Discover,
    EnsureGroup,
    EnsureGallery,
    EnsureDefinition,
    CreateVersion,
    WaitReplication,
    SmokeTest,
    Retention,
)


class ProbeUrl(ReadStep):
    """Read the URL's size, footer and version; the content id; refuse what is not a VHD."""

    name = "probe source"

    def run(self, ctx: Context) -> StepResult:
        ctx.clients.check_credentials()
        found = stream.probe(
            ctx.source.text, connection_verify=ctx.clients.settings.connection_verify
        )
        ctx.info = vhd.ImageInfo(
            path=Path(found.url),
            format="vhd-fixed",
            file_size=found.size,
            virtual_size=found.size - vhd.SECTOR,
            azure_ready=True,
            problems=(),
            footer=found.footer,
        )
        # With --sha256 the content is known; otherwise the URL and its version name it.
        version = ctx.input.sha256 or found.version
        key = f"{found.url}@{version}"
        digest = ctx.input.sha256 or hashlib.sha256(key.encode()).hexdigest()
        ctx.content = names.ContentId(hash=digest[:32], store_path=None)
        ctx.data_bytes = found.size
        ctx.source_blob_type = found.blob_type
        ctx.source_ranges, ctx.source_etag = found.ranges, found.etag
        ctx.extra_tags = {names.TAG_SOURCE: found.url, names.TAG_SOURCE_VERSION: version[:256]}
        ctx.report.source = f"{found.url}@{version}"
        ctx.report.store_hash = ctx.content.hash
        ctx.report.file_size = found.size
        kind = f"an Azure {found.blob_type}" if found.blob_type else "a file"
        checked = " (streamed to check --sha256)" if found.blob_type and ctx.input.sha256 else ""
        return done(f"{found.url}: {kind} of {found.size} bytes, version {version}{checked}")


class StreamUpload(Upload):
    """The upload step from the URL: an Azure blob is copied server-side (Put Page From
    URL); any other URL is streamed through this machine, never stored."""

    def plan(self, ctx: Context) -> StepResult:
        if ctx.already_published:
            return skipped("not needed: already published")
        if ctx.disk is not None and ctx.disk.uploaded:
            return skipped("not needed: the disk holds the whole image")
        size = ctx.info.file_size if ctx.info else 0
        if ctx.copied_server_side:
            return done(f"would copy the {size} bytes of the source blob server-side")
        return done(f"would stream the {size} bytes of the source, sending the non-zero sectors")

    @staticmethod
    def _upload(ctx: Context, sas: str) -> UploadResult:
        source = ctx.source
        if ctx.info is None:  # pragma: no cover - ProbeUrl always runs first
            raise InternalError("internal: a stream without a probed source")
        verify = ctx.clients.settings.connection_verify
        if ctx.copied_server_side:
            return fromurl.copy_from_url(
                url=source.text,
                sas_url=sas,
                size=ctx.info.file_size,
                page_blob=ctx.source_blob_type == "PageBlob",
                concurrency=ctx.target.upload.concurrency,
                connection_verify=verify,
                progress=ctx.options.progress,
            )
        return stream.stream_into(
            url=source.text,
            sas_url=sas,
            size=ctx.info.file_size,
            sha256=ctx.input.sha256,
            ranges=ctx.source_ranges,
            etag=ctx.source_etag,
            concurrency=ctx.target.upload.concurrency,
            connection_verify=verify,
            destination_verify=verify,
            progress=ctx.options.progress,
        )


URL_IMPORT_STEPS: Final[tuple[type[Step], ...]] = (
    ProbeUrl,
    Discover,
    EnsureGroup,
    EnsureDisk,
    StreamUpload,
    *FROM_DISK,
)

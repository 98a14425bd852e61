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
import logging
from typing import TYPE_CHECKING, Any, Final, cast

from nixos_azure_publish.azure import importsource, names
from nixos_azure_publish.errors import ConfigError, InternalError
from nixos_azure_publish.pipeline.after import Retention, SmokeTest
from nixos_azure_publish.pipeline.checks import Discover
from nixos_azure_publish.pipeline.context import Context, Step, StepResult, done
from nixos_azure_publish.pipeline.gallery import (
    CreateVersion,
    EnsureDefinition,
    EnsureGallery,
    WaitReplication,
)
from nixos_azure_publish.pipeline.upload import EnsureGroup

if TYPE_CHECKING:
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)


class ResolveSource(Step):
    """Read the source version and what it needs of the definition; refuse contradictions."""

    name = "resolve source"

    def plan(self, ctx: Context) -> StepResult:
        return self.run(ctx)

    def run(self, ctx: Context) -> StepResult:
        source = ctx.input.source
        if source is None:  # pragma: no cover - the import pipeline always has one
            raise InternalError("internal: an import without a source")
        ctx.clients.check_credentials()
        resolved = importsource.resolve(ctx.clients, source, location=ctx.target.location)
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

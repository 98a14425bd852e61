"""What the steps of one publish share: its input, options and context; the step protocol."""

from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

from nixos_azure_publish import state, vhd
from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import names
from nixos_azure_publish.azure import replication as azreplication
from nixos_azure_publish.config import TRUSTED_LAUNCH_TYPES
from nixos_azure_publish.errors import (
    InternalError,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.azure.importsource import ImportSource, ResolvedSource
    from nixos_azure_publish.config import PublishTarget
    from nixos_azure_publish.report import (
        PublishReport,
    )
    from nixos_azure_publish.upload.progress import ProgressSink

log = logging.getLogger(__name__)

JOURNAL_VERSION: Final = 1


@dataclass(frozen=True)
class PublishInput:
    """What to publish: a validated target and its located image."""

    target: PublishTarget
    # None for an import from a gallery or a URL: the image is not on this machine.
    image_path: Path | None
    store_path: str | None = None
    flake_revision: str | None = None
    # An import's source (the target's own image otherwise).
    source: ImportSource | None = None
    # An import from a URL: the sha256 the stream must have (--sha256).
    sha256: str | None = None


@dataclass
class PublishOptions:
    """How to publish."""

    state_dir: Path | None = None
    replication_interval: float | None = None
    replication_timeout: float = azreplication.DEFAULT_TIMEOUT
    progress: ProgressSink | None = None
    # Overrides smokeTest.timeoutSeconds (tests); the poll interval of the serial log.
    smoke_timeout: float | None = None
    smoke_interval: float | None = None
    # Remove the regions a published version has that the target no longer lists.
    remove_unlisted_regions: bool = False
    now: Callable[[], dt.datetime] = field(default=lambda: dt.datetime.now(dt.UTC))
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Context:
    """State shared by the steps of one publish."""

    input: PublishInput
    clients: AzureClients
    options: PublishOptions
    report: PublishReport
    journal_path: Path
    journal: dict[str, Any] = field(default_factory=dict)
    info: vhd.ImageInfo | None = None
    content: names.ContentId | None = None
    data_bytes: int = 0
    # What Discover found in Azure (None: missing).
    group_exists: bool = False
    gallery_exists: bool = False
    definition: dict[str, Any] | None = None
    published: azreplication.VersionState | None = None
    disk: azdisk.DiskState | None = None
    managed_image: dict[str, Any] | None = None
    version_name: str | None = None
    # The community gallery's public name (Azure gives it when sharing is enabled).
    public_name: str | None = None
    # Versions that hold this image but failed: replaced by a new one.
    failed_versions: list[azreplication.VersionState] = field(default_factory=list)
    # An import's resolved source: the version's storageProfile names it, and tags record it.
    resolved: ResolvedSource | None = None
    extra_tags: dict[str, str] = field(default_factory=dict)
    # An import from a URL that is an Azure blob (its x-ms-blob-type): copied server-side.
    source_blob_type: str | None = None
    # An import from any other URL: whether it serves byte ranges (read in parallel) and
    # its strong ETag (each ranged read must match it).
    source_ranges: bool = False
    source_etag: str | None = None

    @property
    def target(self) -> PublishTarget:
        """The publish target."""
        return self.input.target

    @property
    def image_path(self) -> Path:
        """The local image file (a publish, or an import streamed through this machine)."""
        if self.input.image_path is None:  # pragma: no cover - import steps never ask
            raise InternalError("internal: this run has no local image")
        return self.input.image_path

    @property
    def copied_server_side(self) -> bool:
        """An import from an Azure blob URL is copied by the service, unless --sha256 asks
        for a check of the bytes, which only a stream through this machine can make."""
        return self.source_blob_type is not None and self.input.sha256 is None

    @property
    def source(self) -> ImportSource:
        """An import's source (the import pipelines always have one)."""
        if self.input.source is None:  # pragma: no cover - only import steps ask
            raise InternalError("internal: an import without a source")
        return self.input.source

    @property
    def hash(self) -> str:
        """The image's content id (checked by CheckImage before any other step)."""
        if self.content is None:  # pragma: no cover - CheckImage always runs first
            raise InternalError("internal: the image was not checked")
        return self.content.hash

    @property
    def disk_name(self) -> str:
        """The content-addressed upload disk name."""
        return names.upload_disk_name(self.target, self._content())

    @property
    def image_name(self) -> str:
        """The managed image name."""
        return names.managed_image_name(self.target, self._content())

    def _content(self) -> names.ContentId:
        if self.content is None:  # pragma: no cover
            raise InternalError("internal: the image was not checked")
        return self.content

    def tags(self, **extra: str) -> dict[str, str]:
        """Provenance tags for a resource that holds this image."""
        return names.resource_tags(
            self.target,
            self._content(),
            flake_revision=self.input.flake_revision,
            extra={**self.extra_tags, **extra},
        )

    @property
    def container_tags(self) -> dict[str, str]:
        """Tags for the group, gallery and definition."""
        return names.container_tags(self.target)

    @property
    def has_gallery(self) -> bool:
        """The target publishes into a gallery."""
        return self.target.gallery is not None and self.target.image_definition is not None

    @property
    def version_needs_image(self) -> bool:
        """The version must come from a managed image: Azure refuses a managed disk as the
        source of a Trusted Launch-type definition's version (VHD blob, managed image and
        gallery version sources only)."""
        return self.has_gallery and self.target.security_type in TRUSTED_LAUNCH_TYPES

    @property
    def needs_managed_image(self) -> bool:
        """A managed image is made: asked for, or needed as the version's source."""
        return self.target.managed_image.enable or self.version_needs_image

    @property
    def already_published(self) -> bool:
        """A version holding this image exists (perhaps still replicating)."""
        return self.published is not None

    def save_journal(self, **updates: Any) -> None:  # noqa: ANN401
        """Record finished work locally (a cache; the cloud stays the truth)."""
        self.journal.update(updates)
        self.journal["journalVersion"] = JOURNAL_VERSION
        self.journal["contentHash"] = self.hash
        state.write_json_atomic(self.journal_path, self.journal)


@dataclass(frozen=True)
class StepResult:
    """What a step did, or would do: a one-line detail for the report, and whether the
    step had nothing to do (it is then reported as skipped)."""

    detail: str
    skipped: bool = False


def done(detail: str) -> StepResult:
    """The step did (or would do) *detail*."""
    return StepResult(detail)


def skipped(detail: str) -> StepResult:
    """The step had nothing to do; *detail* says why."""
    return StepResult(detail, skipped=True)


class Step:
    """One step of a publish: ``plan`` changes nothing, ``run`` does the work."""

    name: ClassVar[str] = "step"

    def plan(self, ctx: Context) -> StepResult:
        """Record what :meth:`run` would do in the report; return a one-line detail."""
        del ctx
        return done("")

    def run(self, ctx: Context) -> StepResult:
        """Do the work (idempotently); return a one-line detail for the report."""
        raise NotImplementedError


class ReadStep(Step):
    """A step that only reads: a dry run runs it as it is, so the plan sees what it finds."""

    def plan(self, ctx: Context) -> StepResult:
        return self.run(ctx)

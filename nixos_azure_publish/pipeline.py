"""One publish, from a located image to a replicated gallery image version.

The publish is a list of :class:`Step` objects. Each has ``plan()`` (say what
it would do, from what :class:`Discover` found, without changing anything)
and ``run()`` (do it, looking at Azure first and creating only what is
missing). ``--dry-run`` prints the plan; a real run executes the steps in
order and records each in the :class:`~nixos_azure_publish.report.PublishReport`.

Everything that can fail without uploading runs first: the image check, the
credentials, the name rules and the image definition's compatibility. The
upload disk and the managed image are named by the image's content id, and
versions are tagged with it, so a rerun (after a crash, a kill or Ctrl-C)
finds what an earlier run left and continues; a rerun after success changes
nothing. A local journal keyed by the content id only saves time; the cloud
is the truth.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Final

from nixos_azure_publish import config, state, upload, vhd
from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import gallery as azgallery
from nixos_azure_publish.azure import group as azgroup
from nixos_azure_publish.azure import image as azimage
from nixos_azure_publish.azure import names
from nixos_azure_publish.azure import replication as azreplication
from nixos_azure_publish.azure import retention as azretention
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.azure import vm as azvm
from nixos_azure_publish.errors import (
    AzureError,
    ConfigError,
    Interrupted,
    PublishError,
    SasExpiredError,
    SmokeTestError,
    UploadError,
)
from nixos_azure_publish.report import (
    Action,
    PublishReport,
    RegionRecord,
    StepRecord,
    UploadStats,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget
    from nixos_azure_publish.upload.progress import ProgressSink, UploadResult

log = logging.getLogger(__name__)

JOURNAL_VERSION: Final = 1
# How long to wait for a concurrent publisher that is uploading the same image.
OTHER_UPLOAD_TIMEOUT: Final = 1800.0


@dataclass(frozen=True)
class PublishInput:
    """What to publish: a validated target and its located image."""

    target: PublishTarget
    image_path: Path
    store_path: str | None = None
    flake_revision: str | None = None


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
    # Versions that hold this image but failed: replaced by a new one.
    failed_versions: list[azreplication.VersionState] = field(default_factory=list)

    @property
    def target(self) -> PublishTarget:
        """The publish target."""
        return self.input.target

    @property
    def hash(self) -> str:
        """The image's content id (checked by CheckImage before any other step)."""
        if self.content is None:  # pragma: no cover - CheckImage always runs first
            raise AzureError("internal: the image was not checked")
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
            raise AzureError("internal: the image was not checked")
        return self.content

    def tags(self, **extra: str) -> dict[str, str]:
        """Provenance tags for a resource that holds this image."""
        return names.resource_tags(
            self.target, self._content(), flake_revision=self.input.flake_revision, extra=extra
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
    def already_published(self) -> bool:
        """A version holding this image exists (perhaps still replicating)."""
        return self.published is not None

    def save_journal(self, **updates: Any) -> None:  # noqa: ANN401
        """Record finished work locally (a cache; the cloud stays the truth)."""
        self.journal.update(updates)
        self.journal["journalVersion"] = JOURNAL_VERSION
        self.journal["contentHash"] = self.hash
        state.write_json_atomic(self.journal_path, self.journal)


class Step:
    """One step of a publish: ``plan`` changes nothing, ``run`` does the work."""

    name: ClassVar[str] = "step"

    def plan(self, ctx: Context) -> str:
        """Record what :meth:`run` would do in the report; return a one-line detail."""
        del ctx
        return ""

    def run(self, ctx: Context) -> str:
        """Do the work (idempotently); return a one-line detail for the report."""
        raise NotImplementedError


# --------------------------------------------------------------------------- local checks


class CheckImage(Step):
    """The VHD is acceptable to Azure; its content id and data size."""

    name = "check image"

    def plan(self, ctx: Context) -> str:
        return self.run(ctx)

    def run(self, ctx: Context) -> str:
        path = ctx.input.image_path
        info = vhd.require_azure_ready(path)
        extents = vhd.data_extents(path)
        ctx.info = info
        ctx.data_bytes = sum(e.length for e in extents)
        store = ctx.input.store_path or names.store_path_of(path)
        ctx.content = names.content_id(path, store_path=store)
        ctx.report.image_file = path.name
        ctx.report.file_size = info.file_size
        ctx.report.store_path = ctx.content.source
        ctx.report.store_hash = ctx.content.hash
        journal = state.read_json(ctx.journal_path) or {}
        if journal.get("contentHash") == ctx.content.hash:
            ctx.journal = journal
            finished = ", ".join(journal.get("steps") or {}) or "nothing yet"
            log.info("resuming an earlier publish of this image (it finished: %s)", finished)
        return f"{info.format}, {info.file_size} bytes, {ctx.data_bytes} data bytes"


class Discover(Step):
    """Read-only: credentials, and what already exists in Azure. Refuses conflicts early."""

    name = "discover"

    def plan(self, ctx: Context) -> str:
        return self.run(ctx)

    def run(self, ctx: Context) -> str:
        t = ctx.target
        check_smoke_location(t)
        clients = ctx.clients
        clients.check_credentials()
        ctx.group_exists = azgroup.group_exists(clients, t.resource_group)
        found: list[str] = []
        if ctx.group_exists:
            found.append(f"group {t.resource_group}")
            self._discover_gallery(ctx, found)
            ctx.disk = azdisk.get_disk(clients, t.resource_group, ctx.disk_name)
            if ctx.disk is not None:
                azdisk.check_reusable(ctx.disk, content_hash=ctx.hash, size=self._size(ctx))
                found.append(f"disk {ctx.disk.name} ({ctx.disk.state})")
            if t.managed_image.enable:
                ctx.managed_image = azimage.get_image(clients, t.resource_group, ctx.image_name)
        if ctx.published is None and ctx.has_gallery:
            ctx.version_name = choose_version_name(ctx)
            self._check_version_name_free(ctx)
        return "found " + (", ".join(found) if found else "nothing")

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
        found.append(f"gallery {t.gallery.name}")
        ctx.definition = azgallery.get_definition(ctx.clients, t)
        if ctx.definition is None:
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
        ctx.version_name = free_version_name(ctx, ctx.version_name)


MAX_NAME_BUMPS: Final = 100


def check_smoke_location(target: PublishTarget) -> None:
    """The smoke test boots where the version is replicated; refuse anything else early."""
    if not target.smoke_test.enable:
        return
    where = azvm.smoke_location(target)
    regions = {azreplication.region_key(r.name) for r in target.regions}
    if azreplication.region_key(where) not in regions:
        raise ConfigError(
            [
                (
                    f"smokeTest.location: {where} is not one of the target regions"
                    f" ({', '.join(sorted(regions))}); use one of them, or add it to regions"
                )
            ]
        )


def free_version_name(ctx: Context, name: str) -> str:
    """*name*, or the next free patch number when another image holds it.

    Only the default, time-based template is bumped (two images published in the
    same second); a name from the user's own template is theirs to change. Every
    publisher of the same image sees the same versions, so they pick the same name.
    """
    candidate = name
    for _ in range(MAX_NAME_BUMPS):
        existing = azreplication.get_version(ctx.clients, ctx.target, candidate)
        if existing is None or existing.tags.get(names.TAG_CONTENT) == ctx.hash:
            if candidate != name:
                log.info("version %s holds another image; using %s", name, candidate)
            return candidate
        if ctx.target.version.name != config.DEFAULT_VERSION_TEMPLATE:
            raise AzureError(
                f"image version {candidate} already exists and holds another image",
                hint="Change version.name so that it renders a new Major.Minor.Patch",
            )
        major, minor, patch = (int(part) for part in candidate.split("."))
        candidate = f"{major}.{minor}.{patch + 1}"
    raise AzureError(
        f"image versions {name} and the next {MAX_NAME_BUMPS} patch numbers are taken",
        hint="Set version.name to a template that renders a new Major.Minor.Patch",
    )


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: str | None) -> dt.datetime | None:
    """An ARM timestamp (which may carry 7 fractional digits) as an aware datetime."""
    if not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(_FRACTION.sub(r"\1", value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def choose_version_name(ctx: Context) -> str:
    """Render ``version.name`` so that every run for this image agrees on it.

    The time in the template is the upload disk's creation time when the disk
    exists (two publishers of one image share one content-addressed disk, so
    they render the same name), else the time the journal recorded, else now.
    """
    when = (
        parse_time(ctx.disk.time_created if ctx.disk else None)
        or parse_time(ctx.journal.get("startedAt"))
        or ctx.options.now()
    )
    return config.render_version_name(ctx.target, store_hash=ctx.hash, now=when)


# --------------------------------------------------------------------------- Azure steps


class EnsureGroup(Step):
    """The resource group."""

    name = "ensure group"

    def plan(self, ctx: Context) -> str:
        action: Action = "exists" if ctx.group_exists else "would-create"
        ctx.report.resource("resource group", ctx.target.resource_group, action)
        return action

    def run(self, ctx: Context) -> str:
        t = ctx.target
        if ctx.group_exists:
            ctx.report.resource("resource group", t.resource_group, "reused")
            return "exists"
        created = azgroup.ensure_group(
            ctx.clients, t.resource_group, location=t.location, tags=ctx.container_tags
        )
        ctx.group_exists = True
        ctx.report.resource("resource group", t.resource_group, "created" if created else "reused")
        return "created" if created else "exists"


class EnsureDisk(Step):
    """The content-addressed upload disk (reused when it holds or awaits this image)."""

    name = "ensure upload disk"

    def plan(self, ctx: Context) -> str:
        if ctx.already_published:
            return "not needed: already published"
        action: Action
        if ctx.disk is None:
            action = "would-create"
        elif ctx.disk.writable or ctx.disk.uploaded:
            action = "exists"
        else:
            action = "would-create"
        size = ctx.info.file_size if ctx.info else 0
        ctx.report.resource("disk", ctx.disk_name, action, detail=f"{size} bytes, upload")
        return action

    def run(self, ctx: Context) -> str:
        if ctx.already_published:
            return "not needed: already published"
        if ctx.has_gallery and ctx.definition is not None:
            # Another publisher may have finished while we were checking.
            ctx.published = azversion.find_published(ctx.clients, ctx.target, ctx.hash)
            if ctx.published is not None:
                ctx.version_name = ctx.published.name
                return f"not needed: published meanwhile as {ctx.published.name}"
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
        return f"{'created' if created else 'reused'} {disk.name} ({disk.state})"


class Upload(Step):
    """Grant write access, write the image's pages, verify, mark, and always revoke."""

    name = "upload"

    def plan(self, ctx: Context) -> str:
        if ctx.already_published:
            return "not needed: already published"
        if ctx.disk is not None and ctx.disk.uploaded:
            return "not needed: the disk holds the whole image"
        return (
            f"would upload {ctx.data_bytes} data bytes of {ctx.info.file_size if ctx.info else 0}"
        )

    def run(self, ctx: Context) -> str:
        disk = ctx.disk
        if ctx.already_published or disk is None:
            return "not needed: already published"
        if disk.uploaded:
            return "not needed: the disk holds the whole image"
        group = ctx.target.resource_group
        sas = azdisk.grant_write(ctx.clients, group, disk.name)
        complete = False
        handed_over = False
        try:
            try:
                result = self._upload(ctx, sas)
            except SasExpiredError:
                # A concurrent publisher of the same image granted access after us (which
                # replaces our SAS) or finished and revoked it: its verified upload is as
                # good as ours, so wait for it instead of fighting over the disk.
                other = self._wait_for_other_upload(ctx, disk.name)
                if other is None:
                    raise
                handed_over = True
                ctx.disk = other
                return "not needed: another publisher uploaded this image"
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
            bytes_sent=result.bytes_sent,
            ranges_sent=result.ranges_sent,
            ranges_skipped=result.ranges_skipped,
            ranges_retried=result.ranges_retried,
            seconds=result.seconds,
            verified=ctx.target.upload.verify if result.verified else "none",
        )
        ctx.report.upload = stats
        return f"sent {result.bytes_sent} of {result.data_bytes} data bytes"

    @staticmethod
    def _upload(ctx: Context, sas: str) -> UploadResult:
        settings = ctx.target.upload
        return upload.upload(
            path=ctx.input.image_path,
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


class EnsureGallery(Step):
    """The Compute Gallery (with community sharing when configured)."""

    name = "ensure gallery"

    def plan(self, ctx: Context) -> str:
        if ctx.target.gallery is None:
            return "no gallery configured"
        action: Action = "exists" if ctx.gallery_exists else "would-create"
        ctx.report.resource("gallery", ctx.target.gallery.name, action)
        return action

    def run(self, ctx: Context) -> str:
        g = ctx.target.gallery
        if g is None:
            return "no gallery configured"
        if ctx.gallery_exists:
            ctx.report.resource("gallery", g.name, "reused")
            return "exists"
        created = azgallery.ensure_gallery(ctx.clients, ctx.target, tags=ctx.container_tags)
        ctx.gallery_exists = True
        ctx.report.resource("gallery", g.name, "created" if created else "reused")
        return "created" if created else "exists"


class EnsureDefinition(Step):
    """The image definition (an existing one was checked by Discover)."""

    name = "ensure definition"

    def plan(self, ctx: Context) -> str:
        d = ctx.target.image_definition
        if d is None:
            return "no definition configured"
        action: Action = "exists" if ctx.definition is not None else "would-create"
        t = ctx.target
        detail = f"{t.hyper_v_generation}, {t.architecture}, {t.security_type}"
        ctx.report.resource("image definition", d.name, action, detail=detail)
        return action

    def run(self, ctx: Context) -> str:
        d = ctx.target.image_definition
        if d is None:
            return "no definition configured"
        if ctx.definition is not None:
            ctx.report.resource("image definition", d.name, "reused", id=ctx.definition.get("id"))
            return "exists"
        created = azgallery.ensure_definition(ctx.clients, ctx.target, tags=ctx.container_tags)
        ctx.definition = azgallery.get_definition(ctx.clients, ctx.target)
        def_id = ctx.definition.get("id") if ctx.definition else None
        ctx.report.resource(
            "image definition", d.name, "created" if created else "reused", id=def_id
        )
        return "created" if created else "exists"


class ManagedImage(Step):
    """The optional managed image, made from the upload disk."""

    name = "managed image"

    def plan(self, ctx: Context) -> str:
        if not ctx.target.managed_image.enable:
            return "not enabled"
        action: Action = "exists" if ctx.managed_image is not None else "would-create"
        ctx.report.resource("managed image", ctx.image_name, action)
        return action

    def run(self, ctx: Context) -> str:
        if not ctx.target.managed_image.enable:
            return "not enabled"
        if ctx.managed_image is not None:
            ctx.report.resource(
                "managed image", ctx.image_name, "reused", id=ctx.managed_image.get("id")
            )
            return "exists"
        image, created = azimage.ensure_image(
            ctx.clients,
            ctx.target,
            name=ctx.image_name,
            disk_id=ctx.disk.id if ctx.disk else None,
            tags=ctx.tags(),
        )
        ctx.managed_image = image
        ctx.report.resource(
            "managed image", ctx.image_name, "created" if created else "reused", id=image.get("id")
        )
        return "created" if created else "exists"


class CreateVersion(Step):
    """The image version, with target regions, replicas, storage SKU, EOL and mode."""

    name = "create version"

    def plan(self, ctx: Context) -> str:
        if not ctx.has_gallery:
            return "no gallery configured"
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
        return f"{action} {name} in {regions}"

    def run(self, ctx: Context) -> str:
        if not ctx.has_gallery:
            return "no gallery configured"
        if ctx.published is None:
            ctx.published, ctx.failed_versions = azversion.find_versions(
                ctx.clients, ctx.target, ctx.hash
            )
        if ctx.published is not None:
            ctx.version_name = ctx.published.name
            ctx.report.resource("image version", ctx.published.name, "reused", id=ctx.published.id)
            return f"exists: {ctx.published.name}"
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
        ctx.version_name = free_version_name(ctx, choose_version_name(ctx))
        source_id, from_disk = self._source(ctx)
        # A version waiting for its smoke test is kept out of `latest` until it passes.
        exclude = True if ctx.target.smoke_test.enable else None
        body = azversion.version_body(
            ctx.target,
            source_id=source_id,
            from_disk=from_disk,
            tags=ctx.tags(),
            exclude_from_latest=exclude,
        )
        azversion.create_version(ctx.clients, ctx.target, ctx.version_name, body)
        ctx.save_journal(version=ctx.version_name)
        replaced = ctx.version_name in {failed.name for failed in ctx.failed_versions}
        detail = "replaces the failed version of that name" if replaced else ""
        ctx.report.resource("image version", ctx.version_name, "created", detail=detail)
        return f"created {ctx.version_name}"

    @staticmethod
    def _source(ctx: Context) -> tuple[str, bool]:
        if ctx.managed_image is not None and ctx.managed_image.get("id"):
            return str(ctx.managed_image["id"]), False
        if ctx.disk is None:
            raise AzureError(
                "the upload disk is gone before the version was created",
                hint="Run again: the image will be uploaded again",
            )
        return ctx.disk.id, True


class WaitReplication(Step):
    """Wait until the version is replicated to every target region."""

    name = "replicate"

    def plan(self, ctx: Context) -> str:
        if not ctx.has_gallery:
            return "no gallery configured"
        if ctx.published is not None:
            _record_regions(ctx, ctx.published)
            missing = ctx.published.missing_regions(ctx.target)
            if missing:
                ctx.report.resource(
                    "image version",
                    ctx.published.name,
                    "would-update",
                    detail="add regions " + ", ".join(missing),
                )
                return "would add " + ", ".join(missing)
            return azreplication.describe(ctx.published)
        return "would wait for " + ", ".join(r.name for r in ctx.target.regions)

    def run(self, ctx: Context) -> str:
        if not ctx.has_gallery or ctx.version_name is None:
            return "no gallery configured"
        published = ctx.published
        missing = published.missing_regions(ctx.target) if published is not None else []
        if published is not None and missing:
            # The target lists regions this version was never replicated to: add them.
            azversion.add_regions(ctx.clients, ctx.target, published)
            ctx.report.resource(
                "image version",
                published.name,
                "updated",
                id=published.id,
                detail="added regions " + ", ".join(missing),
            )
        elif published is not None and published.replicated:
            _record_regions(ctx, published)
            return azreplication.describe(published)
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
        return azreplication.describe(final)


def _record_regions(ctx: Context, state_: azreplication.VersionState) -> None:
    wanted = {azreplication.region_key(r.name): r for r in ctx.target.regions}
    records = []
    for status in state_.regions:
        region = wanted.get(status.region)
        records.append(
            RegionRecord(
                region=status.region,
                state=status.state,
                progress=status.progress,
                replicas=region.replicas if region else None,
                storage_account_type=region.storage_account_type if region else None,
                details=status.details,
            )
        )
    ctx.report.regions = records
    ctx.report.version = state_.name
    ctx.report.version_id = state_.id or None


class Cleanup(Step):
    """Delete the upload disk once a replicated version holds the image (per config)."""

    name = "cleanup"

    def plan(self, ctx: Context) -> str:
        if not ctx.target.cleanup.delete_upload_disk or not ctx.has_gallery:
            return "keeping the upload disk"
        if ctx.disk is not None:
            ctx.report.resource("disk", ctx.disk_name, "would-delete")
            return f"would delete disk {ctx.disk_name}"
        return "nothing to delete"

    def run(self, ctx: Context) -> str:
        if not ctx.has_gallery or ctx.published is None or not ctx.published.replicated:
            return "keeping the upload disk"
        if not ctx.target.cleanup.delete_upload_disk:
            if ctx.disk is not None:
                ctx.report.resource("disk", ctx.disk_name, "kept", id=ctx.disk.id)
            return "keeping the upload disk (cleanup.deleteUploadDisk is false)"
        group = ctx.target.resource_group
        # Look again: the disk may exist although Discover ran before it was made.
        current = azdisk.get_disk(ctx.clients, group, ctx.disk_name)
        if current is None:
            return "nothing to delete"
        if current.writable:
            # An upload was interrupted here (by a concurrent publisher): close it first.
            azdisk.revoke(ctx.clients, group, current.name)
        azdisk.delete_disk(ctx.clients, group, current.name)
        earlier = [r for r in ctx.report.resources if r.kind == "disk" and r.action == "created"]
        detail = "created, then deleted once the version held the image" if earlier else ""
        ctx.report.resource("disk", current.name, "deleted", id=current.id, detail=detail)
        return f"deleted disk {current.name}"


class SmokeTest(Step):
    """Boot a throwaway VM from the version; promote it to latest when it boots."""

    name = "smoke test"

    def plan(self, ctx: Context) -> str:
        s = ctx.target.smoke_test
        if not s.enable or not ctx.has_gallery:
            return "not enabled"
        if ctx.published is not None and _smoke_passed(ctx.published):
            return f"not needed: {ctx.published.name} passed earlier"
        where = azvm.smoke_location(ctx.target)
        ctx.report.resource(
            "virtual machine",
            f"smoke-{ctx.target.name}",
            "would-create",
            detail=f"{s.vm_size} in {where}, with NIC and VNet; deleted after the test",
        )
        promote = "" if ctx.target.version.exclude_from_latest else "; then include it in latest"
        return (
            f"would boot {ctx.version_name or '?'} on {s.vm_size} in {where} and wait up to"
            f" {s.timeout_seconds}s for /{s.expect}/ in the serial log{promote}"
        )

    def run(self, ctx: Context) -> str:
        s = ctx.target.smoke_test
        if not s.enable or not ctx.has_gallery or ctx.published is None:
            return "not enabled"
        version = ctx.published
        if _smoke_passed(version):
            return f"not needed: {version.name} passed earlier"
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
        return f"passed in {result.seconds:.0f}s" + ("; promoted to latest" if promote else "")


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

    def plan(self, ctx: Context) -> str:
        doomed = self._doomed(ctx)
        if doomed is None:
            return "not enabled"
        for d in doomed:
            ctx.report.resource("image version", d.name, "would-delete", id=d.id, detail=d.reason)
        return (
            "would delete " + ", ".join(d.name for d in doomed) if doomed else "nothing to delete"
        )

    def run(self, ctx: Context) -> str:
        doomed = self._doomed(ctx)
        if doomed is None:
            return "not enabled"
        for d in doomed:
            log.info("retention: deleting image version %s (%s)", d.name, d.reason)
            azversion.delete_version(ctx.clients, ctx.target, d.name)
            ctx.report.resource("image version", d.name, "deleted", id=d.id, detail=d.reason)
        return "deleted " + ", ".join(d.name for d in doomed) if doomed else "nothing to delete"


STEPS: Final[tuple[type[Step], ...]] = (
    CheckImage,
    Discover,
    EnsureGroup,
    EnsureDisk,
    Upload,
    EnsureGallery,
    EnsureDefinition,
    ManagedImage,
    CreateVersion,
    WaitReplication,
    SmokeTest,
    Cleanup,
    Retention,
)


class Pipeline:
    """The steps of one publish, planned or run."""

    def __init__(
        self,
        publish: PublishInput,
        *,
        clients: AzureClients,
        options: PublishOptions | None = None,
        steps: tuple[type[Step], ...] = STEPS,
    ) -> None:
        self.options = options or PublishOptions()
        state_dir = self.options.state_dir or state.default_state_dir()
        self.options.state_dir = state_dir
        t = publish.target
        report = PublishReport(
            target=t.name,
            gallery=t.gallery.name if t.gallery else None,
            resource_group=t.resource_group,
            flake_revision=publish.flake_revision,
        )
        if t.gallery is not None and t.image_definition is not None:
            report.definition_id = names.resource_id(
                clients.settings.subscription_id,
                t.resource_group,
                "galleries",
                t.gallery.name,
                "images",
                t.image_definition.name,
            )
        self.ctx = Context(
            input=publish,
            clients=clients,
            options=self.options,
            report=report,
            journal_path=state_dir / "publish" / f"{t.name}.json",
        )
        self.steps = [cls() for cls in steps]

    @property
    def report(self) -> PublishReport:
        """The report so far."""
        return self.ctx.report

    def plan(self) -> PublishReport:
        """Discover what exists and say what a run would do; changes nothing."""
        began = time.monotonic()
        self.report.dry_run = True
        for step in self.steps:
            t0 = time.monotonic()
            detail = step.plan(self.ctx)
            self.report.steps.append(
                StepRecord(step.name, "planned", time.monotonic() - t0, detail)
            )
        self.report.status = "planned"
        self.report.version = self.ctx.version_name
        self.report.seconds = time.monotonic() - began
        return self.report

    def run(self) -> PublishReport:
        """Run every step; the report says what was created, reused and sent."""
        began = time.monotonic()
        report = self.report
        current = ""
        try:
            for step in self.steps:
                current = step.name
                self._run_step(step)
        except (KeyboardInterrupt, Interrupted) as error:
            report.status = "interrupted"
            report.seconds = time.monotonic() - began
            revoked = (
                " (write access to the upload disk was revoked)" if current == "upload" else ""
            )
            detail = f": {error.message}" if isinstance(error, Interrupted) else ""
            raise Interrupted(
                f"interrupted during step {current!r}{revoked}{detail}",
                hint="Run the same command again to resume",
            ) from None
        except PublishError as error:
            report.status = "failed"
            report.error = error.one_line()
            report.seconds = time.monotonic() - began
            raise
        report.status = "already-published" if self._nothing_created() else "published"
        report.version = self.ctx.version_name
        report.seconds = time.monotonic() - began
        with contextlib.suppress(OSError):
            state.remove(self.ctx.journal_path)
        return report

    def _nothing_created(self) -> bool:
        changed = {"created", "updated", "deleted"}
        return self.report.upload is None and not any(
            r.action in changed for r in self.report.resources
        )

    def _run_step(self, step: Step) -> None:
        log.debug("%s: starting", step.name)
        t0 = time.monotonic()
        record = StepRecord(step.name, "failed")
        self.report.steps.append(record)
        try:
            detail = step.run(self.ctx)
        finally:
            record.seconds = time.monotonic() - t0
        record.status = "skipped" if detail.startswith(("not needed", "no ", "not ")) else "done"
        record.detail = detail
        if self.ctx.content is not None and step.name not in {CheckImage.name, Discover.name}:
            done = dict(self.ctx.journal.get("steps") or {})
            done[step.name] = self.ctx.options.now().isoformat()
            self.ctx.save_journal(steps=done)
        log.info("%s: %s (%.1fs)", step.name, detail, record.seconds)

"""One upload for every target of a run that publishes the same image.

The upload disk is named after its target (``<target>-<hash>``), so two targets never
meet at one disk by name. Within one run they meet here instead: targets whose image
has the same content id, in the same subscription and region, with the same Hyper-V
generation and architecture, share one upload (a target without a gallery publishes
its own disk, so it keeps its own upload). The first target to need the disk
uploads into its own disk; the others wait for it and make their versions from that
disk (or from a managed image of it, made in their own resource group).

Why the disk, and not the first target's gallery version: Azure takes a disk only as
the source of versions of definitions that are not Trusted Launch types; for those,
the pipeline makes a managed image from the disk first, and a managed image ("User
Image") source is accepted by every definition type. Both need only the uploaded disk,
which exists as soon as the upload is verified, so the other targets start their
versions then instead of waiting for the first target's version to replicate (a
gallery version source must be replicated to the region first). The disk must be in
the version's region, hence the region in the key; its generation and architecture
must match the definition's, hence those too.

The disk's owner would delete it once its own version is replicated, while others may
still be making theirs from it: in a run of several targets the cleanup step waits for
the end of the run (:func:`finish_cleanups`), and deletes a shared disk only when every
target that used it holds a replicated version; otherwise it is kept for the rerun, as
a single publish keeps its disk after a failure.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from nixos_azure_publish.pipeline.after import Cleanup
from nixos_azure_publish.pipeline.context import Context, StepResult, done, skipped
from nixos_azure_publish.pipeline.upload import EnsureDisk, Upload

if TYPE_CHECKING:
    from nixos_azure_publish.azure.disk import DiskState
    from nixos_azure_publish.pipeline.context import Step
    from nixos_azure_publish.report import StepRecord

log = logging.getLogger(__name__)

# Subscription, region, Hyper-V generation, architecture, content id, file size.
ShareKey = tuple[str, str, str, str, str, int]

DEFERRED = "deferred to the end of the run: the upload disk may serve other targets"
_WAKE_SECONDS = 0.5  # waiting threads wake this often, so that Ctrl-C reaches them


def share_key(ctx: Context) -> ShareKey:
    """What two targets must agree on to make their versions from one upload disk."""
    t = ctx.target
    return (
        ctx.clients.settings.subscription_id.lower(),
        t.location.lower(),
        t.hyper_v_generation,
        t.architecture,
        ctx.hash,
        ctx.info.file_size if ctx.info else 0,
    )


@dataclass
class _Shared:
    """One distinct image of the run: who uploads it, and the disk once it holds it."""

    uploader: str | None = None
    owner: str | None = None
    disk: DiskState | None = None
    users: set[str] = field(default_factory=set)
    planned_by: str | None = None


class SharedUploads:
    """The uploads of one run, by :func:`share_key`; safe to use from several threads."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._by_key: dict[ShareKey, _Shared] = {}
        self._owner_of: dict[str, str] = {}  # a target that uses another's disk -> that target

    def claim(self, ctx: Context) -> DiskState | None:
        """The uploaded disk to use, or None: the caller uploads (and must :meth:`release`)."""
        name = ctx.target.name
        with self._cond:
            entry = self._by_key.setdefault(share_key(ctx), _Shared())
            waiting_for = None
            while True:
                if entry.disk is not None and entry.owner is not None:
                    if entry.owner != name:
                        entry.users.add(name)
                        self._owner_of[name] = entry.owner
                    return entry.disk
                if entry.uploader is None or entry.uploader == name:
                    entry.uploader = name
                    return None
                if waiting_for != entry.uploader:
                    waiting_for = entry.uploader
                    log.info("waiting for target %s to upload this image", waiting_for)
                self._cond.wait(_WAKE_SECONDS)

    def offer(self, ctx: Context, disk: DiskState) -> None:
        """*disk* holds the whole image: the run's other targets may use it."""
        with self._cond:
            entry = self._by_key.setdefault(share_key(ctx), _Shared())
            if entry.disk is None:
                entry.disk, entry.owner = disk, ctx.target.name
            if entry.uploader == ctx.target.name:
                entry.uploader = None
            self._cond.notify_all()

    def release(self, ctx: Context) -> None:
        """Give up an upload that did not finish: a waiting target uploads instead."""
        with self._cond:
            for entry in self._by_key.values():
                if entry.uploader == ctx.target.name:
                    entry.uploader = None
            self._cond.notify_all()

    def owner_of(self, name: str) -> str | None:
        """The target whose disk *name* used, if it used another's."""
        with self._cond:
            return self._owner_of.get(name)

    def users_of(self, owner: str) -> set[str]:
        """The targets that made their versions from *owner*'s disk."""
        with self._cond:
            return {u for e in self._by_key.values() if e.owner == owner for u in e.users}

    def plan_claim(self, ctx: Context) -> str | None:
        """For a dry run: the target that would upload this image first, if not this one."""
        with self._cond:
            entry = self._by_key.setdefault(share_key(ctx), _Shared())
            if entry.planned_by is None:
                entry.planned_by = ctx.target.name
            return entry.planned_by if entry.planned_by != ctx.target.name else None

    def planned_uploader(self, ctx: Context) -> str | None:
        """For a dry run: the other target that would upload this image, if any."""
        with self._cond:
            entry = self._by_key.get(share_key(ctx))
            owner = entry.planned_by if entry is not None else None
            return owner if owner != ctx.target.name else None


class SharedDisk(EnsureDisk):
    """The upload disk: this target's own, or the one another target of the run uploaded."""

    uploads: ClassVar[SharedUploads]

    def plan(self, ctx: Context) -> StepResult:
        if (
            ctx.has_gallery
            and not ctx.already_published
            and not (ctx.disk is not None and ctx.disk.uploaded)
        ):
            owner = self.uploads.plan_claim(ctx)
            if owner is not None:
                return skipped(f"would use the disk target {owner} uploads (the same image)")
        return super().plan(ctx)

    def run(self, ctx: Context) -> StepResult:
        if ctx.already_published or not ctx.has_gallery:
            # Without a gallery the target's own disk is what it publishes.
            return super().run(ctx)
        own = ctx.disk
        if own is not None and own.uploaded:
            self.uploads.offer(ctx, own)
            return super().run(ctx)
        disk = self.uploads.claim(ctx)
        if disk is None:  # this target uploads
            return super().run(ctx)
        owner = self.uploads.owner_of(ctx.target.name) or "?"
        ctx.disk = disk
        ctx.report.resource(
            "disk", disk.name, "reused", id=disk.id, detail=f"uploaded in this run by {owner}"
        )
        return done(f"uses {disk.name}, uploaded by target {owner}")


class SharedUpload(Upload):
    """The upload, done once per distinct image of the run and offered to the others."""

    uploads: ClassVar[SharedUploads]

    def plan(self, ctx: Context) -> StepResult:
        own_uploaded = ctx.disk is not None and ctx.disk.uploaded
        if ctx.has_gallery and not ctx.already_published and not own_uploaded:
            owner = self.uploads.planned_uploader(ctx)
            if owner is not None:
                return skipped(f"not needed: target {owner} would upload this image")
        return super().plan(ctx)

    def run(self, ctx: Context) -> StepResult:
        owner = self.uploads.owner_of(ctx.target.name)
        if owner is not None and not ctx.already_published:
            return skipped(f"not needed: target {owner} uploaded this image in this run")
        if not ctx.has_gallery:
            return super().run(ctx)
        try:
            result = super().run(ctx)
            if ctx.disk is not None and ctx.disk.uploaded and not ctx.already_published:
                self.uploads.offer(ctx, ctx.disk)
        finally:
            self.uploads.release(ctx)
        return result


class DeferredCleanup(Cleanup):
    """The cleanup, moved to the end of the run (see :func:`finish_cleanups`)."""

    def run(self, ctx: Context) -> StepResult:
        del ctx
        return skipped(DEFERRED)


def shared_steps(steps: tuple[type[Step], ...], uploads: SharedUploads) -> tuple[type[Step], ...]:
    """*steps* with the disk, upload and cleanup steps of a run of several targets."""
    disk = type("SharedDisk", (SharedDisk,), {"uploads": uploads})
    upload = type("SharedUpload", (SharedUpload,), {"uploads": uploads})
    swap: dict[type[Step], type[Step]] = {
        EnsureDisk: disk,
        Upload: upload,
        Cleanup: DeferredCleanup,
    }
    return tuple(swap.get(step, step) for step in steps)


def finish_cleanups(contexts: list[Context], uploads: SharedUploads, *, jobs: int = 4) -> None:
    """Run the deferred cleanups, *jobs* at a time (each touches only its own target's
    resources): a disk goes once every target that used it is replicated."""
    by_name = {ctx.target.name: ctx for ctx in contexts}
    due: list[tuple[Context, StepRecord]] = []
    for ctx in contexts:
        record = next(
            (s for s in ctx.report.steps if s.name == Cleanup.name and s.detail == DEFERRED), None
        )
        if record is None:
            continue
        waiting = sorted(
            name for name in uploads.users_of(ctx.target.name) if not _replicated(by_name.get(name))
        )
        if waiting:
            detail = f"keeping the upload disk: target {', '.join(waiting)} still needs it"
            if ctx.disk is not None:
                ctx.report.resource("disk", ctx.disk_name, "kept", id=ctx.disk.id, detail=detail)
            _finish(record, done(detail))
            continue
        if uploads.owner_of(ctx.target.name) is not None:
            # The disk is another target's: its own cleanup decides; this one's cleanup
            # sees only what is its own (a disk of its own name, a throwaway image).
            ctx.disk = None
        due.append((ctx, record))
    with ThreadPoolExecutor(max(1, jobs), thread_name_prefix="cleanup") as pool:
        list(pool.map(lambda item: _cleanup(*item), due))


def _cleanup(ctx: Context, record: StepRecord) -> None:
    try:
        _finish(record, Cleanup().run(ctx))
        _restate(ctx)
    except Exception as error:  # noqa: BLE001 - one target's cleanup must not stop the rest
        log.warning("cleanup of target %s: %s", ctx.target.name, error)
        record.status, record.detail = "failed", str(error)


def _restate(ctx: Context) -> None:
    """A run that deleted something did change Azure, as a publish alone would report."""
    if ctx.report.status == "already-published" and any(
        r.action == "deleted" for r in ctx.report.resources
    ):
        ctx.report.status = "published"


def _replicated(ctx: Context | None) -> bool:
    return ctx is not None and ctx.published is not None and ctx.published.replicated


def _finish(record: StepRecord, result: StepResult) -> None:
    record.status = "skipped" if result.skipped else "done"
    record.detail = result.detail

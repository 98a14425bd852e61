"""The publish as a list of steps: planned (a dry run) or run, each recorded in the report."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Final

from nixos_azure_publish import state
from nixos_azure_publish.azure import names
from nixos_azure_publish.errors import (
    Interrupted,
    PublishError,
)
from nixos_azure_publish.pipeline.after import Cleanup, Retention, SmokeTest
from nixos_azure_publish.pipeline.checks import CheckImage, Discover
from nixos_azure_publish.pipeline.context import Context, PublishInput, PublishOptions, Step
from nixos_azure_publish.pipeline.gallery import (
    CreateVersion,
    EnsureDefinition,
    EnsureGallery,
    ManagedImage,
    WaitReplication,
)
from nixos_azure_publish.pipeline.upload import EnsureDisk, EnsureGroup, Upload
from nixos_azure_publish.report import (
    PublishReport,
    StepRecord,
    UploadStats,
)

if TYPE_CHECKING:
    from nixos_azure_publish.azure.clients import AzureClients

# The step lines ("<step>: starting", "<step>: <detail> (<seconds>s)") are the publish's own
# log: they keep the package's logger name, which scripts and tests watch for.
log = logging.getLogger("nixos_azure_publish.pipeline")

# From an upload disk holding the image to a replicated, tested version: the same for a
# publish and for an import from a URL, which differ only in how the disk is filled.
FROM_DISK: Final[tuple[type[Step], ...]] = (
    EnsureGallery,
    EnsureDefinition,
    ManagedImage,
    CreateVersion,
    WaitReplication,
    # The upload disk goes as soon as the replicated version holds the image: whatever
    # the smoke test then does, nothing is left to pay for until the next run.
    Cleanup,
    SmokeTest,
    Retention,
)

STEPS: Final[tuple[type[Step], ...]] = (
    CheckImage,
    Discover,
    EnsureGroup,
    EnsureDisk,
    Upload,
    *FROM_DISK,
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
            result = step.plan(self.ctx)
            self.report.steps.append(
                StepRecord(step.name, "planned", time.monotonic() - t0, result.detail)
            )
        self.report.status = "planned"
        self._server_side_upload()
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
        self._server_side_upload()
        report.version = self.ctx.version_name
        report.seconds = time.monotonic() - began
        with contextlib.suppress(OSError):
            state.remove(self.ctx.journal_path)
        return report

    def _server_side_upload(self) -> None:
        """An import from a gallery version copies server-side: no byte went through us."""
        if self.ctx.resolved is not None and self.report.upload is None:
            self.report.upload = UploadStats(file_size=0, data_bytes=0, bytes_sent=0)

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
            result = step.run(self.ctx)
        finally:
            record.seconds = time.monotonic() - t0
        record.status = "skipped" if result.skipped else "done"
        record.detail = result.detail
        if self.ctx.content is not None and step.name not in {CheckImage.name, Discover.name}:
            done = dict(self.ctx.journal.get("steps") or {})
            done[step.name] = self.ctx.options.now().isoformat()
            self.ctx.save_journal(steps=done)
        log.info("%s: %s (%.1fs)", step.name, result.detail, record.seconds)

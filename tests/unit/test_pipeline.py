"""The pipeline's order and its pure decisions."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

import pytest

from nixos_azure_publish import pipeline
from nixos_azure_publish.azure import names
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.azure.disk import DiskState
from nixos_azure_publish.pipeline import checks
from nixos_azure_publish.pipeline.context import skipped
from nixos_azure_publish.report import PublishReport
from tests.helpers.targets import minimal_target

HASH = "0123456789abcdfghijklmnpqrsvwxyz"


def test_every_check_that_needs_no_upload_runs_before_the_upload():
    order = [step.name for step in pipeline.STEPS]
    assert order == [
        "check image",
        "discover",
        "ensure group",
        "ensure upload disk",
        "upload",
        "ensure gallery",
        "ensure definition",
        "managed image",
        "create version",
        "replicate",
        "cleanup",
        "smoke test",
        "retention",
    ]


def test_arm_timestamps_with_seven_fraction_digits_parse():
    parsed = azversion.parse_time("2026-01-02T03:04:05.1234567+00:00")
    assert parsed == dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert azversion.parse_time("2026-01-02T03:04:05Z") == dt.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
    assert azversion.parse_time("yesterday") is None
    assert azversion.parse_time(None) is None


def context(tmp_path, *, disk_time: str | None, journal: dict[str, Any] | None = None):
    target = minimal_target()
    ctx = pipeline.Context(
        input=pipeline.PublishInput(target=target, image_path=tmp_path / "x.vhd"),
        clients=cast("Any", None),  # choosing a name needs no Azure
        options=pipeline.PublishOptions(
            now=lambda: dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
        ),
        report=PublishReport(target="t"),
        journal_path=tmp_path / "journal.json",
        journal=journal or {},
    )
    ctx.content = names.ContentId(hash=HASH, store_path=None)
    if disk_time is not None:
        ctx.disk = DiskState(
            id="/d", name="t-x", state="ReadyToUpload", size=1, tags={}, time_created=disk_time
        )
    return ctx


def test_version_name_comes_from_the_shared_disk_so_publishers_agree(tmp_path):
    # The default template is date based: the disk's creation time is what two
    # publishers of one image (and every rerun) have in common.
    assert checks.version_name(context(tmp_path, disk_time="2026-11-25T21:40:05.1234567Z")) == (
        "2026.1125.214005"
    )
    assert checks.version_name(context(tmp_path, disk_time=None)) == "2030.506.70809"
    resumed = context(tmp_path, disk_time=None, journal={"startedAt": "2027-01-01T00:00:01+00:00"})
    assert checks.version_name(resumed) == "2027.101.1"


@pytest.mark.parametrize("detail", ["not needed: already published", "no gallery configured"])
def test_steps_that_had_nothing_to_do_are_reported_as_skipped(tmp_path, detail):
    class Idle(pipeline.Step):
        name = "idle"

        def run(self, ctx):
            ctx.content = names.ContentId(hash=HASH, store_path=None)
            return skipped(detail)

    given = context(tmp_path, disk_time=None)
    settings = SimpleNamespace(subscription_id="00000000-0000-0000-0000-000000000000")
    runner = pipeline.Pipeline(
        given.input,
        clients=cast("Any", SimpleNamespace(settings=settings)),  # an idle step needs no Azure
        options=pipeline.PublishOptions(state_dir=tmp_path, now=given.options.now),
        steps=(Idle,),
    )
    runner.run()
    (record,) = runner.report.steps
    assert (record.name, record.status, record.detail) == ("idle", "skipped", detail)
    assert runner.ctx.journal["steps"].keys() == {"idle"}

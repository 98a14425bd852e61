"""Which targets a command works on, and the report of several targets in one run."""

from __future__ import annotations

from pathlib import Path

import pytest

from nixos_azure_publish.errors import UsageError
from nixos_azure_publish.report import PublishReport, RunReport, UploadStats
from nixos_azure_publish.selection import TargetSelection, TargetSource


def test_one_target_is_not_several():
    assert not TargetSelection(flake=".").several
    assert not TargetSelection(flake=".", targets=("a",)).several
    assert not TargetSelection(flake=".", targets=("a", "a")).several
    assert not TargetSelection(configs=(Path("a.json"),)).several
    assert TargetSelection(flake=".", targets=("a", "b")).several
    assert TargetSelection(flake=".", all_targets=True).several
    assert TargetSelection(configs=(Path("a.json"), Path("b.json"))).several


def test_sources_keep_the_order_given_and_name_each_target_once():
    flake = TargetSelection(flake=".", targets=("b", "a", "b"))
    assert flake.sources() == [TargetSource(flake=".", name="b"), TargetSource(flake=".", name="a")]
    assert TargetSelection(flake=".").sources() == [TargetSource(flake=".", name="default")]
    files = TargetSelection(configs=(Path("x.json"), Path("y.toml"))).sources()
    assert [s.label for s in files] == ["x.json", "y.toml"]


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        (TargetSelection(), "give exactly one of --config FILE and --flake REF"),
        (TargetSelection(configs=(Path("a"),), targets=("x",)), "--target needs --flake"),
        (TargetSelection(configs=(Path("a"),), all_targets=True), "--all-targets needs --flake"),
        (TargetSelection(flake=".", jobs=0), "--jobs must be at least 1, not 0"),
    ],
)
def test_a_selection_that_names_no_target_clearly_is_refused(selection, message):
    with pytest.raises(UsageError) as info:
        selection.sources()
    assert info.value.message == message


def report(target: str, status: str, *, uploaded: bool = False) -> PublishReport:
    out = PublishReport(target=target, status=status)  # type: ignore[arg-type]
    if uploaded:
        out.upload = UploadStats(file_size=1024, data_bytes=512, bytes_sent=512)
    return out


@pytest.mark.parametrize(
    ("statuses", "codes", "dry_run", "expected"),
    [
        (["published", "already-published"], [0, 0], False, "published"),
        (["already-published", "already-published"], [0, 0], False, "already-published"),
        (["planned", "planned"], [0, 0], True, "planned"),
        (["published", "failed"], [0, 4], False, "failed"),
        (["interrupted", "failed"], [130, 4], False, "interrupted"),
    ],
)
def test_the_run_status_follows_its_targets(statuses, codes, dry_run, expected):
    run = RunReport(
        targets=[report(str(i), s) for i, s in enumerate(statuses)], codes=codes, dry_run=dry_run
    )
    assert run.status == expected


def test_the_run_report_lists_every_target_in_json_markdown_and_console():
    run = RunReport(
        targets=[report("a", "published", uploaded=True), report("b", "failed")],
        codes=[0, 6],
        seconds=3.0,
    )
    data = run.to_json()
    assert [t["target"] for t in data["targets"]] == ["a", "b"]
    assert [t["exitCode"] for t in data["targets"]] == [0, 6]
    assert (data["status"], data["exitCode"], data["uploads"]) == ("failed", 6, 1)
    assert data["headline"] == "2 targets: 1 published, 1 failed"
    markdown = run.to_markdown()
    assert markdown.startswith("## NixOS images: 2 targets: 1 published, 1 failed\n")
    assert "| a | **published** |" in markdown
    assert "| b | **failed** |" in markdown
    assert "## NixOS image a: " in markdown
    assert "## NixOS image b: " in markdown
    console = run.to_console().splitlines()
    assert console[0] == "2 targets: 1 published, 1 failed (1 upload, 3.0 s)"
    assert console[1].split()[:2] == ["a", "published"]
    assert console[2].split()[:2] == ["b", "failed"]

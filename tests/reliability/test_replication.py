"""Replication failing in one region: reported per region, exit 4, a rerun repairs it.

The emulator fails the replication of new versions in one region as Azure
does (``regionalReplicationState`` Failed with its details, ``aggregatedState``
Failed). The publish must end with exit 4 and an error that names the region
and its details and says that a rerun helps; each region's state is reported
(the Markdown summary CI shows has a row per region); the upload disk is kept
with its write access revoked (the rerun uploads nothing), and the failed
version is the only one. The rerun, once the region is healthy, replaces the
failed version: one version, replicated to every region, nothing orphaned (no
upload disk, no managed image the target does not keep, no second version).
The fast variant fails the second of two regions; the campaign fails each
region of three in turn, the source region included, with and without a
managed image in between.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.errors import ExitCode
from tests.helpers.images import make_image
from tests.helpers.publishing import assert_converged, compute, disks, publish, versions
from tests.helpers.targets import write_target
from tests.reliability import figures

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

DETAILS = "Replication failed: the storage is unavailable."
THREE = ["westeurope", {"name": "northeurope", "replicas": 2}, "eastus"]


def region_names(regions: list[Any]) -> list[str]:
    return [r if isinstance(r, str) else r["name"] for r in regions]


def fail_then_repair(  # noqa: PLR0917 - the scenario's knobs
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    region: str,
    regions: list[Any],
    *,
    seed: int,
    managed: bool = False,
) -> dict[str, Any]:
    """Publish with replication failing in *region*, then rerun once it is healthy."""
    emulator.settings.replication_seconds = 0.2
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    image = make_image(tmp_path / "img", seed=seed)
    target = write_target(
        tmp_path, image, version={"targetRegions": regions}, managedImage={"enable": managed}
    )
    emulator.faults.fail_replication[region] = DETAILS
    summary = tmp_path / "summary.md"  # what CI shows: a row per region
    code, failed = publish(emulator, monkeypatch, capsys, "--config", str(target), summary=summary)
    assert code == ExitCode.AZURE, failed
    error = failed["error"]
    assert f"failed to replicate to 1 of {len(regions)} regions" in error["message"], error
    assert f"{region}: {DETAILS}" in error["message"], error
    assert error["rerunHelps"] is True, error
    assert error["hint"].startswith("Run again"), error
    table = summary.read_text()
    for name in region_names(regions):
        # The failure is reported as soon as Azure says so: others may be replicating still.
        states = ["Failed"] if name == region else ["Completed", "Replicating"]
        assert any(f"| {name} | {state} |" in table for state in states), table
    client = compute(emulator)
    (broken,) = versions(client)
    (disk,) = disks(client)  # kept: the rerun needs no upload
    assert disk.as_dict()["properties"]["diskState"] == "Unattached"  # write access revoked

    emulator.faults.reset()
    code, report = publish(emulator, monkeypatch, capsys, "--config", str(target))
    assert code == 0, report
    assert report["upload"] is None  # nothing uploaded again
    assert [r["state"] for r in report["regions"]] == ["Completed"] * len(regions)
    # One version, replicated; no upload disk; a managed image only when the target keeps one.
    assert_converged(emulator, report, kept_images=int(managed))
    replaced = report["version"] != broken.name or any(
        r["kind"] == "image version" and r["action"] == "created" for r in report["resources"]
    )
    assert replaced, report["resources"]
    return {"failed": failed, "report": report}


def test_a_region_that_fails_to_replicate_is_reported_and_a_rerun_repairs_it(
    emulator, tmp_path, monkeypatch, capsys
):
    fail_then_repair(
        emulator, tmp_path, monkeypatch, capsys, "northeurope",
        ["westeurope", {"name": "northeurope", "replicas": 2}], seed=140,
    )  # fmt: skip
    figures.record(
        "replication failure in one region",
        method="fast: northeurope of 2 regions",
        runs=1,
        failures=0,
        repaired=1,
    )


@pytest.mark.campaign
@pytest.mark.parametrize("managed", [False, True], ids=["from the disk", "via a managed image"])
@pytest.mark.parametrize("region", region_names(THREE))
def test_campaign_each_region_fails_in_turn(  # noqa: PLR0917 - fixtures and parameters
    emulator, tmp_path, monkeypatch, capsys, region, managed
):
    seed = 150 + region_names(THREE).index(region) * 2 + managed
    fail_then_repair(
        emulator, tmp_path, monkeypatch, capsys, region, THREE, seed=seed, managed=managed
    )
    figures.record(
        "replication failure in one region",
        method=f"campaign: {region} of 3 regions{', managed image' if managed else ''}",
        runs=1,
        failures=0,
        repaired=1,
    )

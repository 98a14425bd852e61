"""The crash matrix: SIGKILL at every pipeline step, inside the upload and inside an import.

A publisher (or importer) runs as its own process and is killed with SIGKILL
(no cleanup runs, as after a power cut or the OOM killer). Inside the upload
the kill is placed exactly: a fault proxy lets N page writes through and then
holds every request, so the process dies with N pages acknowledged and others
in flight. The rerun, with the same state directory, must complete: one
version, no orphaned disk, replication complete. After a kill mid-upload it
must send about what was missing, not the whole image again: the ratio of
bytes re-sent to bytes missing is reported (1.0 is ideal; pieces in flight at
the kill are sent again, so it is a little above; so is what was acknowledged
within the journal's write interval before the kill, which the campaign waits
out).

Inside an import the same proxy freezes the copy: a blob URL is copied
server-side (Put Page From URL, N ranges acknowledged), an https URL is
streamed through this machine (N page writes acknowledged). The rerun must
complete with one version and a disk byte-identical to the source. The copy
resumes from what the disk holds (ranges copied again / ranges missing is
reported); the stream reads its URL once, front to back, and so starts over
(bytes sent again / bytes missing is reported).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.upload.journal import JOURNAL_INTERVAL
from tests.helpers.crash import frozen_after, kill_when_held, run_importer
from tests.helpers.images import make_image
from tests.helpers.importing import MINE, MY_DEFINITION, MY_GALLERY, https_file, my_target
from tests.helpers.publishing import (
    STEPS,
    assert_converged,
    compute,
    kill_at_step,
    rerun_to_completion,
    run_publisher,
)
from tests.helpers.sources import disk_digest, file_digest, source_disk
from tests.helpers.targets import write_target
from tests.reliability import figures

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

MIB = 1024 * 1024
CAMPAIGN = pytest.mark.campaign


def variant(request: pytest.FixtureRequest, what: str) -> str:
    """``fast: WHAT`` or ``campaign: WHAT``, as the test was selected."""
    return f"{'campaign' if request.node.get_closest_marker('campaign') else 'fast'}: {what}"


def kill_inside_upload(
    emulator: Emulator, tmp_path: Path, pages: int, seed: int, *, settle: bool = True
) -> dict[str, Any]:
    """Kill after *pages* acknowledged page writes; the rerun's bytes against what was missing."""
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=seed, size_mib=64, data_mib=40)
    target = write_target(tmp_path, image, upload={"concurrency": 2})
    state = tmp_path / "state"
    with frozen_after(emulator, pages) as (proxy, env):
        # The journal is written every JOURNAL_INTERVAL: what was acknowledged in the last
        # interval before a kill is sent again by design. Let it be written once more.
        kill_when_held(
            proxy, run_publisher(emulator, target, state, env=env),
            settle=JOURNAL_INTERVAL * 1.5 if settle else 0.0,
        )  # fmt: skip
        acknowledged = proxy.stats.page_bytes
    report = rerun_to_completion(emulator, target, state)
    assert_converged(emulator, report)
    data = report["upload"]["dataBytes"]
    missing = data - acknowledged
    resent = report["upload"]["bytesSent"]
    return {"data_bytes": data, "missing": missing, "resent": resent, "ratio": resent / missing}


@pytest.mark.parametrize(
    "pages", [2, 6, *(pytest.param(n, marks=CAMPAIGN) for n in (1, 3, 5, 8, 10))]
)
def test_killed_inside_the_upload_resends_about_what_was_missing(
    emulator, tmp_path, pages, request
):
    result = kill_inside_upload(emulator, tmp_path, pages, seed=30 + pages)
    figures.record(
        "crash: SIGKILL inside the upload",
        method=variant(request, f"kill after {pages} page writes"),
        runs=1,
        failures=0,
        resent_ratio_max=round(result["ratio"], 3),
        detail=[result],
    )
    # Pieces in flight at the kill are sent again (at most concurrency x 4 MiB).
    assert result["missing"] <= result["resent"] <= result["missing"] + 2 * 4 * MIB, result
    assert result["resent"] < result["data_bytes"], result  # not the whole image again


@CAMPAIGN
@pytest.mark.parametrize("step", STEPS)
def test_campaign_killed_at_each_step(emulator, tmp_path, step):
    kill_at_step(emulator, tmp_path, step, seed=40 + STEPS.index(step))
    figures.record(f"crash: SIGKILL at step '{step}'", method="campaign", runs=1, failures=0)


@CAMPAIGN
@pytest.mark.parametrize("pages", [2, 5, 9])
def test_campaign_killed_inside_the_upload_at_once(emulator, tmp_path, pages):
    """Killed the moment the upload freezes: the last journal interval is sent again."""
    result = kill_inside_upload(emulator, tmp_path, pages, seed=80 + pages, settle=False)
    figures.record(
        "crash: SIGKILL inside the upload, within the journal interval",
        method=f"campaign: kill at once after {pages} page writes",
        runs=1,
        failures=0,
        resent_ratio_max=round(result["ratio"], 3),
        detail=[result],
    )
    assert result["missing"] <= result["resent"] <= result["data_bytes"], result


def assert_imported(emulator: Emulator, report: dict[str, Any], image: Path) -> None:
    """One version, replicated; one upload disk, access revoked, holding the source's bytes."""
    client = compute(emulator)
    (version,) = client.gallery_image_versions.list_by_gallery_image(
        MINE, MY_GALLERY, MY_DEFINITION
    )
    assert version.name == report["version"]
    state = client.gallery_image_versions.get(
        MINE, MY_GALLERY, MY_DEFINITION, report["version"], expand="ReplicationStatus"
    )
    assert state.replication_status.aggregated_state == "Completed"
    (disk,) = client.disks.list_by_resource_group(MINE)
    assert disk.as_dict()["properties"]["diskState"] == "Unattached"  # write access revoked
    assert disk_digest(emulator, MINE, str(disk.name)) == file_digest(image)


def kill_inside_import(
    emulator: Emulator, tmp_path: Path, *, kind: str, pages: int, seed: int
) -> dict[str, Any]:
    """Import a blob URL (``copy``) or an https URL (``stream``), killed after *pages*
    acknowledged writes, then rerun; what the rerun sent again against what was missing."""
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=seed, size_mib=48, data_mib=24)
    target = my_target(tmp_path, upload={"concurrency": 2}, cleanup={"deleteUploadDisk": False})
    state = tmp_path / "state"
    with contextlib.ExitStack() as stack:
        if kind == "copy":
            url = source_disk(emulator, image)
        else:
            url, _ = stack.enter_context(https_file(emulator, image))
        with frozen_after(emulator, pages) as (proxy, env):
            kill_when_held(proxy, run_importer(emulator, url, target, state, env))
            acknowledged = proxy.stats.page_writes, proxy.stats.page_bytes
        rerun = run_importer(emulator, url, target, state)
        out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["status"] == "published", report
    assert_imported(emulator, report, image)
    upload = report["upload"]
    if kind == "copy":  # server-side: ranges of at most 4 MiB, none through this machine
        total = upload["rangesSent"] + upload["rangesSkipped"]
        missing, resent = total - acknowledged[0], upload["rangesSent"]
        assert upload["bytesSent"] == 0
    else:
        missing, resent = upload["dataBytes"] - acknowledged[1], upload["bytesSent"]
    return {"missing": missing, "resent": resent, "ratio": resent / missing, "upload": upload}


IMPORT_KILLS = [
    ("copy", 3),
    ("stream", 2),
    *(pytest.param(k, n, marks=CAMPAIGN) for k in ("copy", "stream") for n in (1, 4, 7)),
]


@pytest.mark.parametrize(("kind", "pages"), IMPORT_KILLS)
def test_killed_inside_an_import_then_the_rerun_completes(emulator, tmp_path, kind, pages, request):
    result = kill_inside_import(emulator, tmp_path, kind=kind, pages=pages, seed=120 + pages)
    copy = kind == "copy"
    figures.record(
        f"crash: SIGKILL inside an import ({'Put Page From URL' if copy else 'https stream'})",
        method=variant(request, f"kill after {pages} {'ranges copied' if copy else 'page writes'}"),
        runs=1,
        failures=0,
        **{"recopied_ratio_max" if copy else "restream_ratio_max": round(result["ratio"], 3)},
        detail=[result],
    )
    if copy:  # resumed: exactly the ranges the disk lacked (those held at the kill never landed)
        assert result["resent"] == result["missing"], result
    else:  # streamed again from the start, once
        assert result["missing"] <= result["resent"] <= result["upload"]["dataBytes"], result

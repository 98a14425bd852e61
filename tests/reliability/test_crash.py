"""The crash matrix: SIGKILL at every pipeline step and inside the upload; the rerun completes.

A publisher runs as its own process and is killed with SIGKILL (no cleanup
runs, as after a power cut or the OOM killer). Inside the upload the kill is
placed exactly: a fault proxy lets N page writes through and then holds every
request, so the process dies with N pages acknowledged and others in flight.
The rerun, with the same state directory, must complete: one version, no
orphaned disk, replication complete. After a kill mid-upload it must send
about what was missing, not the whole image again: the ratio of bytes re-sent
to bytes missing is reported (1.0 is ideal; pieces in flight at the kill are
sent again, so it is a little above; so is what was acknowledged within the
journal's write interval before the kill, which the campaign waits out).
"""

from __future__ import annotations

import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.upload.journal import JOURNAL_INTERVAL
from tests.helpers.images import make_image
from tests.helpers.publishing import (
    STEPS,
    assert_converged,
    env_for,
    kill_at_step,
    rerun_to_completion,
    run_publisher,
)
from tests.helpers.targets import write_target
from tests.integration.faultproxy import Faults, run_fault_proxy
from tests.reliability import figures

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

MIB = 1024 * 1024


def kill_inside_upload(
    emulator: Emulator, tmp_path: Path, pages: int, seed: int, *, settle: bool = True
) -> dict[str, Any]:
    """Kill after *pages* acknowledged page writes; the rerun's bytes against what was missing."""
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=seed, size_mib=64, data_mib=40)
    target = write_target(tmp_path, image, upload={"concurrency": 2})
    state = tmp_path / "state"
    azurite = emulator.app.blobs.azurite
    env = env_for(emulator)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(name, None)
    with run_fault_proxy(azurite.host, azurite.port, Faults(hold_after=pages)) as proxy:
        env["HTTP_PROXY"] = env["http_proxy"] = f"http://127.0.0.1:{proxy.port}"
        proc = run_publisher(emulator, target, state, env=env)
        deadline = time.monotonic() + 120
        while proxy.stats.held == 0 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        assert proxy.stats.held > 0, "the upload never reached the kill point"
        # The journal is written every JOURNAL_INTERVAL: what was acknowledged in the last
        # interval before a kill is sent again by design. Let it be written once more.
        if settle:
            time.sleep(JOURNAL_INTERVAL * 1.5)
        acknowledged = proxy.stats.page_bytes
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=10)
    report = rerun_to_completion(emulator, target, state)
    assert_converged(emulator, report)
    data = report["upload"]["dataBytes"]
    missing = data - acknowledged
    resent = report["upload"]["bytesSent"]
    return {"data_bytes": data, "missing": missing, "resent": resent, "ratio": resent / missing}


@pytest.mark.parametrize("pages", [2, 6])
def test_killed_inside_the_upload_resends_about_what_was_missing(emulator, tmp_path, pages):
    result = kill_inside_upload(emulator, tmp_path, pages, seed=30 + pages)
    figures.record(
        "crash: SIGKILL inside the upload",
        method=f"fast: kill after {pages} page writes",
        runs=1,
        failures=0,
        resent_ratio_max=round(result["ratio"], 3),
        detail=[result],
    )
    # Pieces in flight at the kill are sent again (at most concurrency x 4 MiB).
    assert result["missing"] <= result["resent"] <= result["missing"] + 2 * 4 * MIB, result
    assert result["resent"] < result["data_bytes"], result  # not the whole image again


@pytest.mark.campaign
@pytest.mark.parametrize("step", STEPS)
def test_campaign_killed_at_each_step(emulator, tmp_path, step):
    kill_at_step(emulator, tmp_path, step, seed=40 + STEPS.index(step))
    figures.record(f"crash: SIGKILL at step '{step}'", method="campaign", runs=1, failures=0)


@pytest.mark.campaign
@pytest.mark.parametrize("pages", [1, 3, 5, 8, 10])
def test_campaign_killed_inside_the_upload(emulator, tmp_path, pages):
    result = kill_inside_upload(emulator, tmp_path, pages, seed=60 + pages)
    figures.record(
        "crash: SIGKILL inside the upload",
        method=f"campaign: kill after {pages} page writes",
        runs=1,
        failures=0,
        resent_ratio_max=round(result["ratio"], 3),
        detail=[result],
    )
    assert result["missing"] <= result["resent"] <= result["missing"] + 2 * 4 * MIB, result


@pytest.mark.campaign
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


# TODO(issue 18): SIGKILL at several points inside an `import` (its copy of the source
# into the disk), and the rerun completing, once the `import` command exists.

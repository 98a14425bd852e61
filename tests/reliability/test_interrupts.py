"""Interrupts: SIGINT and SIGTERM during each long step of a publish.

The long steps are the upload, the replication wait and the smoke test. Each
signal must end the publish with exit 130 and an ``interrupted`` error, with
write access to the upload disk revoked and the smoke test's VM, NIC, VNet and
OS disk deleted, and the rerun (same state directory) must complete with one
version and nothing left behind. The fast variant covers the replication wait
with SIGINT and the smoke test with SIGTERM (the upload is covered by
tests/integration/test_publish.py); the campaign runs every pair.
"""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.errors import ExitCode
from tests.helpers.images import make_image
from tests.helpers.publishing import (
    assert_converged,
    compute,
    disks,
    run_publisher,
    wait_for_line,
    wait_for_pages,
)
from tests.helpers.smoke import BROKEN_LOG, NOTHING, smoke_target, throwaways
from tests.helpers.targets import write_target
from tests.reliability import figures

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

MIB = 1024 * 1024
STEPS = ("upload", "replicate", "smoke test")


def interrupt(emulator: Emulator, tmp_path: Path, step: str, how: signal.Signals) -> dict[str, Any]:
    seed = 90 + STEPS.index(step) * 3 + int(how)
    emulator.settings.replication_seconds = 0.2
    if step == "upload":
        image = make_image(tmp_path / "img", seed=seed, size_mib=96, data_mib=64)
        target = write_target(tmp_path, image, upload={"concurrency": 1})
    elif step == "replicate":
        image = make_image(tmp_path / "img", seed=seed)
        target = write_target(tmp_path, image)
        emulator.settings.replication_seconds = 3.0  # still replicating when the signal comes
    else:
        image = make_image(tmp_path / "img", seed=seed)
        target = smoke_target(tmp_path, image)
        emulator.settings.serial_log = BROKEN_LOG  # never matches: the test keeps waiting
    state = tmp_path / "state"
    proc = run_publisher(emulator, target, state)
    wait_for_line(proc, f"nixos_azure_publish.pipeline: {step}: starting", timeout=120)
    if step == "upload":
        wait_for_pages(emulator, 4 * MIB)
    elif step == "smoke test":
        deadline = time.monotonic() + 90
        while not throwaways(emulator)["vm"] and time.monotonic() < deadline:
            time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(how)
    out, err = proc.communicate(timeout=90)
    assert proc.returncode == ExitCode.INTERRUPTED, err[-3000:]
    error = json.loads(out)["error"]
    assert error["kind"] == "interrupted"
    assert f"interrupted during step '{step}'" in error["message"]
    assert error["rerunHelps"] is True
    states = {d.as_dict()["properties"]["diskState"] for d in disks(compute(emulator))}
    assert "ActiveUpload" not in states  # write access revoked
    assert throwaways(emulator) == NOTHING  # the smoke test's resources are gone

    emulator.settings.replication_seconds = 0.2
    emulator.settings.serial_log = "nixos login: "
    rerun = run_publisher(emulator, target, state)
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    report: dict[str, Any] = json.loads(out)
    assert report["status"] in {"published", "already-published"}
    assert throwaways(emulator) == NOTHING
    if step != "smoke test":
        assert_converged(emulator, report)
    return report


@pytest.mark.parametrize(
    ("step", "how"), [("replicate", signal.SIGINT), ("smoke test", signal.SIGTERM)]
)
def test_interrupted_during_a_long_step_cleans_up_and_the_rerun_completes(
    emulator, tmp_path, step, how
):
    interrupt(emulator, tmp_path, step, how)
    figures.record(f"interrupt: {how.name} during '{step}'", method="fast", runs=1, failures=0)


@pytest.mark.campaign
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("step", STEPS)
def test_campaign_interrupted_during_each_long_step(emulator, tmp_path, step, how):
    interrupt(emulator, tmp_path, step, how)
    figures.record(f"interrupt: {how.name} during '{step}'", method="campaign", runs=1, failures=0)

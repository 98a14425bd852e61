"""The smoke test against the emulator: a throwaway VM boots the new version.

The emulator serves VMs, NICs, VNets and managed boot diagnostics (the serial
log is a blob in Azurite, scripted through ``emulator.settings.serial_log``);
the publish drives them through the real SDK clients. Every test checks that
the VM, its OS disk, NIC and VNet are gone afterwards.
"""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.azure import vm as azvm
from nixos_azure_publish.azure.clients import AzureSettings, make_clients
from nixos_azure_publish.config import load_target_file
from nixos_azure_publish.errors import ExitCode, SmokeTestError
from nixos_azure_publish.pipeline import Pipeline, PublishInput, PublishOptions
from tests.helpers.images import make_image
from tests.helpers.publishing import (
    compute,
    disks,
    run_publisher,
    versions,
    writes,
)
from tests.helpers.smoke import BROKEN_LOG, NOTHING, smoke_target, throwaways
from tests.helpers.targets import DEFINITION, GALLERY, GROUP, write_target

pytestmark = pytest.mark.usefixtures("state_home")

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator


def version_json(emulator: Emulator) -> dict[str, Any]:
    client = compute(emulator)
    (only,) = versions(client)
    got = client.gallery_image_versions.get(GROUP, GALLERY, DEFINITION, only.name)
    return dict(got.as_dict())


def test_smoke_test_passes_promotes_and_deletes_its_vm(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=31)
    target = smoke_target(tmp_path, image)
    state = str(tmp_path / "state")
    code, report = cli.publish("--config", str(target), "--state-dir", state)
    assert code == 0, report
    assert report["status"] == "published"
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["smoke test"]["status"] == "done"
    assert steps["smoke test"]["detail"].endswith("promoted to latest")
    version = version_json(fast)
    assert version["tags"][azvm.TAG_SMOKE_TEST] == "passed"
    # Created excluded from latest while the test was pending, then promoted.
    assert version["properties"]["publishingProfile"]["excludeFromLatest"] is False
    puts = [r for r in fast.requests if r.method == "PUT" and "/versions/" in r.path]
    assert len(puts) == 1
    assert throwaways(fast) == NOTHING
    paths = [r.path for r in fast.requests]
    assert any("/retrieveBootDiagnosticsData" in p for p in paths), paths
    # The default Gen2 definition is TrustedLaunchSupported: the VM is a Trusted Launch VM
    # with Secure Boot off (NixOS's loader is unsigned), as Azure accepts and boots it.
    assert fast.app.traffic is not None
    (vm_put,) = [
        e["liveRequest"]
        for e in fast.app.traffic.exchanges
        if e["liveRequest"]["method"] == "PUT" and "/virtualMachines/" in e["liveRequest"]["url"]
    ]
    assert vm_put["body"]["properties"]["securityProfile"] == {
        "securityType": "TrustedLaunch",
        "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
    }
    # A rerun does not test a passed version again, and writes nothing.
    again = cli.publish_again("--config", str(target), "--state-dir", state)
    assert {s["name"]: s for s in again["steps"]}["smoke test"]["detail"].startswith("not needed: ")


def _pipeline(emulator: Emulator, target_file: Path, image: Path, tmp_path: Path) -> Pipeline:
    target = load_target_file(target_file, environ=emulator.environ)
    settings = AzureSettings.from_environ(subscription_id=None, environ=emulator.environ)
    # smokeTest.timeoutSeconds is at least 60; the option shortens the wait for this test.
    options = PublishOptions(state_dir=tmp_path / "state", smoke_timeout=1.0, smoke_interval=0.1)
    return Pipeline(
        PublishInput(target=target, image_path=image),
        clients=make_clients(settings),
        options=options,
    )


def test_a_serial_log_without_the_expected_text_fails_and_keeps_the_version_out_of_latest(
    fast, tmp_path
):
    fast.settings.serial_log = BROKEN_LOG
    image = make_image(tmp_path / "img", seed=32)
    target = smoke_target(tmp_path, image)
    pipeline = _pipeline(fast, target, image, tmp_path)
    with pytest.raises(SmokeTestError) as caught:
        pipeline.run()
    error = caught.value
    assert error.exit_code == ExitCode.SMOKE_TEST
    assert int(error.exit_code) == 7  # the documented exit code
    assert "Kernel panic" in (error.details or "")
    assert "stays excluded from latest" in error.message
    version = version_json(fast)
    assert version["properties"]["publishingProfile"]["excludeFromLatest"] is True
    assert azvm.TAG_SMOKE_TEST not in version["tags"]
    assert throwaways(fast) == NOTHING
    # The version holds the image: its upload disk is not left behind by the failure.
    assert [d.name for d in disks(compute(fast))] == []
    report = pipeline.report
    assert report.status == "failed"
    kept = [r for r in report.resources if r.kind == "image version" and r.action == "kept"]
    assert kept
    assert "excluded from latest" in kept[0].detail
    # The Markdown summary and the console summary say so too.
    assert "smoke test failed; excluded from latest" in report.to_markdown()
    assert "smoke test failed; excluded from latest" in report.to_console()
    # The rerun tests the same version again (it has not passed), this time with success.
    fast.settings.serial_log = "<<< Welcome to NixOS >>>\nnixos login: "
    again = _pipeline(fast, target, image, tmp_path).run()
    assert again.status == "published"
    assert version_json(fast)["properties"]["publishingProfile"]["excludeFromLatest"] is False
    assert throwaways(fast) == NOTHING


def test_a_users_exclude_from_latest_is_kept_after_a_passed_test(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=33)
    target = write_target(
        tmp_path,
        image,
        version={"targetRegions": ["westeurope"], "excludeFromLatest": True},
        smokeTest={"enable": True, "timeoutSeconds": 60},
    )
    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    version = version_json(fast)
    assert version["tags"][azvm.TAG_SMOKE_TEST] == "passed"
    assert version["properties"]["publishingProfile"]["excludeFromLatest"] is True


def test_a_smoke_location_outside_the_target_regions_fails_before_any_write(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=34)
    target = smoke_target(tmp_path, image, location="eastus")
    code, report = cli.publish("--config", str(target))
    assert code == ExitCode.USAGE, report
    assert "smokeTest.location" in report["error"]["message"]
    assert writes(fast) == []


def test_dry_run_plans_the_smoke_test_and_writes_nothing(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=35)
    target = smoke_target(tmp_path, image)
    code, report = cli.publish("--config", str(target), "--dry-run")
    assert code == 0, report
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["smoke test"]["detail"].startswith("would boot ")
    assert "Standard_B2s in westeurope" in steps["smoke test"]["detail"]
    assert writes(fast) == []


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_or_killed_during_the_smoke_test_then_rerun_leaves_nothing(fast, tmp_path, how):
    # The log never matches: the publish is still waiting for it when the signal comes.
    fast.settings.serial_log = BROKEN_LOG
    image = make_image(tmp_path / "img", seed=36 + int(how))
    target = smoke_target(tmp_path, image)
    state = tmp_path / "state"
    proc = run_publisher(fast, target, state)
    deadline = time.monotonic() + 90
    while not throwaways(fast)["vm"]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the smoke-test VM never appeared"
        time.sleep(0.1)
    time.sleep(0.3)
    proc.send_signal(how)
    out, err = proc.communicate(timeout=60)
    if how == signal.SIGINT:
        assert proc.returncode == ExitCode.INTERRUPTED, err[-3000:]
        assert "interrupted during step 'smoke test'" in json.loads(out)["error"]["message"]
        assert throwaways(fast) == NOTHING  # cleaned up in `finally`
    else:
        assert proc.returncode == -signal.SIGKILL
        assert throwaways(fast)["vm"]  # a kill leaves the VM behind
    fast.settings.serial_log = "nixos login: "
    rerun = run_publisher(fast, target, state)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err[-3000:]
    assert json.loads(out)["status"] == "published"
    assert throwaways(fast) == NOTHING
    if how == signal.SIGKILL:
        assert "deleted an earlier smoke test's leftovers" in err

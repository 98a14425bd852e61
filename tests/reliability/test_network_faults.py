"""Seeded network faults on the upload path and on the Resource Manager path.

Upload path: a fault proxy (tests/integration/faultproxy.py) in front of the
emulator's blob service, named in ``HTTP_PROXY`` as a user's proxy would be:
connection resets before and after the server saw a page, 500/503, 429 with
``Retry-After``, bodies cut short, bodies corrupted on the way (refused by the
checksum) and, for the uploader alone, stalls past its timeout.
Resource Manager path: the emulator's own faults (503s, 429 storms with
``Retry-After``, a failed long-running operation).

Every publish of a campaign must complete, leave a disk byte-identical to its
image and exactly one version per image. The fast variants run in CI; the
``campaign`` ones run more seeds and publishes (bench/reliability.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.azure import names
from nixos_azure_publish.cli import main
from nixos_azure_publish.errors import ExitCode
from tests.helpers.crash import NO_PROXY_VARS
from tests.helpers.images import make_image
from tests.helpers.publishing import compute, versions
from tests.helpers.sources import disk_digest
from tests.helpers.targets import GROUP, write_target
from tests.integration.faultproxy import Faults, run_fault_proxy
from tests.reliability import figures

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

PROXY_VARS = ("HTTP_PROXY", "http_proxy")


# Long-running operations that a campaign makes fail (one action per seed); both run in
# every publish of a new image (the gallery and definition exist after the first).
LRO_ACTIONS = (
    "Microsoft.Compute/galleries/images/versions/write",
    "Microsoft.Compute/disks/write",
)


# The chance of each fault per page write (bench/reliability.py describes them so).
UPLOAD_FAULT_RATES: dict[str, Any] = {"reset_before": 0.05, "reset_after": 0.03, "error_500": 0.02}
UPLOAD_FAULT_RATES |= {"error_503": 0.03, "throttle_429": 0.02, "truncate": 0.03, "corrupt": 0.03}


def upload_faults(seed: int) -> Faults:
    return Faults(seed=seed, retry_after=1, **UPLOAD_FAULT_RATES)


def arm_faults(emulator: Emulator, seed: int) -> None:
    faults = emulator.faults
    faults.seed = seed
    faults._random = None  # a new seed takes effect now
    faults.retry_after = 0.1
    faults.error_status = 503
    faults.error_rate = 0.10
    faults.throttle_rate = 0.05
    faults.throttle_next = 4  # a storm of 429s at the start


def tally(emulator: Emulator, hashes: dict[str, str]) -> tuple[int, int, int]:
    """Versions, duplicate versions of one image, and disks identical to their image."""
    client = compute(emulator)
    published = versions(client)
    by_hash: dict[str, int] = {}
    for version in published:
        tag = (version.tags or {}).get(names.TAG_CONTENT, "")
        by_hash[tag] = by_hash.get(tag, 0) + 1
    identical = 0
    for disk in client.disks.list_by_resource_group(GROUP):
        image_digest = hashes.get((disk.tags or {}).get(names.TAG_CONTENT, ""))
        if (
            image_digest is not None
            and disk_digest(emulator, GROUP, str(disk.name)) == image_digest
        ):
            identical += 1
    return len(published), sum(n - 1 for n in by_hash.values()), identical


def publish_campaign(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *,
    seed: int,
    publishes: int,
) -> dict[str, Any]:
    """*publishes* images published through upload and ARM faults; the figures."""
    emulator.settings.replication_seconds = 0.2
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    for name in NO_PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    azurite = emulator.app.blobs.azurite
    failures, hashes, lro_failures = [], {}, 0
    with run_fault_proxy(azurite.host, azurite.port, upload_faults(seed)) as proxy:
        for i in range(publishes):
            image = make_image(tmp_path / f"img{i}", seed=seed * 100 + i, data_mib=2)
            target = write_target(tmp_path / f"t{i}", image, cleanup={"deleteUploadDisk": False})
            arm_faults(emulator, seed * 100 + i)
            for name in PROXY_VARS:
                monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
            failed_lro = i % 3 == 1  # every third publish meets a failed long-running operation
            if failed_lro:
                emulator.faults.fail_lro = {LRO_ACTIONS[seed % len(LRO_ACTIONS)]: "InternalError"}
            capsys.readouterr()
            code = main(["--json", "publish", "--config", str(target)])
            out = capsys.readouterr().out
            if failed_lro:
                # Azure failed the operation: reported (exit 4, a rerun helps), then rerun.
                error = json.loads(out).get("error", {}) if out.strip() else {}
                if code != ExitCode.AZURE or not error.get("rerunHelps"):
                    failures.append((i, code, out[-500:]))
                lro_failures += 1
                emulator.faults.fail_lro = {}
                code = main(["--json", "publish", "--config", str(target)])
                out = capsys.readouterr().out
            for name in PROXY_VARS:
                monkeypatch.delenv(name)
            emulator.faults.reset()
            if code != 0:
                failures.append((i, code, out[-500:]))
                continue
            report = json.loads(out)
            hashes[report["storeHash"]] = hashlib.sha256(image.read_bytes()).hexdigest()
    published, duplicates, identical = tally(emulator, hashes)
    arm_faults_seen = sum(1 for r in emulator.requests if r.fault)
    return {
        "runs": publishes,
        "failures": len(failures),
        "failure_detail": failures,
        "versions": published,
        "duplicate_versions": duplicates,
        "identical_disks": identical,
        "upload_faults": sum(proxy.stats.injected.values()),
        "upload_fault_kinds": dict(proxy.stats.injected),
        "checksum_refusals": proxy.stats.mismatches,
        "arm_faults": arm_faults_seen,
        "failed_operations_rerun": lro_failures,
        "page_writes_via_proxy": proxy.stats.page_writes,
    }


@pytest.mark.parametrize(
    ("seed", "publishes"),
    [(1, 3), *(pytest.param(seed, 6, marks=pytest.mark.campaign) for seed in range(2, 7))],
)
def test_publishes_through_upload_and_resource_manager_faults(  # noqa: PLR0917 - parameters
    emulator, tmp_path, monkeypatch, capsys, seed, publishes
):
    result = publish_campaign(
        emulator, tmp_path, monkeypatch, capsys, seed=seed, publishes=publishes
    )
    method = f"campaign: seed {seed} x {publishes}" if seed > 1 else "fast: 1 seed x 3 publishes"
    figures.record("network faults: publish", method=method, **result)
    assert result["failures"] == 0, result["failure_detail"]
    assert result["versions"] == publishes, result
    assert result["duplicate_versions"] == 0, result
    assert result["identical_disks"] == publishes, result
    assert result["upload_faults"] >= 1, result  # the faults really happened
    assert result["arm_faults"] >= 1, result
    assert result["page_writes_via_proxy"] >= publishes, result  # the upload went through it

"""Expiry: the write SAS running out mid-upload, the bearer token during replication.

The write SAS: the publisher is made to grant short-lived write access (the
constant it reads at grant time is lowered), and the upload is slowed by a
proxy so that the SAS expires while pages are still being written. Azurite
enforces the expiry of the emulator's stored access policy, so writes after it
are refused with 403 as Azure refuses them. The publish must grant access
again and resume (not restart) the upload.

The bearer token: the emulator accepts any token (docs/emulator.md, "Knowingly
simplified"), so an expired token is not refused there. What is checked is the
client side: with tokens that live 2 s and a replication that takes several of
their lifetimes, new tokens are asked for during the wait, and the publish
completes.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import ResourceNotFoundError

from nixos_azure_publish.azure import clients as azclients
from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.cli import main
from nixos_azure_publish.errors import ExitCode
from tests.helpers.crash import NO_PROXY_VARS, frozen_after, run_importer, wait_until_held
from tests.helpers.images import make_image
from tests.helpers.importing import MINE, MY_DEFINITION, MY_GALLERY, my_target
from tests.helpers.publishing import assert_converged, compute, disks
from tests.helpers.sources import (
    SOURCE_DISK,
    SOURCE_GROUP,
    disk_digest,
    file_digest,
    grant_read,
    source_disk,
)
from tests.helpers.targets import GROUP, write_target
from tests.integration.faultproxy import Faults, run_fault_proxy
from tests.reliability import figures
from tests.reliability.test_network_faults import PROXY_VARS

if TYPE_CHECKING:
    import pytest

    from nixos_azure_publish.emulator.server import Emulator

MIB = 1024 * 1024


def disks_of(emulator: Emulator) -> list[Any]:
    return list(compute(emulator).disks.list_by_resource_group(MINE))


def versions_of(emulator: Emulator) -> list[Any]:
    client = compute(emulator).gallery_image_versions
    try:
        return list(client.list_by_gallery_image(MINE, MY_GALLERY, MY_DEFINITION))
    except ResourceNotFoundError:  # no gallery yet
        return []


def run_publish(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: Any,
    tmp_path: Any,
) -> tuple[int, dict[str, Any], str]:
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    capsys.readouterr()
    code = main(["-v", "--json", "publish", "--config", str(target)])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out.strip() else {}, captured.err


def test_a_write_sas_expiring_mid_upload_is_granted_again_and_the_upload_resumes(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=21, size_mib=32, data_mib=12)
    target = write_target(
        tmp_path, image, upload={"concurrency": 1}, cleanup={"deleteUploadDisk": False}
    )
    monkeypatch.setattr(azdisk, "SAS_SECONDS", 3)
    for name in NO_PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    azurite = emulator.app.blobs.azurite
    # 6 pieces at 0.4 s each, and the requests around them: the 3 s SAS expires mid-way.
    with run_fault_proxy(azurite.host, azurite.port, Faults(delay_seconds=0.4)) as proxy:
        for name in PROXY_VARS:
            monkeypatch.setenv(name, f"http://127.0.0.1:{proxy.port}")
        code, report, err = run_publish(emulator, monkeypatch, capsys, target, tmp_path)
        for name in PROXY_VARS:
            monkeypatch.delenv(name)
    grants = [r for r in emulator.requests if "beginGetAccess" in (r.action or "")]
    figures.record(
        "expiry: write SAS mid-upload",
        method="fast: 3 s SAS, upload slowed to outlast it",
        runs=1,
        failures=int(code != 0),
        write_grants=len(grants),
        bytes_sent=report.get("upload", {}).get("bytesSent"),
        data_bytes=report.get("upload", {}).get("dataBytes"),
    )
    assert code == 0, err[-3000:]
    assert "expired during the upload; granting access again and resuming" in err
    assert len(grants) >= 2
    upload = report["upload"]
    # Resumed, not restarted: at most the pieces in flight are sent twice; and the report
    # counts what each attempt sent, the one the expiry stopped included.
    assert upload["dataBytes"] <= upload["bytesSent"] < upload["dataBytes"] + 2 * 4 * MIB
    (disk,) = disks(compute(emulator))
    assert disk.as_dict()["properties"]["diskState"] == "Unattached"  # access revoked
    assert disk_digest(emulator, GROUP, str(disk.name)) == file_digest(image)


class ShortLivedTokens:
    """A credential whose every token lives *lifetime* seconds; it records when it was asked."""

    def __init__(self, lifetime: float) -> None:
        self.lifetime = lifetime
        self.asked: list[float] = []
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def _next(self) -> tuple[str, int]:
        with self._lock:
            self.asked.append(time.monotonic())
            return f"short-lived-{next(self._count)}", int(time.time() + self.lifetime)

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # noqa: ARG002
        return AccessToken(*self._next())

    def get_token_info(self, *scopes: str, options: object = None) -> AccessTokenInfo:  # noqa: ARG002
        return AccessTokenInfo(*self._next())

    def close(self) -> None:
        """Nothing to release."""


def test_a_bearer_token_expiring_during_replication_is_refreshed(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 4.0  # several token lifetimes
    image = make_image(tmp_path / "img", seed=22)
    target = write_target(tmp_path, image)
    credential = ShortLivedTokens(lifetime=2)
    monkeypatch.setattr(azclients, "make_credential", lambda _settings: credential)
    started = time.monotonic()
    code, report, err = run_publish(emulator, monkeypatch, capsys, target, tmp_path)
    figures.record(
        "expiry: bearer token during replication",
        method="fast: 2 s tokens, replication over 4 s per region",
        runs=1,
        failures=int(code != 0),
        tokens_asked=len(credential.asked),
    )
    assert code == 0, err[-3000:]
    assert_converged(emulator, report)
    first_expiry = started + credential.lifetime
    # New tokens were asked for after the first one ran out, while replication went on.
    assert len([t for t in credential.asked if t > first_expiry]) >= 2
    assert GROUP


def test_an_import_source_sas_expiring_mid_copy_is_reported_and_a_new_url_resumes(
    emulator, tmp_path
):
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=23, size_mib=48, data_mib=24)
    target = my_target(tmp_path, upload={"concurrency": 1}, cleanup={"deleteUploadDisk": False})
    state = tmp_path / "state"
    lifetime = 8
    url = source_disk(emulator, image, seconds=lifetime)
    expires = time.monotonic() + lifetime + 1  # the emulator rounds the expiry up
    with frozen_after(emulator, 3) as (proxy, env):
        proc = run_importer(emulator, url, target, state, env)
        wait_until_held(proxy, proc)  # three ranges copied, the rest waits
        time.sleep(max(0.0, expires + 1 - time.monotonic()))
        proxy.release()  # the copy goes on after the source's read SAS ran out
        out, err = proc.communicate(timeout=120)
        copied = proxy.stats.page_writes
    assert proc.returncode == ExitCode.UPLOAD, err[-3000:]
    error = json.loads(out)["error"]
    shown = url.split("?", maxsplit=1)[0]
    assert error["kind"] == "source-sas-expired", error
    assert error["message"].startswith(f"the read SAS of the source {shown} ")
    assert "expired" in error["message"]
    assert "a new read SAS URL of the source" in error["hint"]
    assert "sig=" not in (out + err).replace("sig=REDACTED", "")
    (disk,) = disks_of(emulator)
    assert disk.as_dict()["properties"]["diskState"] != "ActiveUpload"  # write access revoked
    assert versions_of(emulator) == []

    # A new URL of the same source: the copy resumes, only the missing ranges are copied.
    fresh = grant_read(emulator, SOURCE_GROUP, SOURCE_DISK)
    rerun = run_importer(emulator, fresh, target, state)
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    report = json.loads(out)
    upload = report["upload"]
    total = upload["rangesSent"] + upload["rangesSkipped"]
    figures.record(
        "expiry: read SAS of an import source mid-copy",
        method=f"fast: {lifetime} s read SAS, copy frozen after 3 ranges",
        runs=1,
        failures=0,
        ranges_copied_before=copied,
        ranges_copied_after=upload["rangesSent"],
        ranges_total=total,
    )
    assert upload["rangesSent"] == total - copied, upload
    assert report["version"] == versions_of(emulator)[0].name
    (disk,) = disks_of(emulator)
    assert disk_digest(emulator, MINE, str(disk.name)) == file_digest(image)

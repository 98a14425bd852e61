"""Publishing into the emulator from tests: in-process (``run``, ``publish``, the ``Cli``
of the ``cli`` fixture) or as a subprocess that a test may kill (``run_publisher``,
``kill_in_step``), and reading back what the emulator holds through the real SDK clients."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import Gallery, GalleryImage
from azure.mgmt.network import NetworkManagementClient

from nixos_azure_publish import pipeline
from nixos_azure_publish.cli import main
from nixos_azure_publish.emulator.blobs import DISK_BLOB
from nixos_azure_publish.emulator.testing import clients
from tests.conftest import REPO
from tests.helpers.images import make_image
from tests.helpers.targets import DEFINITION, GALLERY, GROUP, write_target

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})


def compute(emulator: Emulator) -> ComputeManagementClient:
    return ComputeManagementClient(
        emulator.credential(), emulator.subscription_id, **emulator.client_kwargs()
    )


def network(emulator: Emulator) -> NetworkManagementClient:
    return NetworkManagementClient(
        emulator.credential(), emulator.subscription_id, **emulator.client_kwargs()
    )


def env_for(emulator: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(emulator.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


def run(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, Any, str]:
    """``ARGS`` in-process against the emulator; exit code, JSON stdout (or text), stderr."""
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    out = captured.out
    try:
        return code, json.loads(out), captured.err
    except ValueError:
        return code, out, captured.err


def publish(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    summary: Path | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run ``--json publish ARGS`` in-process; its exit code and JSON output."""
    if summary is None:
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    else:  # as GitHub Actions runs it
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    code, out, _ = run(emulator, monkeypatch, capsys, "--json", "publish", *args)
    if isinstance(out, str):  # not JSON: only nothing at all is allowed
        assert not out.strip(), out
        return code, {}
    return code, out


def publish_seed(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seed: int,
    *extra: str,
    regions: tuple[str, ...] = ("westeurope", "northeurope"),
    version: dict[str, Any] | None = None,
    **overrides: Any,
) -> tuple[Path, dict[str, Any]]:
    """Publish a fresh image made from *seed* to *regions*; its target and report.

    *version* adds to the target's ``version``; *overrides* replace its other keys.
    """
    folder = tmp_path / f"p{seed}"
    image = make_image(folder / "img", seed=seed, size_mib=24)
    target = write_target(
        folder, image, version={"targetRegions": list(regions), **(version or {})}, **overrides
    )
    code, report = publish(emulator, monkeypatch, capsys, "--config", str(target), *extra)
    assert code == 0, report
    return target, report


def run_publisher(
    emulator: Emulator, target: Path, state: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nixos_azure_publish",
            "-v",
            "--json",
            "publish",
            "--config",
            str(target),
            "--state-dir",
            str(state),
            *extra,
        ],
        env=env_for(emulator) if env is None else env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def writes(emulator: Emulator, since: int = 0) -> list[str]:
    return [f"{r.method} {r.path}" for r in list(emulator.requests)[since:] if r.method in WRITES]


def grants(emulator: Emulator, since: int = 0) -> list[str]:
    """Write access granted to upload disks: one per upload."""
    return [
        r.path
        for r in list(emulator.requests)[since:]
        if r.method == "POST" and r.path.split("?")[0].endswith("/beginGetAccess")
    ]


def versions(client: ComputeManagementClient) -> list[Any]:
    return list(client.gallery_image_versions.list_by_gallery_image(GROUP, GALLERY, DEFINITION))


def disks(client: ComputeManagementClient) -> list[Any]:
    return list(client.disks.list_by_resource_group(GROUP))


def images(client: ComputeManagementClient) -> list[Any]:
    return list(client.images.list_by_resource_group(GROUP))


def publish_again(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> dict[str, Any]:
    """Publish ARGS again: it must succeed as "already-published" and write nothing to Azure."""
    before = len(emulator.requests)
    code, again = publish(emulator, monkeypatch, capsys, *args)
    assert code == 0, again
    assert again["status"] == "already-published"
    assert writes(emulator, before) == []
    return again


def source_of(version: dict[str, Any]) -> dict[str, Any]:
    """A version's source as it was given: a managed image (Trusted Launch definitions)
    or a disk; an update must repeat it."""
    storage = version["properties"]["storageProfile"]
    if "source" in storage:
        return {"source": {"id": storage["source"]["id"]}}
    return {"osDiskImage": {"source": {"id": storage["osDiskImage"]["source"]["id"]}}}


def update_version(
    emulator: Emulator, name: str, properties: dict[str, Any], *, wait: bool = True, **body: Any
) -> None:
    """PATCH a version as someone else would: *properties* beside its own storage profile.

    With ``wait=False`` it returns as soon as Azure has accepted the change.
    """
    client = compute(emulator)
    current = client.gallery_image_versions.get(GROUP, GALLERY, DEFINITION, name).as_dict()
    begin: Any = client.gallery_image_versions.begin_update  # a dict body; typed for models
    begin(
        GROUP,
        GALLERY,
        DEFINITION,
        name,
        {**body, "properties": {**properties, "storageProfile": source_of(current)}},
        polling=wait,
    ).result()


def _disk_containers(emulator: Emulator) -> list[str]:
    """The blob containers of the disks this emulator holds."""
    held = list(emulator.app.store.resources.values())  # a copy: the server thread adds to it
    return [str(r.meta["container"]) for r in held if "container" in r.meta]


def wait_for_pages(emulator: Emulator, at_least: int, timeout: float = 60) -> None:
    """Wait until the upload disks hold *at_least* bytes of pages (a piece acknowledged:
    the uploader records it in its journal even when interrupted right after)."""
    service = emulator.app.blobs.service
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        held = 0
        # Only this emulator's disks: the session's Azurite also holds other tests' blobs.
        for container in _disk_containers(emulator):
            blob = service.get_blob_client(container, DISK_BLOB)
            with contextlib.suppress(ResourceNotFoundError):
                held += sum(
                    (r.end or 0) + 1 - (r.start or 0)
                    for r in blob.list_page_ranges()
                    if not r.cleared
                )
        if held >= at_least:
            return
        time.sleep(0.01)
    raise AssertionError(f"the upload disks never held {at_least} bytes")


def wait_for_line(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    """Read stderr until a line contains *needle*; the lines read."""
    assert proc.stderr is not None
    seen: list[str] = []
    found = threading.Event()

    def reader() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            seen.append(line)
            if needle in line:
                found.set()
                return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    if not found.wait(timeout):
        proc.kill()
        pytest.fail(f"never saw {needle!r}; stderr:\n{''.join(seen)}")
    return seen


def assert_converged(emulator: Emulator, report: dict[str, Any], *, kept_images: int = 0) -> None:
    client = compute(emulator)
    (version,) = versions(client)
    assert version.name == report["version"]
    assert disks(client) == []  # no orphaned upload disk, so no open write access
    assert len(images(client)) == kept_images  # a managed image only when the config keeps one
    state = client.gallery_image_versions.get(
        GROUP, GALLERY, DEFINITION, version.name, expand="ReplicationStatus"
    ).as_dict()["properties"]["replicationStatus"]["aggregatedState"]
    assert state == "Completed"


# Every step a publish without a smoke test or retention runs after checking the image
# (their order is pinned by the unit tests).
STEPS = [
    step.name
    for step in pipeline.STEPS
    if step.name not in {"check image", "smoke test", "retention"}
]


def kill_in_step(emulator: Emulator, target: Path, state: Path, step: str) -> None:
    """Start a publisher and SIGKILL it while *step* is sending its requests."""
    emulator.faults.delay = 0.05  # every ARM call a little slower: the kill lands inside the step
    proc = run_publisher(emulator, target, state)
    wait_for_line(proc, f"nixos_azure_publish.pipeline: {step}: starting")
    time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    emulator.faults.delay = 0.0


def kill_at_step(emulator: Emulator, tmp_path: Path, step: str, seed: int) -> dict[str, Any]:
    """Publish an image made from *seed*, SIGKILL the publisher during *step*, and rerun:
    the rerun must converge. Its report."""
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=seed)
    managed = step == "managed image"
    target = write_target(tmp_path, image, managedImage={"enable": managed})
    state = tmp_path / "state"
    kill_in_step(emulator, target, state, step)
    report = rerun_to_completion(emulator, target, state)
    assert_converged(emulator, report, kept_images=1 if managed else 0)
    return report


def rerun_to_completion(emulator: Emulator, target: Path, state: Path) -> dict[str, Any]:
    """Publish again as a subprocess: it must finish the job; its report."""
    rerun = run_publisher(emulator, target, state)
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    report: dict[str, Any] = json.loads(out)
    assert report["status"] in {"published", "already-published"}
    return report


def run_on(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    command: str,
    target: Path,
    *args: str,
    as_json: bool = True,
) -> tuple[int, Any, str]:
    """``[--json] COMMAND --config TARGET ARGS`` in-process, as `run` does."""
    flags = ("--json",) if as_json else ()
    return run(emulator, monkeypatch, capsys, *flags, command, "--config", str(target), *args)


def create_definition(
    emulator: Emulator,
    group: str,
    gallery: str,
    definition: str,
    *,
    location: str = "westeurope",
    generation: str = "V2",
    security: str = "TrustedLaunchSupported",
    identifier: dict[str, str] | None = None,
) -> None:
    """A resource group, a gallery and an image definition in it, made as someone else would."""
    default = {"publisher": "NixOS", "offer": "NixOS", "sku": "25.05-gen2"}
    clients(emulator).create_group(group, location)
    client = compute(emulator)
    client.galleries.begin_create_or_update(group, gallery, Gallery(location=location)).result()
    body = {
        "location": location,
        "properties": {
            "osType": "Linux",
            "osState": "Generalized",
            "hyperVGeneration": generation,
            "identifier": identifier or default,
            "features": [{"name": "SecurityType", "value": security}],
        },
    }
    client.gallery_images.begin_create_or_update(
        group, gallery, definition, GalleryImage(body)
    ).result()


@dataclass(frozen=True)
class Cli:
    """The CLI in-process against the emulator, for one test: its folder, environment
    and captured output (the ``cli`` fixture)."""

    emulator: Emulator
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    capsys: pytest.CaptureFixture[str]

    def run(self, *args: str) -> tuple[int, Any, str]:
        return run(self.emulator, self.monkeypatch, self.capsys, *args)

    def on(
        self, command: str, target: Path, *args: str, as_json: bool = True
    ) -> tuple[int, Any, str]:
        return run_on(
            self.emulator, self.monkeypatch, self.capsys, command, target, *args, as_json=as_json
        )

    def publish(self, *args: str, summary: Path | None = None) -> tuple[int, dict[str, Any]]:
        return publish(self.emulator, self.monkeypatch, self.capsys, *args, summary=summary)

    def publish_again(self, *args: str) -> dict[str, Any]:
        return publish_again(self.emulator, self.monkeypatch, self.capsys, *args)

    def publish_seed(self, seed: int, *extra: str, **options: Any) -> tuple[Path, dict[str, Any]]:
        return publish_seed(
            self.emulator, self.tmp_path, self.monkeypatch, self.capsys, seed, *extra, **options
        )

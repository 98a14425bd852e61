"""Publishing into the emulator from tests: in-process or as a subprocess, and reading
back what the emulator holds through the real SDK clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

from azure.mgmt.compute import ComputeManagementClient

from nixos_azure_publish.cli import main
from tests.conftest import REPO
from tests.helpers.targets import DEFINITION, GALLERY, GROUP

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from nixos_azure_publish.emulator.server import Emulator

WRITES = frozenset({"PUT", "POST", "PATCH", "DELETE"})


def compute(emulator: Emulator) -> ComputeManagementClient:
    return ComputeManagementClient(
        emulator.credential(), emulator.subscription_id, **emulator.client_kwargs()
    )


def env_for(emulator: Emulator) -> dict[str, str]:
    env = dict(os.environ)
    env.update(emulator.environ)
    env.pop("GITHUB_STEP_SUMMARY", None)
    return env


def publish(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
    summary: Path | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run ``--json publish ARGS`` in-process; its exit code and JSON output."""
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    if summary is None:
        monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    else:  # as GitHub Actions runs it
        monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    capsys.readouterr()
    code = main(["--json", "publish", *args])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


def run_publisher(
    emulator: Emulator, target: Path, state: Path, *extra: str
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
        env=env_for(emulator),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def writes(emulator: Emulator, since: int = 0) -> list[str]:
    return [f"{r.method} {r.path}" for r in list(emulator.requests)[since:] if r.method in WRITES]


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

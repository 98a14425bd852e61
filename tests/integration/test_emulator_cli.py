"""`emulator serve`: the environment it prints, detaching, stopping, and state that survives."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import BlobClient

from nixos_azure_publish.emulator.server import EmulatorSettings, run_emulator
from nixos_azure_publish.emulator.testing import clients

ENV_KEYS = {
    "NIXOS_AZURE_PUBLISH_ENDPOINT",
    "NIXOS_AZURE_PUBLISH_CA_CERT",
    "NIXOS_AZURE_PUBLISH_EMULATOR",
    "AZURE_SUBSCRIPTION_ID",
}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nixos_azure_publish", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def parse_exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        assert line.startswith("export "), line
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'")
    return env


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail(f"process {pid} is still running")


def test_a_detached_emulator_without_a_state_dir_leaves_nothing_when_stopped():
    result = run_cli("emulator", "serve", "--detach")
    assert result.returncode == 0, result.stderr
    env = parse_exports(result.stdout)
    state = Path(env["NIXOS_AZURE_PUBLISH_CA_CERT"]).parent.parent  # <state>/tls/cert.pem
    assert state.name.startswith("azure-emulator-"), state
    assert state.is_dir()
    os.kill(int(env["NIXOS_AZURE_PUBLISH_EMULATOR_PID"]), signal.SIGTERM)
    wait_gone(int(env["NIXOS_AZURE_PUBLISH_EMULATOR_PID"]))
    assert not state.exists()


def test_serve_detached_prints_exports_and_stops_on_sigterm(tmp_path):
    result = run_cli("emulator", "serve", "--detach", "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 0, result.stderr
    env = parse_exports(result.stdout)
    assert set(env) == {*ENV_KEYS, "NIXOS_AZURE_PUBLISH_EMULATOR_PID"}
    assert env["NIXOS_AZURE_PUBLISH_EMULATOR"] == "1"
    pid = int(env["NIXOS_AZURE_PUBLISH_EMULATOR_PID"])
    port = int(env["NIXOS_AZURE_PUBLISH_ENDPOINT"].rsplit(":", 1)[1])
    try:
        with socket.create_connection(("127.0.0.1", port), 2):
            pass
    finally:
        os.kill(pid, signal.SIGTERM)
    wait_gone(pid)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


@pytest.mark.parametrize(
    "argv", [["--json", "emulator", "serve"], ["emulator", "serve", "--json"]], ids=str
)
def test_serve_json_in_the_foreground_until_interrupted(tmp_path, argv):
    proc = subprocess.Popen(
        [sys.executable, "-m", "nixos_azure_publish", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        text = ""
        while True:
            line = proc.stdout.readline()
            assert line, proc.stderr.read() if proc.stderr else ""
            text += line
            if line.startswith("}"):
                break
        env = json.loads(text)
        assert set(env) == ENV_KEYS
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_state_survives_a_restart(tmp_path):
    state = tmp_path / "state"
    settings = EmulatorSettings(replication_seconds=1.0)
    with run_emulator(state_dir=state, settings=settings) as first:
        sdk = clients(first)
        sdk.create_group("keep", "westeurope")
        disk = sdk.upload_disk("keep", "disk")
        gallery: Any = {"location": "westeurope"}
        definition: Any = {
            "location": "westeurope",
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "identifier": {"publisher": "p", "offer": "o", "sku": "s"},
                "features": [{"name": "SecurityType", "value": "Standard"}],
            },
        }
        version: Any = {
            "location": "westeurope",
            "properties": {"storageProfile": {"osDiskImage": {"source": {"id": disk.id}}}},
        }
        sdk.compute.galleries.begin_create_or_update("keep", "gallery", gallery).result()
        sdk.compute.gallery_images.begin_create_or_update(
            "keep", "gallery", "nixos", definition
        ).result()
        # Stop while replication is still running.
        sdk.compute.gallery_image_versions.begin_create_or_update(
            "keep", "gallery", "nixos", "1.0.0", version, polling=False
        )
        ca_cert = first.ca_cert.read_bytes()
    with run_emulator(state_dir=state, settings=settings) as second:
        assert second.ca_cert.read_bytes() == ca_cert  # clients keep trusting it
        sdk = clients(second)
        assert sdk.compute.disks.get("keep", "disk").disk_state == "Unattached"
        access = sdk.compute.disks.begin_grant_access(
            "keep", "disk", {"access": "Read", "durationInSeconds": 60}
        ).result()
        footer = BlobClient.from_blob_url(str(access.access_sas)).download_blob(
            offset=21 * 1024 * 1024, length=8
        )
        assert footer.readall() == b"conectix"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            version = sdk.compute.gallery_image_versions.get(
                "keep", "gallery", "nixos", "1.0.0", expand="ReplicationStatus"
            )
            if version.provisioning_state == "Succeeded":
                break
            time.sleep(0.1)
        assert version.replication_status.aggregated_state == "Completed"

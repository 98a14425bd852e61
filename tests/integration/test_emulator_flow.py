"""The whole manual flow of nixpkgs' Azure README, through the real SDK clients.

Group -> upload disk -> grant -> put pages into the SAS -> revoke -> managed image ->
gallery -> definition -> version in 3 regions -> replication Completed -> VM from the
version -> serial log -> delete everything. Nothing is mocked: the compute/network
clients speak HTTPS to the emulator, the pages land in Azurite.
"""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request

import pytest

from nixos_azure_publish.emulator.server import run_emulator
from nixos_azure_publish.emulator.testing import clients
from tests.helpers.emulator_flow import (
    LOCATION,
    step_check_log,
    step_delete_everything,
    step_gallery_version,
    step_image,
    step_smoke_test_vm,
    step_upload,
)


def test_readme_flow_end_to_end(emulator):
    sdk = clients(emulator)
    group = sdk.create_group("nixos-images", LOCATION)
    assert group["properties"]["provisioningState"] == "Succeeded"
    disk = step_upload(emulator, sdk)
    image = step_image(sdk, disk)
    version = step_gallery_version(emulator, sdk, image)
    step_smoke_test_vm(emulator, sdk, version)
    step_delete_everything(sdk)
    step_check_log(emulator)


def test_serves_then_stops_everything(tmp_path):
    # How fast it starts is measured in bench/bench_emulator.py, not asserted here.
    with run_emulator() as running:
        arm_port = int(running.endpoint.rsplit(":", 1)[1])
        blob_port = running.azurite.port
        ssl_context = ssl.create_default_context(cafile=str(running.ca_cert))
        url = running.endpoint + "/subscriptions/x/resourcegroups?api-version=2021-04-01"
        with pytest.raises(urllib.error.HTTPError, match="401"):  # no bearer token
            urllib.request.urlopen(url, context=ssl_context)  # noqa: S310 - https, loopback
    for port in (arm_port, blob_port):
        with (
            pytest.raises(ConnectionRefusedError),
            socket.create_connection(("127.0.0.1", port), 0.5),
        ):
            pass

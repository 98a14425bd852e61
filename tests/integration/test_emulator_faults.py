"""Fault injection: what the SDK (and our code on top of it) sees when Azure misbehaves."""

from __future__ import annotations

import time
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from nixos_azure_publish.emulator.testing import clients
from tests.helpers.sdk import sdk_in_group

GROUP = "faults"
LOCATION = "westeurope"
MIB = 1024 * 1024


def disk_body() -> Any:
    return {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "creationData": {"createOption": "Upload", "uploadSizeBytes": 21 * MIB + 512},
        },
    }


@pytest.fixture
def sdk(emulator):
    emulator.faults.retry_after = 0.05
    sdk = sdk_in_group(emulator, GROUP, LOCATION, retry_backoff_factor=0.01)
    sdk.compute.disks.begin_create_or_update(GROUP, "d", disk_body()).result()
    return sdk


def test_throttled_calls_are_retried_after_retry_after(sdk, emulator):
    emulator.faults.throttle_next = 2
    emulator.faults.retry_after = 0.3
    started = time.monotonic()
    assert sdk.compute.disks.get(GROUP, "d").name == "d"
    assert time.monotonic() - started >= 0.6  # the SDK honoured Retry-After twice
    throttled = [r for r in emulator.requests if r.status == 429]
    assert len(throttled) == 2
    assert {r.fault for r in throttled} == {"throttle"}
    assert {r.error_code for r in throttled} == {"TooManyRequests"}


def test_transient_server_errors_are_retried(sdk, emulator):
    emulator.faults.error_next = 1
    emulator.faults.error_status = 500
    assert sdk.compute.disks.get(GROUP, "d").name == "d"
    assert [r.status for r in emulator.requests][-2:] == [500, 200]


def test_persistent_errors_reach_the_caller(emulator):
    sdk = clients(emulator, retry_total=1, retry_backoff_factor=0.01)
    sdk.create_group(GROUP, LOCATION)
    emulator.faults.error_rate = 1.0
    emulator.faults.match = "Microsoft.Compute/disks/read"
    with pytest.raises(HttpResponseError) as info:
        sdk.compute.disks.get(GROUP, "d")
    assert info.value.status_code == 503
    assert "ServerBusy" in str(info.value)
    # Only matching actions are affected.
    assert sdk.group_request("GET", GROUP) == 200


def test_a_fraction_of_calls_is_throttled(sdk, emulator):
    emulator.faults.throttle_rate = 0.5
    emulator.faults.seed = 7
    for _ in range(6):
        assert sdk.compute.disks.get(GROUP, "d").name == "d"
    statuses = [r.status for r in emulator.requests.matching(method="GET")]
    assert 429 in statuses
    assert statuses.count(200) >= 6


def test_long_running_operations_can_fail_with_an_error_body(sdk, emulator):
    emulator.faults.fail_lro["Microsoft.Compute/galleries/write"] = "InternalExecutionError"
    poller = sdk.compute.galleries.begin_create_or_update(GROUP, "gallery", {"location": LOCATION})
    with pytest.raises(HttpResponseError) as info:
        poller.result()
    assert "InternalExecutionError" in str(info.value)
    assert sdk.compute.galleries.get(GROUP, "gallery").provisioning_state == "Failed"


def test_slow_responses_and_slow_operations(sdk, emulator):
    emulator.faults.delay = 0.3
    started = time.monotonic()
    sdk.compute.disks.get(GROUP, "d")
    assert time.monotonic() - started >= 0.3
    emulator.faults.delay = 0
    emulator.faults.lro_delay = 0.5
    started = time.monotonic()
    poller = sdk.compute.galleries.begin_create_or_update(GROUP, "gallery", {"location": LOCATION})
    assert not poller.done()
    poller.result()
    assert time.monotonic() - started >= 0.5


def test_the_kill_switch_drops_connections(emulator):
    sdk = clients(emulator, retry_total=0)
    sdk.create_group(GROUP, LOCATION)
    emulator.faults.drop_connections = True
    with pytest.raises((ServiceRequestError, ServiceResponseError)):
        sdk.compute.disks.get(GROUP, "d")
    assert emulator.requests[-1].fault == "drop"
    emulator.faults.reset()
    assert sdk.group_request("GET", GROUP) == 200


def test_an_oversized_body_is_refused_and_the_connection_closed(emulator):
    import http.client  # noqa: PLC0415 - only here: headers without the body
    import ssl  # noqa: PLC0415

    context = ssl.create_default_context(cafile=str(emulator.ca_cert))
    host, port = emulator.endpoint.removeprefix("https://").split(":")
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    connection.putrequest("PUT", "/subscriptions/s/resourcegroups/g?api-version=2021-04-01")
    connection.putheader("Authorization", "Bearer t")
    connection.putheader("Content-Length", str(5 * 1024 * 1024))
    connection.endheaders()
    response = connection.getresponse()
    assert response.status == 413
    assert response.getheader("Connection") == "close"
    assert b"RequestEntityTooLarge" in response.read()
    connection.close()
    # The emulator still serves.
    assert clients(emulator).group_request("GET", "g") == 404

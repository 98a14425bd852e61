"""Azure's rules for resource groups, ARM requests and the disk upload life cycle.

Each test breaks one rule through the real SDK and asserts the error code Azure returns.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient

from nixos_azure_publish.emulator.testing import clients, fixed_vhd_footer
from tests.integration.conftest import error_of

MIB = 1024 * 1024
GROUP = "rules"
LOCATION = "westeurope"


@pytest.fixture
def sdk(emulator):
    sdk = clients(emulator)
    sdk.create_group(GROUP, LOCATION)
    return sdk


def upload_disk_body(size: int, **extra):
    return {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "hyperVGeneration": "V2",
            "creationData": {"createOption": "Upload", "uploadSizeBytes": size},
            **extra,
        },
    }


def test_requests_without_bearer_token_are_refused(emulator):
    context = ssl.create_default_context(cafile=str(emulator.ca_cert))
    url = (
        f"{emulator.endpoint}/subscriptions/{emulator.subscription_id}"
        "/resourcegroups/x?api-version=2021-04-01"
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(url, context=context)  # noqa: S310 - https, loopback
    assert info.value.code == 401
    assert b'"AuthenticationFailed"' in info.value.read()
    assert emulator.requests[-1].status == 401


def test_api_version_must_be_one_the_service_knows(sdk):
    error = error_of(lambda: sdk.compute.disks.get(GROUP, "d", api_version="2019-01-01"))
    assert error.status_code == 400
    assert error.error.code == "NoRegisteredProviderFound"
    assert "2026-03-02" in error.message


def test_missing_group_and_missing_resource(sdk):
    error = error_of(
        lambda: sdk.compute.disks.begin_create_or_update(
            "no-such-group", "d", upload_disk_body(21 * MIB + 512)
        )
    )
    assert error.status_code == 404
    assert error.error.code == "ResourceGroupNotFound"
    error = error_of(lambda: sdk.compute.disks.get(GROUP, "no-such-disk"))
    assert error.error.code == "ResourceNotFound"
    assert isinstance(error, ResourceNotFoundError)


def test_group_location_is_fixed(sdk):
    with pytest.raises(HttpResponseError, match="InvalidResourceGroupLocation"):
        sdk.create_group(GROUP, "eastus")


@pytest.mark.parametrize(
    ("size", "why"),
    [
        (20 * MIB, "between"),  # below 20 MiB + 512
        (32 * 1024 * 1024 * MIB + 1024, "between"),  # above 32 TiB + 512
        (21 * MIB + 100, "multiple of 512"),
    ],
)
def test_upload_size_bounds_and_alignment(sdk, size, why):
    error = error_of(
        lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", upload_disk_body(size))
    )
    assert error.status_code == 400
    assert error.error.code == "InvalidParameter"
    assert why in error.message


@pytest.mark.parametrize("name", ["-disk", "disk.", "disk-", "a" * 81, "disk!"])
def test_disk_name_rules(sdk, name):
    error = error_of(
        lambda: sdk.compute.disks.begin_create_or_update(
            GROUP, name, upload_disk_body(21 * MIB + 512)
        )
    )
    assert error.error.code == "InvalidParameter"
    assert "disk.name" in error.message


def test_disk_names_may_use_dots_dashes_and_underscores(sdk):
    name = "nixos-25.05_" + "a" * 60 + "_"
    disk = sdk.compute.disks.begin_create_or_update(
        GROUP, name, upload_disk_body(21 * MIB + 512)
    ).result()
    assert disk.name == name


def test_upload_needs_upload_size(sdk):
    body = upload_disk_body(0)
    del body["properties"]["creationData"]["uploadSizeBytes"]
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", body))
    assert error.error.code == "InvalidParameter"


def test_disk_create_is_an_lro_with_provisioning_states(sdk, emulator):
    poller = sdk.compute.disks.begin_create_or_update(GROUP, "d", upload_disk_body(21 * MIB + 512))
    first = poller.polling_method()._initial_response.http_response
    assert first.status_code == 202
    assert "Azure-AsyncOperation" in first.headers
    assert "Location" in first.headers
    assert "Retry-After" in first.headers
    assert first.json()["properties"]["provisioningState"] == "Updating"
    assert poller.result().provisioning_state == "Succeeded"
    polls = emulator.requests.matching(action="Microsoft.Compute/locations/operations/read")
    assert polls, "the SDK polled the operation"


def test_grant_write_only_while_uploading(sdk):
    disk = sdk.upload_disk(GROUP, "d")
    assert disk.disk_state == "Unattached"
    error = error_of(
        lambda: sdk.compute.disks.begin_grant_access(
            GROUP, "d", {"access": "Write", "durationInSeconds": 60}
        )
    )
    assert error.status_code == 409
    assert error.error.code == "OperationNotAllowed"
    # Read access to an uploaded disk is fine (export).
    access = sdk.compute.disks.begin_grant_access(
        GROUP, "d", {"access": "Read", "durationInSeconds": 60}
    ).result()
    assert sdk.compute.disks.get(GROUP, "d").disk_state == "ActiveSAS"
    blob = BlobClient.from_blob_url(access.access_sas)
    assert blob.download_blob(offset=21 * MIB, length=8).readall() == b"conectix"
    sdk.compute.disks.begin_revoke_access(GROUP, "d").result()
    assert sdk.compute.disks.get(GROUP, "d").disk_state == "Unattached"


def test_grant_needs_a_duration(sdk):
    sdk.compute.disks.begin_create_or_update(GROUP, "d", upload_disk_body(21 * MIB + 512)).result()
    error = error_of(lambda: sdk.compute.disks.begin_grant_access(GROUP, "d", {"access": "Write"}))
    assert error.error.code == "InvalidParameter"


def test_no_delete_during_active_upload(sdk):
    sdk.upload_disk(GROUP, "d", revoke=False)
    assert sdk.compute.disks.get(GROUP, "d").disk_state == "ActiveUpload"
    error = error_of(lambda: sdk.compute.disks.begin_delete(GROUP, "d"))
    assert error.status_code == 409
    assert error.error.code == "OperationNotAllowed"
    sdk.compute.disks.begin_revoke_access(GROUP, "d").result()
    sdk.compute.disks.begin_delete(GROUP, "d").result()
    assert list(sdk.compute.disks.list_by_resource_group(GROUP)) == []


def test_delete_of_a_missing_disk_is_no_content(sdk, emulator):
    sdk.compute.disks.begin_delete(GROUP, "never-existed").result()
    assert emulator.requests.matching(method="DELETE")[-1].status == 204


@pytest.mark.parametrize(
    ("footer", "message"),
    [
        (fixed_vhd_footer(21 * MIB, cookie=b"notvhd!!"), "cookie value 'conectix'"),
        (fixed_vhd_footer(21 * MIB, disk_type=3), "only fixed VHDs"),
        (fixed_vhd_footer(21 * MIB - 512), "whole number (in MBs)"),
        (fixed_vhd_footer(22 * MIB), "does not match the uploaded size"),
        (b"\0" * 512, "cookie value 'conectix'"),
    ],
)
def test_revoke_validates_the_vhd_footer(sdk, footer, message):
    sdk.upload_disk(GROUP, "d", footer=footer, revoke=False)
    error = error_of(lambda: sdk.compute.disks.begin_revoke_access(GROUP, "d").result())
    assert error.error.code == "InvalidParameter"
    assert message in error.message
    # The SAS is revoked all the same; the disk can take a new upload.
    assert sdk.compute.disks.get(GROUP, "d").disk_state == "ReadyToUpload"


def test_a_corrupted_checksum_is_refused(sdk):
    footer = bytearray(fixed_vhd_footer(21 * MIB))
    footer[64] ^= 0xFF
    sdk.upload_disk(GROUP, "d", footer=bytes(footer), revoke=False)
    error = error_of(lambda: sdk.compute.disks.begin_revoke_access(GROUP, "d").result())
    assert "checksum" in error.message


def test_the_sas_lasts_the_requested_duration(sdk):
    sdk.compute.disks.begin_create_or_update(GROUP, "d", upload_disk_body(21 * MIB + 512)).result()
    access = sdk.compute.disks.begin_grant_access(
        GROUP, "d", {"access": "Write", "durationInSeconds": 1}
    ).result()
    blob = BlobClient.from_blob_url(access.access_sas)
    blob.upload_page(b"\1" * 512, offset=0, length=512)
    import time  # noqa: PLC0415 - only this test waits

    time.sleep(2.1)
    with pytest.raises(HttpResponseError, match="authenticate"):
        blob.upload_page(b"\1" * 512, offset=512, length=512)


def test_tags_are_kept_and_updatable(sdk):
    body = upload_disk_body(21 * MIB + 512)
    body["tags"] = {"store-hash": "abc"}
    disk = sdk.compute.disks.begin_create_or_update(GROUP, "d", body).result()
    assert disk.tags == {"store-hash": "abc"}
    disk = sdk.compute.disks.begin_update(GROUP, "d", {"tags": {"store-hash": "def"}}).result()
    assert sdk.compute.disks.get(GROUP, "d").tags == {"store-hash": "def"}


def test_upload_size_cannot_change(sdk):
    sdk.compute.disks.begin_create_or_update(GROUP, "d", upload_disk_body(21 * MIB + 512)).result()
    error = error_of(
        lambda: sdk.compute.disks.begin_create_or_update(
            GROUP, "d", upload_disk_body(22 * MIB + 512)
        )
    )
    assert error.error.code == "PropertyChangeNotAllowed"


def test_deleting_the_group_deletes_its_disks_and_blobs(sdk, emulator):
    disk = sdk.upload_disk(GROUP, "d")
    container = emulator.app.store.get(disk.id).meta["container"]
    assert sdk.group_request("DELETE", GROUP) == 202
    import time  # noqa: PLC0415

    deadline = time.monotonic() + 5
    while sdk.group_request("GET", GROUP) != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emulator.app.store.get(disk.id) is None
    assert not emulator.app.blobs.blob_exists(container)

"""Azure's rules for resource groups, ARM requests and the disk upload life cycle.

Each test breaks one rule through the real SDK and asserts the error code Azure returns.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob import BlobClient, BlobServiceClient

from nixos_azure_publish.emulator.testing import fixed_vhd_footer
from tests.helpers.sdk import sdk_in_group
from tests.integration.conftest import error_of

MIB = 1024 * 1024
GROUP = "rules"
LOCATION = "westeurope"


@pytest.fixture
def sdk(emulator):
    return sdk_in_group(emulator, GROUP, LOCATION)


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


# -- createOption Import (a VHD blob of a storage account) and Copy (another disk) -----------

SOURCE_SIZE = 21 * MIB


def account_id(emulator, account="devstoreaccount1"):
    return (
        f"/subscriptions/{emulator.subscription_id}/resourceGroups/{GROUP}"
        f"/providers/Microsoft.Storage/storageAccounts/{account}"
    )


def source_blob(emulator, *, blob_type="page", footer=None):
    """A page blob in the emulator's storage account holding a small fixed VHD; its URL."""
    service = BlobServiceClient.from_connection_string(emulator.azurite.connection_string)
    container = service.get_container_client("images")
    if not container.exists():
        container.create_container()
    client = container.get_blob_client(f"nixos-{blob_type}.vhd")
    tail = fixed_vhd_footer(SOURCE_SIZE) if footer is None else footer
    if blob_type == "page":
        client.create_page_blob(size=SOURCE_SIZE + 512)
        client.upload_page(b"\xeb\x63\x90" + b"\x01" * 509, offset=0, length=512)
        client.upload_page(b"\x42" * MIB, offset=5 * MIB, length=MIB)
        client.upload_page(tail, offset=SOURCE_SIZE, length=512)
    else:
        client.upload_blob(b"\0" * SOURCE_SIZE + tail, overwrite=True)
    return f"{emulator.app.blobs.public_endpoint}/images/nixos-{blob_type}.vhd"


def import_body(emulator, uri, **creation):
    return {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "hyperVGeneration": "V2",
            "creationData": {
                "createOption": "Import",
                "sourceUri": uri,
                "storageAccountId": account_id(emulator),
                **creation,
            },
        },
    }


def copy_body(source_id, **properties):
    return {
        "location": LOCATION,
        "properties": {
            "creationData": {"createOption": "Copy", "sourceResourceId": source_id},
            **properties,
        },
    }


def disk_bytes(sdk, name):
    """The whole content of disk *name*, read through a Read SAS as a user would."""
    access = sdk.compute.disks.begin_grant_access(
        GROUP, name, {"access": "Read", "durationInSeconds": 60}
    ).result()
    try:
        return BlobClient.from_blob_url(access.access_sas).download_blob().readall()
    finally:
        sdk.compute.disks.begin_revoke_access(GROUP, name).result()


def test_import_makes_a_disk_of_the_blob_with_its_size_and_bytes(sdk, emulator):
    uri = source_blob(emulator)
    disk = sdk.compute.disks.begin_create_or_update(
        GROUP, "imported", import_body(emulator, uri)
    ).result()
    assert disk.disk_state == "Unattached"
    assert disk.disk_size_bytes == SOURCE_SIZE
    assert disk.hyper_v_generation == "V2"
    assert disk.creation_data.source_uri == uri
    source = BlobClient.from_connection_string(
        emulator.azurite.connection_string, "images", "nixos-page.vhd"
    )
    assert disk_bytes(sdk, "imported") == source.download_blob().readall()
    # The same PUT again changes nothing; another source is a change Azure refuses.
    sdk.compute.disks.begin_create_or_update(GROUP, "imported", import_body(emulator, uri)).result()
    error = error_of(
        lambda: sdk.compute.disks.begin_create_or_update(
            GROUP, "imported", import_body(emulator, uri + "2")
        )
    )
    assert error.error.code == "PropertyChangeNotAllowed"


A_DISK = "/subscriptions/s/resourceGroups/g/providers/Microsoft.Compute/disks/d"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"storageAccountId": None}, (400, "BadRequest", "'storageAccountId' is missing")),
        ({"sourceUri": None}, (400, "BadRequest", "'sourceUri' is missing")),
        (
            {"storageAccountId": "/subscriptions/s/resourceGroups/g"},
            (400, "InvalidParameter", "not the id of a storage account"),
        ),
        ({"account": "other"}, (400, "InvalidParameter", "not in storage account 'other'")),
        (
            {"sourceUri": "https://elsewhere.example/images/x.vhd"},
            (400, "InvalidParameter", "not in storage account"),
        ),
        ({"sourceUri": "missing"}, (404, "NotFound", "was not found")),
        ({"blob_type": "block"}, (400, "BadRequest", "not a page blob")),
        ({"footer": b"\0" * 512}, (400, "BadRequest", "cookie value 'conectix'")),
        (
            {"footer": fixed_vhd_footer(SOURCE_SIZE - MIB)},
            (400, "BadRequest", "does not match"),
        ),
        (
            {"uploadSizeBytes": SOURCE_SIZE + 512},
            (400, "InvalidParameter", "only allowed with createOption Upload"),
        ),
        (
            {"sourceResourceId": A_DISK},
            (400, "InvalidParameter", "only allowed with createOption Copy"),
        ),
    ],
)
def test_import_refusals(sdk, emulator, change, expected):
    change = dict(change)
    uri = source_blob(
        emulator, blob_type=change.pop("blob_type", "page"), footer=change.pop("footer", None)
    )
    if change.get("sourceUri") == "missing":
        change["sourceUri"] = uri.replace("nixos-page", "no-such")
    body = import_body(emulator, uri)
    creation = body["properties"]["creationData"]
    if "account" in change:
        creation["storageAccountId"] = account_id(emulator, change.pop("account"))
    for key, value in change.items():
        if value is None:
            del creation[key]
        else:
            creation[key] = value
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", body))
    status, code, needle = expected
    assert (error.status_code, error.error.code) == (status, code)
    assert needle in error.message
    assert "sig=" not in error.message
    assert list(sdk.compute.disks.list_by_resource_group(GROUP)) == []


def test_import_needs_no_sas_but_never_echoes_one_in_errors(sdk, emulator):
    uri = source_blob(emulator).replace("nixos-page", "no-such") + "?sv=2020&sig=secret"
    error = error_of(
        lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", import_body(emulator, uri))
    )
    assert error.error.code == "NotFound"
    assert "secret" not in error.message


def test_copy_makes_an_identical_disk_of_the_same_size(sdk):
    source = sdk.upload_disk(GROUP, "source")
    disk = sdk.compute.disks.begin_create_or_update(GROUP, "copy", copy_body(source.id)).result()
    assert disk.disk_state == "Unattached"
    assert disk.disk_size_bytes == source.disk_size_bytes
    assert disk.hyper_v_generation == "V2"
    assert disk.os_type == "Linux"
    assert disk.creation_data.source_unique_id == source.unique_id
    content = disk_bytes(sdk, "copy")
    assert content == disk_bytes(sdk, "source")
    assert content[-512:-504] == b"conectix"
    # A copy of a copy is a copy too; the source stays as it was.
    sdk.compute.disks.begin_create_or_update(GROUP, "copy2", copy_body(disk.id)).result()
    assert disk_bytes(sdk, "copy2") == content
    assert sdk.compute.disks.get(GROUP, "source").disk_state == "Unattached"


def test_copy_refusals(sdk, emulator):
    uploading = sdk.compute.disks.begin_create_or_update(
        GROUP, "uploading", upload_disk_body(21 * MIB + 512)
    ).result()
    source = sdk.upload_disk(GROUP, "source")

    def refused(body):
        return error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", body))

    error = refused(copy_body(uploading.id))
    assert (error.status_code, error.error.code) == (409, "OperationNotAllowed")
    assert "ReadyToUpload" in error.message
    error = refused(copy_body(source.id.replace("/source", "/no-such")))
    assert (error.status_code, error.error.code) == (404, "NotFound")
    error = refused(copy_body(source.id.replace("/disks/", "/snapshots/")))
    assert error.status_code == 404
    error = refused(copy_body(emulator.app.group_id(emulator.subscription_id, GROUP)))
    assert error.error.code == "InvalidParameter"
    error = refused(copy_body("not-an-id"))
    assert error.error.code == "InvalidParameter"
    error = refused(copy_body(source.id, diskSizeGB=2))
    assert error.error.code == "InvalidParameter"
    assert "diskSizeGB" in error.message
    error = refused(copy_body(source.id, hyperVGeneration="V1"))
    assert error.error.code == "InvalidParameter"
    assert "hyperVGeneration" in error.message
    body = copy_body(source.id)
    del body["properties"]["creationData"]["sourceResourceId"]
    error = refused(body)
    assert (error.error.code, error.status_code) == ("BadRequest", 400)
    body = copy_body(source.id)
    body["properties"]["creationData"]["uploadSizeBytes"] = 21 * MIB + 512
    assert "only allowed with createOption Upload" in refused(body).message
    body = copy_body(source.id)
    body["location"] = "eastus"
    assert "same region" in refused(body).message
    names = {d.name for d in sdk.compute.disks.list_by_resource_group(GROUP)}
    assert names == {"uploading", "source"}


def test_a_disk_stays_in_its_region(sdk):
    sdk.upload_disk(GROUP, "d")
    body = upload_disk_body(21 * MIB + 512)
    body["location"] = "eastus"
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", body))
    assert (error.status_code, error.error.code) == (409, "InvalidResourceLocation")
    assert "cannot be created in location 'eastus'" in error.message

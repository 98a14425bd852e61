"""The emulator refuses what Azure refuses: each rule broken through the real SDK.

Bodies that the SDK's models would clean up (unknown members, read-only
members) are sent as raw JSON through the same SDK call, as a client built
from another SDK or a template would send them.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import json
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient
from azure.storage.extensions import checksums as azure_checksums

from nixos_azure_publish.emulator.settings import SECURE_BOOT_VIOLATION
from nixos_azure_publish.emulator.testing import vm_body
from tests.helpers.sdk import sdk_in_group
from tests.integration.conftest import error_of

GROUP = "vm-rules"
LOCATION = "westeurope"


def raw(body: dict[str, Any]) -> io.BytesIO:
    return io.BytesIO(json.dumps(body).encode())


@pytest.fixture
def sdk(emulator):
    return sdk_in_group(emulator, GROUP, LOCATION, replication_seconds=0.05)


def definition(sdk, name="nixos", *, security=None, generation="V2", architecture="x64"):
    return sdk.create_definition(
        GROUP,
        "gallery",
        name,
        security=security,
        hyperVGeneration=generation,
        architecture=architecture,
    )


def version_of(sdk, name="nixos", **kwargs):
    """A replicated version of a new definition *name*, from a managed image."""
    generation = kwargs.get("generation", "V2")
    disk = sdk.upload_disk(GROUP, f"disk-{name}", generation=generation)
    image = sdk.create_image(GROUP, f"image-{name}", disk.id, generation=generation)
    sdk.create_gallery(GROUP)
    definition(sdk, name, **kwargs)
    return sdk.create_version(GROUP, "gallery", name, "1.0.0", image.id, regions=(LOCATION,))


def assert_error(error, status, code, *, target=None, message=None):
    assert (error.status_code, error.error.code) == (status, code), error.message
    if target is not None:
        assert error.error.target == target
    if message is not None:
        assert message in error.error.message


# -- request bodies against the specs ---------------------------------------------------------


def test_unknown_members_are_refused_with_azures_message_and_path(sdk):
    body: dict[str, Any] = {
        "location": LOCATION,
        "properties": {
            "creationData": {"createOption": "Upload", "uploadSizeBytes": 20 * 1024**2 + 512},
            "osType": "Linux",
            "uploadSize": 1,
        },
    }
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", raw(body)))
    assert_error(
        error,
        400,
        "InvalidRequestContent",
        target="properties.uploadSize",
        message="Could not find member 'uploadSize' on object of type 'DiskProperties'. "
        "Path 'properties.uploadSize'",
    )
    # Deeper in the body, and in an array.
    body["properties"].pop("uploadSize")
    body["properties"]["creationData"]["sourceUri"] = "https://example.invalid/a.vhd"
    body["properties"]["creationData"]["uploadBytes"] = 1
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", raw(body)))
    assert_error(error, 400, "InvalidRequestContent", target="properties.creationData.uploadBytes")


def test_unknown_members_of_a_vm_and_a_version_are_refused(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id, os_disk={"createOption": "FromImage", "sku": "x"})
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", raw(body))
    )
    assert_error(error, 400, "InvalidRequestContent", target="properties.storageProfile.osDisk.sku")
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.begin_create_or_update(
            GROUP,
            "gallery",
            "nixos",
            "1.0.1",
            raw(
                {
                    "location": LOCATION,
                    "properties": {
                        "publishingProfile": {"targetRegions": [{"name": LOCATION, "copies": 1}]},
                        "storageProfile": {"source": {"id": "x"}},
                    },
                }
            ),
        )
    )
    assert_error(
        error,
        400,
        "InvalidRequestContent",
        target="properties.publishingProfile.targetRegions[0].copies",
    )


def test_read_only_members_are_refused(sdk):
    disk = sdk.upload_disk(GROUP, "disk")
    sdk.create_gallery(GROUP)
    definition(sdk)
    body = {
        "location": LOCATION,
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": LOCATION}]},
            "storageProfile": {"osDiskImage": {"source": {"id": disk.id}, "sizeInGB": 1}},
        },
    }
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.begin_create_or_update(
            GROUP, "gallery", "nixos", "1.0.0", raw(body)
        )
    )
    assert_error(
        error, 400, "InvalidParameter", target="properties.storageProfile.osDiskImage.sizeInGB"
    )
    create = {
        "location": LOCATION,
        "properties": {
            "creationData": {"createOption": "Upload", "uploadSizeBytes": 20 * 1024**2 + 512},
            "diskState": "Unattached",
        },
    }
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", raw(create)))
    assert_error(error, 400, "InvalidParameter", target="properties.diskState")


def test_values_outside_open_enums_are_refused(sdk):
    sdk.create_gallery(GROUP)
    bad_definition = {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "osState": "Generalized",
            "architecture": "Arm65",
            "identifier": {"publisher": "p", "offer": "o", "sku": "s"},
        },
    }
    error = error_of(
        lambda: sdk.compute.gallery_images.begin_create_or_update(
            GROUP, "gallery", "d", bad_definition
        )
    )
    assert_error(error, 400, "InvalidParameter", target="properties.architecture")
    disk = sdk.upload_disk(GROUP, "disk")
    definition(sdk)
    version = {
        "location": LOCATION,
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": LOCATION}], "replicationMode": "Fast"},
            "storageProfile": {"osDiskImage": {"source": {"id": disk.id}}},
        },
    }
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.begin_create_or_update(
            GROUP, "gallery", "nixos", "1.0.0", version
        )
    )
    assert_error(
        error, 400, "InvalidParameter", target="properties.publishingProfile.replicationMode"
    )
    error = error_of(
        lambda: sdk.compute.gallery_sharing_profile.begin_update(
            GROUP, "gallery", {"operationType": "Publish"}
        )
    )
    assert_error(error, 400, "InvalidParameter", target="operationType")


def test_definition_features_are_azures_own(sdk):
    sdk.create_gallery(GROUP)
    for feature in (
        {"name": "SecureBootSupported", "value": "True"},
        {"name": "SecurityType", "value": "Trusted"},
        {"name": "DiskControllerTypes", "value": "IDE"},
    ):
        body = {
            "location": LOCATION,
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "identifier": {"publisher": "p", "offer": "o", "sku": "s"},
                "features": [feature],
            },
        }
        error = error_of(
            functools.partial(
                sdk.compute.gallery_images.begin_create_or_update, GROUP, "gallery", "d", body
            )
        )
        assert_error(error, 400, "InvalidParameter", target="galleryImage.properties.features")


# -- catalogues -------------------------------------------------------------------------------


def test_regions_azure_does_not_have_are_refused(sdk):
    error = error_of(lambda: sdk.create_group("elsewhere", "westeuropa"))
    assert error.status_code == 400
    assert sdk.emulator.requests[-1].error_code == "LocationNotAvailableForResourceGroup"
    body = {
        "location": "westeuropa",
        "properties": {
            "creationData": {"createOption": "Upload", "uploadSizeBytes": 20 * 1024**2 + 512}
        },
    }
    error = error_of(lambda: sdk.compute.disks.begin_create_or_update(GROUP, "d", body))
    assert_error(
        error, 400, "LocationNotAvailableForResourceType", message="'Microsoft.Compute/disks'"
    )
    disk = sdk.upload_disk(GROUP, "disk")
    sdk.create_gallery(GROUP)
    definition(sdk)
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.begin_create_or_update(
            GROUP,
            "gallery",
            "nixos",
            "1.0.0",
            {
                "location": LOCATION,
                "properties": {
                    "publishingProfile": {
                        "targetRegions": [{"name": LOCATION}, {"name": "Norh Europe"}]
                    },
                    "storageProfile": {"osDiskImage": {"source": {"id": disk.id}}},
                },
            },
        )
    )
    assert_error(error, 400, "LocationNotAvailableForResourceType")


@pytest.mark.parametrize(
    ("size", "code", "message"),
    [
        ("Standard_B3s", "InvalidParameter", "is not available in the current region"),
        ("Standard_A2_v2", "InvalidParameter", "cannot boot Hypervisor Generation '2'"),
        ("Standard_D2ps_v5", "InvalidParameter", "cannot boot an image of architecture 'x64'"),
        ("Standard_DC2as_v5", "InvalidParameter", "is not supported for Trusted Launch"),
    ],
)
def test_vm_sizes_that_cannot_boot_the_image_are_refused(sdk, size, code, message):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(
        version.id,
        nic.id,
        securityProfile={
            "securityType": "TrustedLaunch",
            "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
        },
    )
    body["properties"]["hardwareProfile"]["vmSize"] = size
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(error, 400, code, target="properties.hardwareProfile.vmSize", message=message)


def test_an_arm64_image_boots_on_an_arm64_size_only(sdk):
    version = version_of(sdk, "arm", architecture="Arm64", security="Standard")
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id)
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(error, 400, "InvalidParameter", message="cannot boot an image of architecture")
    body["properties"]["hardwareProfile"]["vmSize"] = "Standard_D2ps_v5"
    vm = sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    assert vm.provisioning_state == "Succeeded"


def test_a_size_without_capacity_is_sku_not_available(sdk, emulator):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    emulator.settings.unavailable_sizes.add((LOCATION, "Standard_B2s"))
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP, "vm", vm_body(version.id, nic.id)
        )
    )
    assert_error(error, 409, "SkuNotAvailable")


# -- VM security ------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["TrustedLaunchSupported", "Bogus"])
def test_a_vm_security_type_is_trusted_launch_or_confidential(sdk, security):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id, securityProfile={"securityType": security})
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(
        error,
        400,
        "InvalidParameter",
        target="properties.securityProfile.securityType",
        message="Allowed values are 'TrustedLaunch', 'ConfidentialVM'",
    )


def test_a_delete_option_outside_azures_list_is_refused(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(
        version.id, nic.id, os_disk={"createOption": "FromImage", "deleteOption": "Keep"}
    )
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(
        error, 400, "InvalidParameter", target="properties.storageProfile.osDisk.deleteOption"
    )


def test_uefi_settings_need_a_security_type(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id, securityProfile={"uefiSettings": {"vTpmEnabled": True}})
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(error, 400, "InvalidParameter", target="properties.securityProfile.uefiSettings")


def test_standard_security_type_is_accepted_on_current_api_versions(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id, securityProfile={"securityType": "Standard"})
    vm = sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    assert vm.security_profile.security_type == "Standard"


def serial_log(sdk, name="vm"):
    data = sdk.compute.virtual_machines.retrieve_boot_diagnostics_data(GROUP, name)
    blob = BlobClient.from_blob_url(data.serial_console_log_blob_uri)
    return blob.download_blob().readall().decode()


def test_secure_boot_stops_an_unsigned_loader(sdk, emulator):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    secure = {
        "securityType": "TrustedLaunch",
        "uefiSettings": {"secureBootEnabled": True, "vTpmEnabled": True},
    }
    sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(version.id, nic.id, securityProfile=secure)
    ).result()
    log = serial_log(sdk)
    assert log == SECURE_BOOT_VIOLATION
    assert "login:" not in log
    sdk.compute.virtual_machines.begin_delete(GROUP, "vm").result()
    emulator.settings.signed_images = True
    sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(version.id, nic.id, securityProfile=secure)
    ).result()
    assert serial_log(sdk).rstrip().endswith("login:")


def test_a_confidential_vm_needs_its_prerequisites(sdk):
    trusted = version_of(sdk, "tl", security="TrustedLaunchSupported")
    confidential = version_of(sdk, "cvm", security="ConfidentialVMSupported")
    nic = sdk.create_nic(GROUP)
    profile = {
        "securityType": "ConfidentialVM",
        "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
    }
    encrypted = {
        "createOption": "FromImage",
        "managedDisk": {"securityProfile": {"securityEncryptionType": "VMGuestStateOnly"}},
    }

    def create(version, size="Standard_DC2as_v5", security=profile, os_disk=encrypted):
        body = vm_body(version.id, nic.id, os_disk=os_disk, securityProfile=security)
        body["properties"]["hardwareProfile"]["vmSize"] = size
        return sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body)

    error = error_of(lambda: create(trusted))
    assert_error(error, 400, "InvalidParameter", message="does not support a ConfidentialVM")
    error = error_of(lambda: create(confidential, size="Standard_B2s"))
    assert_error(error, 400, "InvalidParameter", target="properties.hardwareProfile.vmSize")
    error = error_of(lambda: create(confidential, os_disk={"createOption": "FromImage"}))
    assert_error(error, 400, "InvalidParameter", message="securityEncryptionType")
    no_tpm = {**profile, "uefiSettings": {"vTpmEnabled": False}}
    error = error_of(lambda: create(confidential, security=no_tpm))
    assert_error(error, 400, "InvalidParameter", message="vTpmEnabled")
    assert create(confidential).result().provisioning_state == "Succeeded"


# -- what users call --------------------------------------------------------------------------


def test_the_os_disk_gets_the_name_asked_for(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(
        version.id, nic.id, os_disk={"name": "smoke-osdisk", "createOption": "FromImage"}
    )
    vm = sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    assert vm.storage_profile.os_disk.name == "smoke-osdisk"
    assert sdk.compute.disks.get(GROUP, "smoke-osdisk").managed_by == vm.id


def test_a_put_on_an_existing_vm_updates_what_may_change(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id)
    first = sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    body["tags"] = {"role": "smoke"}
    body["properties"]["hardwareProfile"]["vmSize"] = "Standard_D2s_v5"
    updated = sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    assert updated.vm_id == first.vm_id
    assert updated.hardware_profile.vm_size == "Standard_D2s_v5"
    assert updated.tags == {"role": "smoke"}
    body["properties"]["osProfile"]["adminUsername"] = "root2"
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(error, 409, "PropertyChangeNotAllowed", target="osProfile.adminUsername")
    body["properties"]["osProfile"]["adminUsername"] = "nixos"
    body["location"] = "northeurope"
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert_error(error, 409, "InvalidResourceLocation")


def test_subscription_scope_lists_find_resources_of_every_group(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(version.id, nic.id)
    ).result()
    sdk.create_group("other", "northeurope")
    sdk.compute.galleries.begin_create_or_update(
        "other", "gallery2", {"location": "northeurope"}
    ).result()
    compute, network = sdk.compute, sdk.network
    assert [vm.name for vm in compute.virtual_machines.list_all()] == ["vm"]
    assert sorted(g.name for g in compute.galleries.list()) == ["gallery", "gallery2"]
    assert [i.name for i in compute.images.list()] == ["image-nixos"]
    assert [n.name for n in network.virtual_networks.list_all()] == ["vnet"]
    assert [n.name for n in network.network_interfaces.list_all()] == ["nic"]
    assert [n.name for n in network.public_ip_addresses.list_all()] == ["ip"]
    assert list(network.network_security_groups.list_all()) == []


# What `az` and Terraform's azurerm send (see the emulator's apiversions module).
OTHER_CLIENTS = {
    "disks": ["2023-04-02", "2025-01-02"],
    "galleries": ["2021-10-01", "2022-03-03", "2023-07-03", "2024-03-03"],
    "compute": ["2022-03-01", "2024-03-01", "2024-07-01", "2024-11-01"],
    "network": ["2024-03-01", "2024-05-01", "2024-07-01"],
}


def test_the_api_versions_other_clients_send_are_served(sdk):
    version_of(sdk)
    compute, network = sdk.compute, sdk.network
    for api in OTHER_CLIENTS["disks"]:
        assert compute.disks.get(GROUP, "disk-nixos", api_version=api).name == "disk-nixos"
    for api in OTHER_CLIENTS["galleries"]:
        assert compute.galleries.get(GROUP, "gallery", api_version=api).name == "gallery"
        version = compute.gallery_image_versions.get(
            GROUP, "gallery", "nixos", "1.0.0", api_version=api
        )
        assert version.name == "1.0.0"
    for api in OTHER_CLIENTS["compute"]:
        assert compute.images.get(GROUP, "image-nixos", api_version=api).name == "image-nixos"
        assert list(compute.virtual_machines.list(GROUP, api_version=api)) == []
    for api in OTHER_CLIENTS["network"]:
        assert list(network.virtual_networks.list(GROUP, api_version=api)) == []
    error = error_of(lambda: compute.galleries.get(GROUP, "gallery", api_version="2020-09-30"))
    assert_error(error, 400, "NoRegisteredProviderFound")


def test_a_definitions_defaults_follow_the_api_version(sdk):
    sdk.create_gallery(GROUP)
    body: dict[str, Any] = {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "osState": "Generalized",
            "identifier": {"publisher": "p", "offer": "o", "sku": "old"},
        },
    }
    old = sdk.compute.gallery_images.begin_create_or_update(
        GROUP, "gallery", "old", body, api_version="2022-03-03"
    ).result()
    assert old.hyper_v_generation == "V1"
    assert not old.features
    body["properties"]["identifier"]["sku"] = "new"
    new = sdk.compute.gallery_images.begin_create_or_update(GROUP, "gallery", "new", body).result()
    assert new.hyper_v_generation == "V2"
    assert [(f.name, f.value) for f in new.features] == [("SecurityType", "TrustedLaunchSupported")]


def test_standard_security_type_is_refused_before_its_api_version(sdk):
    version = version_of(sdk)
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id, securityProfile={"securityType": "Standard"})
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP, "vm", body, api_version="2024-11-01"
        )
    )
    assert_error(error, 400, "InvalidParameter", target="properties.securityProfile.securityType")


# -- replication that fails -------------------------------------------------------------------


def test_injected_replication_failure_fails_its_region_and_the_version(sdk, emulator):
    disk = sdk.upload_disk(GROUP, "disk")
    sdk.create_gallery(GROUP)
    definition(sdk, security="Standard")
    emulator.faults.fail_replication["northeurope"] = "The storage account is unavailable."
    body = {
        "location": LOCATION,
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": LOCATION}, {"name": "North Europe"}]},
            "storageProfile": {"osDiskImage": {"source": {"id": disk.id}}},
        },
    }
    poller = sdk.compute.gallery_image_versions.begin_create_or_update(
        GROUP, "gallery", "nixos", "1.0.0", body
    )
    error = error_of(poller.result)
    assert error.error.code == "ReplicationJobsNotCompleted"
    assert "northeurope: The storage account is unavailable." in error.message
    version = sdk.compute.gallery_image_versions.get(
        GROUP, "gallery", "nixos", "1.0.0", expand="ReplicationStatus"
    )
    assert version.provisioning_state == "Failed"
    status = version.replication_status
    assert status.aggregated_state == "Failed"
    by_region = {s.region: s for s in status.summary}
    assert by_region["North Europe"].state == "Failed"
    assert by_region["North Europe"].details == "The storage account is unavailable."
    assert by_region[LOCATION].state == "Completed"
    # Not replicated there: a VM in that region cannot boot it.
    nic = sdk.create_nic(GROUP, location="northeurope", names=("vnet-ne", "ip-ne", "nic-ne"))
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP, "vm", vm_body(version.id, nic.id, "northeurope")
        )
    )
    assert_error(error, 404, "GalleryImageNotFound")


# -- sources of Trusted Launch-type definitions (observed behaviour) --------------------------


@pytest.mark.parametrize(
    "security",
    ["TrustedLaunchSupported", "TrustedLaunch", "TrustedLaunchAndConfidentialVmSupported"],
)
def test_a_trusted_launch_definition_takes_no_disk_as_source(sdk, security):
    disk = sdk.upload_disk(GROUP, "disk")
    sdk.create_gallery(GROUP)
    definition(sdk, security=security)
    for storage in (
        {"osDiskImage": {"source": {"id": disk.id}}},
        {"source": {"id": disk.id}},
    ):
        body = {
            "location": LOCATION,
            "properties": {
                "publishingProfile": {"targetRegions": [{"name": LOCATION}]},
                "storageProfile": storage,
            },
        }
        error = error_of(
            functools.partial(
                sdk.compute.gallery_image_versions.begin_create_or_update,
                GROUP,
                "gallery",
                "nixos",
                "1.0.0",
                body,
            )
        )
        assert_error(
            error,
            400,
            "InvalidParameter",
            message="Currently only Vhd Blob, User Image and Gallery Image Version sources",
        )
    # A managed image made from that disk is accepted.
    image = sdk.create_image(GROUP, "image", disk.id)
    version = sdk.create_version(GROUP, "gallery", "nixos", "1.0.0", image.id, regions=(LOCATION,))
    assert version.provisioning_state == "Succeeded"


def test_a_standard_definition_takes_a_disk_as_source(sdk):
    disk = sdk.upload_disk(GROUP, "disk")
    sdk.create_gallery(GROUP)
    definition(sdk, security="Standard")
    version = sdk.create_version(
        GROUP, "gallery", "nixos", "1.0.0", disk.id, regions=(LOCATION,), os_disk=True
    )
    assert version.provisioning_state == "Succeeded"


# -- the blob front: Put Page checksums -------------------------------------------------------


def crc64(data: bytes) -> str:
    """The CRC64 header value, by the Azure SDK's own implementation (the reference)."""
    return base64.b64encode(azure_checksums.crc64.compute(data, 0).to_bytes(8, "little")).decode()


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - Azure's header


def test_put_page_checksums_are_verified_like_azure(sdk, emulator):
    body = {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "creationData": {"createOption": "Upload", "uploadSizeBytes": 20 * 1024**2 + 512},
        },
    }
    sdk.compute.disks.begin_create_or_update(GROUP, "d", body).result()
    access = sdk.compute.disks.begin_grant_access(
        GROUP, "d", {"access": "Write", "durationInSeconds": 600}
    ).result()
    blob = BlobClient.from_blob_url(access.access_sas)
    page = b"\x5a" * 512
    other = b"\xa5" * 512
    # Right checksums pass: the SDK's own Content-MD5, and a CRC64 header.
    blob.upload_page(page, offset=0, length=512, validate_content=True)
    blob.upload_page(page, offset=512, length=512, headers={"x-ms-content-crc64": crc64(page)})
    cases = [
        ({"Content-MD5": md5(other)}, "Md5Mismatch"),
        ({"x-ms-content-crc64": crc64(other)}, "Crc64Mismatch"),
        ({"Content-MD5": md5(page), "x-ms-content-crc64": crc64(page)}, "InvalidHeaderValue"),
    ]
    for headers, code in cases:
        with pytest.raises(HttpResponseError) as info:
            blob.upload_page(page, offset=1024, length=512, headers=headers)
        assert info.value.status_code == 400
        assert getattr(info.value, "error_code", None) == code
    # Nothing of the refused writes was stored.
    stored = blob.download_blob(offset=0, length=1536).readall()
    assert stored == page + page + b"\0" * 512

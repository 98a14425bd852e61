"""Azure's rules for the smoke-test VM and its network resources."""

from __future__ import annotations

from typing import Any

import pytest
from azure.storage.blob import BlobClient

from nixos_azure_publish.emulator.settings import DEFAULT_SERIAL_LOG
from nixos_azure_publish.emulator.testing import vm_body
from tests.helpers.sdk import sdk_in_group
from tests.integration.conftest import error_of

GROUP = "vm-rules"
LOCATION = "westeurope"


@pytest.fixture
def sdk(emulator):
    return sdk_in_group(emulator, GROUP, LOCATION, replication_seconds=0.1)


@pytest.fixture
def version(sdk):
    """A replicated version (westeurope, northeurope) of a V2 TrustedLaunchSupported image,
    made (as Azure requires for that security type) from a managed image of the disk."""
    disk = sdk.upload_disk(GROUP, "disk")
    image = sdk.create_image(GROUP, "image", disk.id)
    sdk.create_gallery(GROUP)
    sdk.create_definition(GROUP, "gallery", "nixos")
    return sdk.create_version(
        GROUP, "gallery", "nixos", "1.0.0", image.id, regions=("westeurope", "northeurope")
    )


def test_default_serial_log_ends_at_a_login_prompt(sdk, version):
    nic = sdk.create_nic(GROUP)
    sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(version.id, nic.id)
    ).result()
    data = sdk.compute.virtual_machines.retrieve_boot_diagnostics_data(GROUP, "vm")
    text = BlobClient.from_blob_url(data.serial_console_log_blob_uri).download_blob().readall()
    assert text.decode() == DEFAULT_SERIAL_LOG
    assert text.decode().rstrip().endswith("login:")
    view = sdk.compute.virtual_machines.instance_view(GROUP, "vm")
    assert "PowerState/running" in [s.code for s in view.statuses]
    # The password never comes back.
    assert "adminPassword" not in sdk.compute.virtual_machines.get(GROUP, "vm").os_profile


def test_latest_skips_excluded_versions(sdk, version):
    nic = sdk.create_nic(GROUP)
    source_id = version.storage_profile.source.id
    image_id = version.id.rsplit("/versions/", 1)[0]

    def exclude_from_latest(*, exclude):
        update = {
            "properties": {
                "publishingProfile": {"excludeFromLatest": exclude},
                "storageProfile": {"source": {"id": source_id}},
            }
        }
        sdk.compute.gallery_image_versions.begin_update(
            GROUP, "gallery", "nixos", "1.0.0", update
        ).result()

    exclude_from_latest(exclude=True)
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP, "vm", vm_body(image_id, nic.id)
        )
    )
    assert error.error.code == "GalleryImageNotFound"
    exclude_from_latest(exclude=False)
    vm = sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(image_id, nic.id)
    ).result()
    assert vm.storage_profile.image_reference.exact_version == "1.0.0"


def test_image_must_be_replicated_to_the_vm_region(sdk, version):
    nic = sdk.create_nic(GROUP, location="eastus", names=("vnet-east", "ip-east", "nic-east"))
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP, "vm", vm_body(version.id, nic.id, "eastus")
        )
    )
    assert error.status_code == 404
    assert error.error.code == "GalleryImageNotFound"


def test_nic_can_serve_one_vm_and_cannot_be_deleted_under_it(sdk, version):
    nic = sdk.create_nic(GROUP)
    sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(version.id, nic.id)
    ).result()
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP, "vm2", vm_body(version.id, nic.id)
        )
    )
    assert error.error.code == "NicInUse"
    error = error_of(lambda: sdk.network.network_interfaces.begin_delete(GROUP, "nic"))
    assert error.error.code == "NicInUse"
    error = error_of(lambda: sdk.network.public_ip_addresses.begin_delete(GROUP, "ip"))
    assert error.error.code == "PublicIPAddressInUse"
    error = error_of(lambda: sdk.network.virtual_networks.begin_delete(GROUP, "vnet"))
    assert error.error.code == "InUseSubnetCannotBeDeleted"
    # The OS disk is attached: no SAS, no delete.
    os_disk = sdk.compute.virtual_machines.get(GROUP, "vm").storage_profile.os_disk.name
    error = error_of(
        lambda: sdk.compute.disks.begin_grant_access(
            GROUP, os_disk, {"access": "Read", "durationInSeconds": 60}
        )
    )
    assert error.error.code == "OperationNotAllowed"
    error = error_of(lambda: sdk.compute.disks.begin_delete(GROUP, os_disk))
    assert error.error.code == "OperationNotAllowed"
    # Without deleteOption the VM leaves its disk and NIC behind, detached.
    sdk.compute.virtual_machines.begin_delete(GROUP, "vm").result()
    assert sdk.compute.disks.get(GROUP, os_disk).disk_state == "Unattached"
    sdk.network.network_interfaces.begin_delete(GROUP, "nic").result()
    sdk.network.public_ip_addresses.begin_delete(GROUP, "ip").result()
    sdk.network.virtual_networks.begin_delete(GROUP, "vnet").result()


def test_nic_needs_an_existing_subnet(sdk):
    vnet_id = (
        f"/subscriptions/{sdk.emulator.subscription_id}/resourceGroups/{GROUP}"
        "/providers/Microsoft.Network/virtualNetworks/none/subnets/default"
    )
    error = error_of(
        lambda: sdk.network.network_interfaces.begin_create_or_update(
            GROUP,
            "nic",
            {
                "location": LOCATION,
                "properties": {
                    "ipConfigurations": [{"name": "c", "properties": {"subnet": {"id": vnet_id}}}]
                },
            },
        )
    )
    assert error.error.code == "InvalidResourceReference"


def test_subnet_must_be_inside_the_address_space(sdk):
    error = error_of(
        lambda: sdk.network.virtual_networks.begin_create_or_update(
            GROUP,
            "vnet",
            {
                "location": LOCATION,
                "properties": {
                    "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                    "subnets": [{"name": "s", "properties": {"addressPrefix": "10.1.0.0/24"}}],
                },
            },
        )
    )
    assert error.error.code == "NetcfgSubnetRangeOutsideVnet"


def test_boot_diagnostics_must_be_enabled(sdk, version):
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id)
    del body["properties"]["diagnosticsProfile"]
    sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    error = error_of(
        lambda: sdk.compute.virtual_machines.retrieve_boot_diagnostics_data(GROUP, "vm")
    )
    assert error.error.code == "OperationNotAllowed"


def test_linux_vm_needs_a_credential(sdk, version):
    nic = sdk.create_nic(GROUP)
    body = vm_body(version.id, nic.id)
    del body["properties"]["osProfile"]["adminPassword"]
    error = error_of(lambda: sdk.compute.virtual_machines.begin_create_or_update(GROUP, "vm", body))
    assert error.error.code == "InvalidParameter"


def test_trusted_launch_needs_a_supporting_image(sdk, version):
    nic = sdk.create_nic(GROUP)
    # The version's definition is TrustedLaunchSupported: a TrustedLaunch VM works.
    sdk.compute.virtual_machines.begin_create_or_update(
        GROUP, "vm", vm_body(version.id, nic.id, securityProfile={"securityType": "TrustedLaunch"})
    ).result()
    sdk.compute.virtual_machines.begin_delete(GROUP, "vm").result()
    disk = sdk.upload_disk(GROUP, "disk-v1", generation="V1")
    sdk.create_definition(GROUP, "gallery", "legacy", hyperVGeneration="V1")
    legacy = sdk.create_version(GROUP, "gallery", "legacy", "1.0.0", disk.id, os_disk=True)
    error = error_of(
        lambda: sdk.compute.virtual_machines.begin_create_or_update(
            GROUP,
            "vm",
            vm_body(legacy.id, nic.id, securityProfile={"securityType": "TrustedLaunch"}),
        )
    )
    assert error.error.code == "InvalidParameter"


def test_vm_from_a_community_image(sdk):
    disk = sdk.upload_disk(GROUP, "disk")
    compute = sdk.compute
    gallery = sdk.create_gallery(GROUP, "public", community="nixos")
    # Standard: the version comes straight from the disk.
    sdk.create_definition(GROUP, "public", "nixos", security="Standard")
    sdk.create_version(GROUP, "public", "nixos", "1.2.3", disk.id, os_disk=True)
    public = gallery.sharing_profile.community_gallery_info.public_names[0]
    nic = sdk.create_nic(GROUP)
    body = vm_body(None, nic.id)
    body["properties"]["storageProfile"]["imageReference"] = {
        "communityGalleryImageId": f"/CommunityGalleries/{public}/Images/nixos/Versions/latest"
    }
    vm = compute.virtual_machines.begin_create_or_update(GROUP, "vm", body).result()
    assert vm.storage_profile.image_reference.exact_version == "1.2.3"


def test_security_group_and_subnet_reads(sdk):
    nsg = sdk.network.network_security_groups.begin_create_or_update(
        GROUP,
        "nsg",
        {
            "location": LOCATION,
            "properties": {
                "securityRules": [
                    {
                        "name": "ssh",
                        "properties": {
                            "priority": 100,
                            "direction": "Inbound",
                            "access": "Allow",
                            "protocol": "Tcp",
                            "sourceAddressPrefix": "*",
                            "sourcePortRange": "*",
                            "destinationAddressPrefix": "*",
                            "destinationPortRange": "22",
                        },
                    }
                ]
            },
        },
    ).result()
    assert [rule.name for rule in nsg.security_rules] == ["ssh"]
    nic = sdk.create_nic(GROUP)
    subnet_id = nic.ip_configurations[0].subnet.id
    subnet = sdk.network.subnets.get(GROUP, "vnet", "default")
    assert subnet.id == subnet_id
    assert [c.id for c in subnet.ip_configurations] == [nic.ip_configurations[0].id]
    body: Any = {
        "location": LOCATION,
        "properties": {
            "ipConfigurations": [{"name": "c", "properties": {"subnet": {"id": subnet_id}}}],
            "networkSecurityGroup": {"id": nsg.id + "-missing"},
        },
    }
    error = error_of(
        lambda: sdk.network.network_interfaces.begin_create_or_update(GROUP, "nic2", body)
    )
    assert error.error.code == "InvalidResourceReference"
    body["properties"]["networkSecurityGroup"]["id"] = nsg.id
    nic2 = sdk.network.network_interfaces.begin_create_or_update(GROUP, "nic2", body).result()
    assert nic2.network_security_group.id == nsg.id
    error = error_of(lambda: sdk.network.network_security_groups.begin_delete(GROUP, "nsg"))
    assert error.error.code == "InUseNetworkSecurityGroupCannotBeDeleted"
    sdk.network.network_interfaces.begin_delete(GROUP, "nic2").result()
    sdk.network.network_security_groups.begin_delete(GROUP, "nsg").result()
    assert list(sdk.network.network_security_groups.list(GROUP)) == []

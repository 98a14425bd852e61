"""The manual flow of nixpkgs' Azure README as steps through the real SDK clients.

Group -> upload disk -> grant -> put pages into the SAS -> revoke -> managed image ->
gallery -> definition -> version in 3 regions -> replication Completed -> VM from the
version -> serial log -> delete everything. The flow test runs them in order; the spec
validation records their traffic.
"""

from __future__ import annotations

import time

import pytest
from azure.storage.blob import BlobClient

from nixos_azure_publish.emulator.testing import fixed_vhd_footer

MIB = 1024 * 1024
LOCATION = "westeurope"
REGIONS = ["westeurope", "northeurope", "eastus"]


def step_upload(emulator, sdk):
    compute = sdk.compute
    virtual_size = 21 * MIB
    poller = compute.disks.begin_create_or_update(
        "nixos-images",
        "nixos-upload",
        {
            "location": LOCATION,
            "tags": {"nixos-store-hash": "abc123"},
            "properties": {
                "osType": "Linux",
                "hyperVGeneration": "V2",
                "creationData": {"createOption": "Upload", "uploadSizeBytes": virtual_size + 512},
            },
        },
    )
    disk = poller.result()
    assert disk.disk_state == "ReadyToUpload"
    assert disk.tags == {"nixos-store-hash": "abc123"}

    access = compute.disks.begin_grant_access(
        "nixos-images", "nixos-upload", {"access": "Write", "durationInSeconds": 3600}
    ).result()
    assert compute.disks.get("nixos-images", "nixos-upload").disk_state == "ActiveUpload"
    blob = BlobClient.from_blob_url(access.access_sas)
    assert blob.get_blob_properties().size == virtual_size + 512
    payload = b"\x42" * (4 * MIB)
    blob.upload_page(payload, offset=MIB, length=len(payload))
    blob.upload_page(fixed_vhd_footer(virtual_size), offset=virtual_size, length=512)

    compute.disks.begin_revoke_access("nixos-images", "nixos-upload").result()
    disk = compute.disks.get("nixos-images", "nixos-upload")
    assert disk.disk_state == "Unattached"
    with pytest.raises(Exception, match="authenticate"):  # the SAS is revoked
        blob.upload_page(payload[:512], offset=0, length=512)
    # The bytes are still in the disk's blob (read through the emulator's own account).
    container = emulator.app.store.get(disk.id).meta["container"]
    assert emulator.app.blobs.read(container, MIB, 16) == b"\x42" * 16
    return disk


def step_image(sdk, disk):
    image = sdk.create_image("nixos-images", "nixos-image", disk.id, location=LOCATION)
    assert image.provisioning_state == "Succeeded"
    return image


def step_gallery_version(emulator, sdk, image):
    """A version of a TrustedLaunchSupported definition, from the managed image (such a
    definition takes no disk as a source)."""
    compute = sdk.compute
    gallery = sdk.create_gallery("nixos-images", "nixos_gallery", location=LOCATION)
    assert gallery.identifier.unique_name.endswith("-NIXOS_GALLERY")
    definition = sdk.create_definition(
        "nixos-images",
        "nixos_gallery",
        "nixos",
        location=LOCATION,
        security="TrustedLaunchSupported",
        hyperVGeneration="V2",
        architecture="x64",
        identifier={"publisher": "NixOS", "offer": "nixos", "sku": "25.05"},
    )
    assert definition.provisioning_state == "Succeeded"

    emulator.settings.replication_seconds = 0.6
    version_poller = compute.gallery_image_versions.begin_create_or_update(
        "nixos-images",
        "nixos_gallery",
        "nixos",
        "25.5.1",
        {
            "location": LOCATION,
            "properties": {
                "publishingProfile": {
                    "targetRegions": [
                        {"name": region, "regionalReplicaCount": 1} for region in REGIONS
                    ],
                    "excludeFromLatest": True,
                },
                "storageProfile": {"source": {"id": image.id}},
            },
        },
        polling=False,
    )
    seen_states: set[str] = set()
    progress_seen: set[int] = set()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        version = compute.gallery_image_versions.get(
            "nixos-images", "nixos_gallery", "nixos", "25.5.1", expand="ReplicationStatus"
        )
        status = version.replication_status
        seen_states.add(status.aggregated_state)
        progress_seen.update(s.progress for s in status.summary)
        if status.aggregated_state == "Completed":
            break
        time.sleep(0.1)
    assert seen_states == {"InProgress", "Completed"}
    assert {s.region for s in status.summary} == set(REGIONS)
    assert all(s.state == "Completed" and s.progress == 100 for s in status.summary)
    assert any(0 < p < 100 for p in progress_seen)
    assert version.provisioning_state == "Succeeded"
    assert version.publishing_profile.exclude_from_latest is True
    del version_poller

    # Promote: include the version in "latest" once it is tested.
    version = compute.gallery_image_versions.begin_update(
        "nixos-images",
        "nixos_gallery",
        "nixos",
        "25.5.1",
        {
            "properties": {
                "publishingProfile": {"excludeFromLatest": False},
                "storageProfile": {"source": {"id": image.id}},
            }
        },
    ).result()
    assert version.publishing_profile.exclude_from_latest is False
    return version


def step_smoke_test_vm(emulator, sdk, version):
    emulator.settings.serial_log = "<<< NixOS Stage 2 >>>\nnixos login: "
    nic = sdk.create_nic(
        "nixos-images",
        location=LOCATION,
        names=("smoke-vnet", "smoke-ip", "smoke-nic"),
        ip_sku="Standard",
    )
    network = sdk.network
    assert nic.provisioning_state == "Succeeded"
    vm = sdk.compute.virtual_machines.begin_create_or_update(
        "nixos-images",
        "smoke-vm",
        {
            "location": LOCATION,
            "properties": {
                "hardwareProfile": {"vmSize": "Standard_B2s"},
                "storageProfile": {
                    "imageReference": {"id": version.id},
                    "osDisk": {
                        "createOption": "FromImage",
                        "deleteOption": "Delete",
                        "managedDisk": {"storageAccountType": "Standard_LRS"},
                    },
                },
                "osProfile": {
                    "computerName": "smoke",
                    "adminUsername": "nixos",
                    "linuxConfiguration": {
                        "disablePasswordAuthentication": True,
                        "ssh": {
                            "publicKeys": [
                                {
                                    "path": "/home/nixos/.ssh/authorized_keys",
                                    "keyData": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample",
                                }
                            ]
                        },
                    },
                },
                "networkProfile": {
                    "networkInterfaces": [
                        {"id": nic.id, "properties": {"primary": True, "deleteOption": "Delete"}}
                    ]
                },
                "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
                "securityProfile": {
                    "securityType": "TrustedLaunch",
                    "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
                },
            },
        },
    ).result()
    assert vm.provisioning_state == "Succeeded"
    assert vm.storage_profile.os_disk.managed_disk.id
    diagnostics = sdk.compute.virtual_machines.retrieve_boot_diagnostics_data(
        "nixos-images", "smoke-vm", sas_uri_expiration_time_in_minutes=60
    )
    serial = BlobClient.from_blob_url(diagnostics.serial_console_log_blob_uri)
    assert serial.download_blob().readall().decode() == "<<< NixOS Stage 2 >>>\nnixos login: "
    view = sdk.compute.virtual_machines.instance_view("nixos-images", "smoke-vm")
    assert "PowerState/running" in [status.code for status in view.statuses]
    assert [v.name for v in sdk.compute.virtual_machines.list("nixos-images")] == ["smoke-vm"]
    assert len(list(sdk.compute.disks.list())) == 2  # the upload disk and the OS disk
    assert [i.name for i in sdk.compute.images.list_by_resource_group("nixos-images")] == [
        "nixos-image"
    ]

    sdk.compute.virtual_machines.begin_delete("nixos-images", "smoke-vm").result()
    # deleteOption Delete took the OS disk and the NIC with the VM.
    assert [d.name for d in sdk.compute.disks.list_by_resource_group("nixos-images")] == [
        "nixos-upload"
    ]
    assert list(network.network_interfaces.list("nixos-images")) == []
    network.public_ip_addresses.begin_delete("nixos-images", "smoke-ip").result()
    network.virtual_networks.begin_delete("nixos-images", "smoke-vnet").result()
    assert list(network.virtual_networks.list("nixos-images")) == []


def step_delete_everything(sdk):
    compute = sdk.compute
    compute.gallery_image_versions.begin_delete(
        "nixos-images", "nixos_gallery", "nixos", "25.5.1"
    ).result()
    compute.gallery_images.begin_delete("nixos-images", "nixos_gallery", "nixos").result()
    compute.galleries.begin_delete("nixos-images", "nixos_gallery").result()
    compute.images.begin_delete("nixos-images", "nixos-image").result()
    compute.disks.begin_delete("nixos-images", "nixos-upload").result()
    assert list(compute.disks.list_by_resource_group("nixos-images")) == []
    assert list(compute.galleries.list_by_resource_group("nixos-images")) == []
    assert sdk.group_request("DELETE", "nixos-images") == 202
    deadline = time.monotonic() + 5
    while sdk.group_request("HEAD", "nixos-images") != 404 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sdk.group_request("HEAD", "nixos-images") == 404


def step_check_log(emulator):
    actions = emulator.requests.actions()
    for needed in (
        "Microsoft.Compute/disks/write",
        "Microsoft.Compute/disks/beginGetAccess/action",
        "Microsoft.Compute/disks/endGetAccess/action",
        "Microsoft.Compute/images/write",
        "Microsoft.Compute/galleries/images/versions/write",
        "Microsoft.Compute/galleries/images/versions/delete",
    ):
        assert needed in actions
    assert all(r.status < 500 for r in emulator.requests)
    assert all("sig=" not in r.path or "sig=REDACTED" in r.path for r in emulator.requests)

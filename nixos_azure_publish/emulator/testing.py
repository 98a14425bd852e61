"""Helpers for code that drives the emulator with the real Azure SDK clients (tests, demos)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient
from azure.storage.blob import BlobClient

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.recording import TrafficRecorder
    from nixos_azure_publish.emulator.server import Emulator

RESOURCE_GROUPS_API = "2021-04-01"


def fixed_vhd_footer(
    virtual_size: int, *, cookie: bytes = b"conectix", disk_type: int = 2
) -> bytes:
    """A 512-byte fixed-VHD footer for a disk of *virtual_size* bytes, checksum included."""
    footer = bytearray(512)
    footer[0:8] = cookie
    footer[8:12] = struct.pack(">I", 2)
    footer[12:16] = struct.pack(">I", 0x00010000)
    footer[16:24] = b"\xff" * 8
    footer[28:32] = b"qem2"
    footer[36:40] = b"Wi2k"
    footer[40:48] = struct.pack(">Q", virtual_size)
    footer[48:56] = struct.pack(">Q", virtual_size)
    footer[60:64] = struct.pack(">I", disk_type)
    footer[64:68] = struct.pack(">I", ~sum(footer) & 0xFFFFFFFF)
    return bytes(footer)


@dataclass(frozen=True)
class Clients:
    """Real SDK clients aimed at a running emulator."""

    compute: ComputeManagementClient
    network: NetworkManagementClient
    emulator: Emulator

    def create_group(self, name: str, location: str) -> dict[str, Any]:
        """Create a resource group (azure-mgmt-resource is not a dependency: a raw ARM PUT)."""
        response = self.compute.send_request(
            HttpRequest(
                "PUT",
                f"{self.emulator.endpoint}/subscriptions/{self.emulator.subscription_id}"
                f"/resourcegroups/{name}?api-version={RESOURCE_GROUPS_API}",
                json={"location": location},
            )
        )
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    def upload_disk(
        self,
        group: str,
        name: str,
        *,
        location: str = "westeurope",
        virtual_size: int = 21 * 1024 * 1024,
        generation: str = "V2",
        footer: bytes | None = None,
        revoke: bool = True,
    ) -> Any:  # noqa: ANN401 - the SDK's Disk model
        """An upload disk holding a tiny fixed VHD (boot sector + footer), revoked: Unattached."""
        body: Any = {  # the SDK's TypedDicts are too strict for a literal
            "location": location,
            "properties": {
                "osType": "Linux",
                "hyperVGeneration": generation,
                "creationData": {"createOption": "Upload", "uploadSizeBytes": virtual_size + 512},
            },
        }
        self.compute.disks.begin_create_or_update(group, name, body).result()
        access = self.compute.disks.begin_grant_access(
            group, name, {"access": "Write", "durationInSeconds": 3600}
        ).result()
        blob = BlobClient.from_blob_url(str(access.access_sas))
        blob.upload_page(b"\xeb\x63\x90" + b"\x00" * 509, offset=0, length=512)
        tail = fixed_vhd_footer(virtual_size) if footer is None else footer
        blob.upload_page(tail, offset=virtual_size, length=512)
        if revoke:
            self.compute.disks.begin_revoke_access(group, name).result()
        return self.compute.disks.get(group, name)

    def create_image(
        self,
        group: str,
        name: str,
        disk_id: str,
        *,
        location: str = "westeurope",
        generation: str = "V2",
    ) -> Any:  # noqa: ANN401 - the SDK's Image model
        """A generalized Linux managed image made from *disk_id*, once it has succeeded."""
        body: Any = {
            "location": location,
            "properties": {
                "hyperVGeneration": generation,
                "storageProfile": {
                    "osDisk": {
                        "osType": "Linux",
                        "osState": "Generalized",
                        "managedDisk": {"id": disk_id},
                    }
                },
            },
        }
        return self.compute.images.begin_create_or_update(group, name, body).result()

    def create_gallery(
        self,
        group: str,
        name: str = "gallery",
        *,
        location: str = "westeurope",
        community: str | None = None,
        **properties: Any,  # noqa: ANN401 - JSON
    ) -> Any:  # noqa: ANN401 - the SDK's Gallery model
        """A gallery; with *community* (a public name prefix), shared with the community."""
        if community is not None:
            properties["sharingProfile"] = {
                "permissions": "Community",
                "communityGalleryInfo": {
                    "publisherUri": "https://nixos.org",
                    "publisherContact": "images@example.org",
                    "eula": "https://nixos.org/licence",
                    "publicNamePrefix": community,
                },
            }
        body: Any = {"location": location, "properties": properties}
        gallery = self.compute.galleries.begin_create_or_update(group, name, body).result()
        if community is not None:
            self.compute.gallery_sharing_profile.begin_update(
                group, name, {"operationType": "EnableCommunity"}
            ).result()
        return gallery

    def create_definition(
        self,
        group: str,
        gallery: str,
        name: str,
        *,
        location: str = "westeurope",
        security: str | None = None,
        **properties: Any,  # noqa: ANN401 - JSON
    ) -> Any:  # noqa: ANN401 - the SDK's GalleryImage model
        """A Linux generalized image definition (identifier p/o/*name*), with *security* type."""
        body: Any = {
            "location": location,
            "properties": {
                "osType": "Linux",
                "osState": "Generalized",
                "identifier": {"publisher": "p", "offer": "o", "sku": name},
                **properties,
            },
        }
        if security is not None:
            body["properties"]["features"] = [{"name": "SecurityType", "value": security}]
        return self.compute.gallery_images.begin_create_or_update(
            group, gallery, name, body
        ).result()

    def create_version(
        self,
        group: str,
        gallery: str,
        definition: str,
        name: str,
        source_id: str,
        *,
        location: str = "westeurope",
        regions: tuple[str, ...] = (),
        os_disk: bool = False,
    ) -> Any:  # noqa: ANN401 - the SDK's GalleryImageVersion model
        """A version from *source_id*: ``source.id`` (a managed image, another version or a
        disk), or with *os_disk* ``osDiskImage.source.id`` (a disk); in *regions* if given."""
        storage = (
            {"osDiskImage": {"source": {"id": source_id}}}
            if os_disk
            else {"source": {"id": source_id}}
        )
        properties: dict[str, Any] = {"storageProfile": storage}
        if regions:
            properties["publishingProfile"] = {"targetRegions": [{"name": r} for r in regions]}
        body: Any = {"location": location, "properties": properties}
        return self.compute.gallery_image_versions.begin_create_or_update(
            group, gallery, definition, name, body
        ).result()

    def create_nic(
        self,
        group: str,
        *,
        location: str = "westeurope",
        names: tuple[str, str, str] = ("vnet", "ip", "nic"),
        ip_sku: str | None = None,
    ) -> Any:  # noqa: ANN401 - the SDK's NetworkInterface model
        """What a test VM needs: a virtual network (subnet ``default``), a public IP and a NIC
        using both, named *names*."""
        vnet_name, ip_name, nic_name = names
        vnet: Any = {
            "location": location,
            "properties": {
                "addressSpace": {"addressPrefixes": ["10.0.0.0/16"]},
                "subnets": [{"name": "default", "properties": {"addressPrefix": "10.0.0.0/24"}}],
            },
        }
        subnet = (
            self.network.virtual_networks.begin_create_or_update(group, vnet_name, vnet)
            .result()
            .subnets[0]
        )
        ip: Any = {"location": location, "properties": {"publicIPAllocationMethod": "Static"}}
        if ip_sku is not None:
            ip["sku"] = {"name": ip_sku}
        address = self.network.public_ip_addresses.begin_create_or_update(
            group, ip_name, ip
        ).result()
        config = {"subnet": {"id": subnet.id}, "publicIPAddress": {"id": address.id}}
        nic: Any = {
            "location": location,
            "properties": {"ipConfigurations": [{"name": "ipconfig1", "properties": config}]},
        }
        return self.network.network_interfaces.begin_create_or_update(group, nic_name, nic).result()

    def group_request(self, method: str, name: str) -> int:
        """Send GET/HEAD/DELETE for a resource group; the status code."""
        response = self.compute.send_request(
            HttpRequest(
                method,
                f"{self.emulator.endpoint}/subscriptions/{self.emulator.subscription_id}"
                f"/resourcegroups/{name}?api-version={RESOURCE_GROUPS_API}",
            )
        )
        return int(response.status_code)


def vm_body(
    image_id: str | None,
    nic_id: str,
    location: str = "westeurope",
    *,
    os_disk: dict[str, Any] | None = None,
    **properties: Any,  # noqa: ANN401 - JSON
) -> dict[str, Any]:
    """A small VM booting gallery version *image_id* on NIC *nic_id*, boot diagnostics on
    (with *os_disk* as its ``storageProfile.osDisk``)."""
    storage: dict[str, Any] = {"imageReference": {"id": image_id}}
    if os_disk is not None:
        storage["osDisk"] = os_disk
    return {
        "location": location,
        "properties": {
            "hardwareProfile": {"vmSize": "Standard_B2s"},
            "storageProfile": storage,
            "osProfile": {
                "computerName": "smoke",
                "adminUsername": "nixos",
                "adminPassword": "Correct-Horse-1",
            },
            "networkProfile": {"networkInterfaces": [{"id": nic_id}]},
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
            **properties,
        },
    }


def clients(
    emulator: Emulator,
    *,
    polling_interval: float = 0.02,
    recorder: TrafficRecorder | None = None,
    **options: object,
) -> Clients:
    """Compute and network clients for *emulator*, trusting its certificate.

    With *recorder*, every HTTP exchange of both clients is recorded (oav format).
    Other *options* go to the clients (e.g. ``retry_total``).
    """
    kwargs = emulator.client_kwargs(polling_interval=polling_interval) | options
    if recorder is not None:
        kwargs["per_retry_policies"] = [recorder]
    credential = emulator.credential()
    return Clients(
        compute=ComputeManagementClient(credential, emulator.subscription_id, **kwargs),
        network=NetworkManagementClient(credential, emulator.subscription_id, **kwargs),
        emulator=emulator,
    )

"""Microsoft.Compute/images: managed images made from an uploaded disk."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator import apiversions
from nixos_azure_publish.emulator.armerror import (
    ArmError,
    invalid_parameter,
    not_allowed,
    property_change,
)
from nixos_azure_publish.emulator.common import Envelope, check_compute_name, provisioned
from nixos_azure_publish.emulator.kinds import Kind

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.context import Completion, Request, Response
    from nixos_azure_publish.emulator.store import Resource

TYPE: Final = "Microsoft.Compute/images"
IMAGES: Final = Kind(TYPE, "imageName", "Images", apiversions.COMPUTE)


def _os_disk(
    req: Request, properties: dict[str, Any], location: str
) -> tuple[dict[str, Any], Resource]:
    storage = properties.get("storageProfile") or {}
    os_disk = storage.get("osDisk")
    target = "image.properties.storageProfile.osDisk"
    if not isinstance(os_disk, dict):
        raise invalid_parameter("Required parameter 'osDisk' is missing (null).", target)
    for key in ("osType", "osState"):
        if os_disk.get(key) is None:
            raise invalid_parameter(
                f"Required parameter 'osDisk.{key}' is missing (null).", f"{target}.{key}"
            )
    if os_disk["osState"] not in {"Generalized", "Specialized"}:
        raise invalid_parameter(
            f"The value '{os_disk['osState']}' of osState is not valid.", f"{target}.osState"
        )
    disk_ref = (os_disk.get("managedDisk") or {}).get("id")
    if not disk_ref:
        raise invalid_parameter(
            "This emulator makes images from managed disks: osDisk.managedDisk.id is required.",
            f"{target}.managedDisk.id",
        )
    disk = req.app.store.get(disk_ref)
    if disk is None or disk.type != "Microsoft.Compute/disks":
        raise ArmError(
            404, "NotFound", f"Resource {disk_ref} not found.", target=f"{target}.managedDisk.id"
        )
    state = disk.properties.get("diskState")
    if state not in {"Unattached", "Attached", "Reserved"}:
        raise not_allowed(
            f"Disk '{disk.name}' is in state '{state}' and cannot be the source of an image; "
            "finish the upload and revoke its access first."
        )
    if disk.body["location"] != location:
        raise invalid_parameter(
            f"The source disk is in '{disk.body['location']}'; the image must be in the same "
            f"region, not '{location}'.",
            f"{target}.managedDisk.id",
        )
    out = {
        "osType": os_disk["osType"],
        "osState": os_disk["osState"],
        "managedDisk": {"id": disk.id},
        "caching": os_disk.get("caching", "ReadWrite"),
        "storageAccountType": os_disk.get("storageAccountType", "Standard_LRS"),
        "diskSizeGB": disk.properties.get("diskSizeGB", 1),
    }
    return out, disk


def put(req: Request) -> Response:
    req.app.require_group(req)
    check_compute_name(req.params["imageName"], "image")
    envelope = Envelope.of(req)
    properties = envelope.properties
    os_disk, disk = _os_disk(req, properties, envelope.location)
    generation = properties.get("hyperVGeneration", "V1")
    if generation not in {"V1", "V2"}:
        raise invalid_parameter(
            f"The value '{generation}' of hyperVGeneration is not valid.",
            "image.properties.hyperVGeneration",
        )
    disk_generation = disk.properties.get("hyperVGeneration")
    if disk_generation is not None and disk_generation != generation:
        raise invalid_parameter(
            f"The image's hyperVGeneration '{generation}' does not match the source disk's "
            f"'{disk_generation}'.",
            "image.properties.hyperVGeneration",
        )
    existing = req.app.store.get(IMAGES.id(req))
    if existing is not None:
        old = existing.properties
        if old["storageProfile"]["osDisk"]["managedDisk"]["id"].lower() != disk.id.lower():
            raise property_change("image.properties.storageProfile.osDisk.managedDisk.id")
        if old.get("hyperVGeneration") != generation:
            raise property_change("image.properties.hyperVGeneration")
        existing.body["tags"] = envelope.tags
        old["provisioningState"] = "Updating"
        return IMAGES.provisioning(req, existing, "image-provision", status=200)
    storage = properties.get("storageProfile") or {}
    image = IMAGES.new(
        req,
        envelope,
        {
            "storageProfile": {
                "osDisk": os_disk,
                "dataDisks": [],
                "zoneResilient": bool(storage.get("zoneResilient", False)),
            },
            "hyperVGeneration": generation,
            "provisioningState": "Creating",
        },
    )
    return IMAGES.provisioning(req, image, "image-provision", status=201)


ROUTES: Final = IMAGES.routes(put)
COMPLETIONS: Final[dict[str, Completion]] = {"image-provision": provisioned}

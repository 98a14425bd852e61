"""Microsoft.Compute/virtualMachines: a smoke-test VM booted from a gallery image version.

The image must exist and be replicated to the VM's region; the NICs must exist
and be free. The VM gets an attached OS disk, and its boot diagnostics expose
a serial console log in Azurite (``retrieveBootDiagnosticsData``): by default
a NixOS-like boot ending in a login prompt, or whatever a test scripts in
``settings.serial_log`` before the VM is created.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator import apiversions, network
from nixos_azure_publish.emulator.armerror import (
    ArmError,
    invalid_parameter,
    not_allowed,
    property_change,
)
from nixos_azure_publish.emulator.catalogue import VM_SIZES
from nixos_azure_publish.emulator.common import (
    Envelope,
    check_compute_name,
    provisioned,
    same_location,
)
from nixos_azure_publish.emulator.community import find_image
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.galleries import IMAGE, VERSION, replicated_regions
from nixos_azure_publish.emulator.kinds import Kind
from nixos_azure_publish.emulator.settings import SECURE_BOOT_VIOLATION
from nixos_azure_publish.emulator.store import Resource

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.context import Completion, Request
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Operation

TYPE: Final = "Microsoft.Compute/virtualMachines"
VMS: Final = Kind(
    TYPE,
    "vmName",
    "VirtualMachines",
    apiversions.COMPUTE,
    ("List", "ListAll"),
    delete_kind="vm-delete",
)
_COMMUNITY_REF: Final = re.compile(
    r"^/CommunityGalleries/(?P<gallery>[^/]+)/Images/(?P<image>[^/]+)/Versions/(?P<version>[^/]+)$",
    re.IGNORECASE,
)


def _image_not_found(ref: str, location: str) -> ArmError:
    return ArmError(
        404,
        "GalleryImageNotFound",
        f"The gallery image {ref} is not available in {location} region. Please contact "
        "image owner to replicate to this region, or change your requested region.",
    )


def _resolve_image(req: Request, reference: dict[str, Any], location: str) -> Resource:
    """The gallery image version a VM boots from (``latest`` resolved), replicated here."""
    ref = reference.get("id") or reference.get("communityGalleryImageId")
    if not ref:
        raise invalid_parameter(
            "The emulator boots VMs from gallery images: storageProfile.imageReference.id "
            "or communityGalleryImageId is required.",
            "storageProfile.imageReference",
        )
    community = _COMMUNITY_REF.match(ref)
    if community is not None:
        image = find_image(req.app, community["gallery"], community["image"])
        wanted = community["version"]
    else:
        image_ref, _, wanted = ref.rpartition("/versions/")
        if not image_ref:
            image_ref, wanted = ref, "latest"
        image = req.app.store.get(image_ref)
        if image is not None and image.type != IMAGE:
            image = None
    if image is None:
        raise _image_not_found(ref, location)
    versions = [
        v
        for v in req.app.store.children(image.id + "/versions", VERSION)
        if location in replicated_regions(req, v)
    ]
    if wanted.lower() == "latest":
        candidates = [
            v for v in versions if not v.properties["publishingProfile"].get("excludeFromLatest")
        ]
        if not candidates:
            raise _image_not_found(ref, location)
        return max(candidates, key=lambda v: tuple(int(p) for p in v.name.split(".")))
    for version in versions:
        if version.name == wanted:
            return version
    raise _image_not_found(ref, location)


def _nics(req: Request, properties: dict[str, Any], rid: str, location: str) -> list[Resource]:
    refs = (properties.get("networkProfile") or {}).get("networkInterfaces") or []
    if not refs:
        raise invalid_parameter(
            "A virtual machine needs at least one network interface.",
            "properties.networkProfile.networkInterfaces",
        )
    nics = []
    for ref in refs:
        nic = req.app.store.get(str(ref.get("id", "")))
        if nic is None or nic.type != network.NIC:
            raise ArmError(404, "NotFound", f"Resource {ref.get('id')} not found.")
        attached = (nic.properties.get("virtualMachine") or {}).get("id")
        if attached and attached.lower() != rid.lower():
            raise ArmError(
                400,
                "NicInUse",
                f"Network Interface {nic.id} is used by existing resource {attached}.",
            )
        if nic.body["location"] != location:
            raise ArmError(
                400,
                "InvalidParameter",
                f"Network interface {nic.id} is in '{nic.body['location']}', not in the "
                f"VM's region '{location}'.",
            )
        nics.append(nic)
    return nics


def put(req: Request) -> Response:
    req.app.require_group(req)
    envelope = Envelope.of(req)
    location, properties = envelope.location, envelope.properties
    rid = VMS.id(req)
    existing = req.app.store.get(rid)
    size = (properties.get("hardwareProfile") or {}).get("vmSize")
    if not size:
        raise invalid_parameter(
            "Required parameter 'hardwareProfile.vmSize' is missing (null).",
            "properties.hardwareProfile.vmSize",
        )
    if existing is not None:
        return _update(req, existing, envelope)
    storage = properties.get("storageProfile") or {}
    version = _resolve_image(req, storage.get("imageReference") or {}, location)
    image = req.app.store.get(version.id.rsplit("/versions/", 1)[0])
    if image is None:
        raise _image_not_found(version.id, location)
    _check_security(req, properties, image)
    _check_size(req, str(size), location, image, properties)
    os_profile = properties.get("osProfile") or {}
    if not os_profile.get("adminUsername") or not os_profile.get(
        "computerName", req.params["vmName"]
    ):
        raise invalid_parameter(
            "Required parameter 'osProfile.adminUsername' is missing (null).",
            "properties.osProfile.adminUsername",
        )
    nics = _nics(req, properties, rid, location)
    os_disk_in = storage.get("osDisk") or {}
    os_disk: dict[str, Any] = {
        "osType": image.properties["osType"],
        "createOption": "FromImage",
        "caching": os_disk_in.get("caching", "ReadWrite"),
        "deleteOption": os_disk_in.get("deleteOption", "Detach"),
        "managedDisk": {
            "storageAccountType": (os_disk_in.get("managedDisk") or {}).get(
                "storageAccountType", "Standard_LRS"
            )
        },
        "diskSizeGB": version.properties["storageProfile"]["osDiskImage"].get("sizeInGB", 1),
    }
    if os_disk_in.get("name"):
        check_compute_name(str(os_disk_in["name"]), "osDisk")
        os_disk["name"] = os_disk_in["name"]
    disk_security = (os_disk_in.get("managedDisk") or {}).get("securityProfile")
    if disk_security:
        os_disk["managedDisk"]["securityProfile"] = disk_security
    vm_body: dict[str, Any] = {
        "id": rid,
        "name": req.params["vmName"],
        "type": TYPE,
        "location": location,
        "tags": envelope.tags,
        "properties": {
            "vmId": str(uuid.uuid4()),
            "hardwareProfile": {"vmSize": size},
            "storageProfile": {
                "imageReference": {
                    **(storage.get("imageReference") or {}),
                    "exactVersion": version.name,
                },
                "osDisk": os_disk,
                "dataDisks": [],
            },
            "osProfile": _public_os_profile(os_profile, req.params["vmName"]),
            "networkProfile": {
                "networkInterfaces": [
                    {"id": nic.id, "properties": ref.get("properties") or {"primary": i == 0}}
                    for i, (nic, ref) in enumerate(
                        zip(nics, properties["networkProfile"]["networkInterfaces"], strict=True)
                    )
                ]
            },
            "diagnosticsProfile": properties.get("diagnosticsProfile")
            or {"bootDiagnostics": {"enabled": False}},
            "timeCreated": req.app.now_iso(),
            "provisioningState": "Creating",
        },
    }
    if properties.get("securityProfile"):
        vm_body["properties"]["securityProfile"] = properties["securityProfile"]
    vm = Resource(
        id=rid, type=TYPE, body=vm_body, meta={"serial_log": _serial_log(req, properties)}
    )
    for nic in nics:
        nic.properties["virtualMachine"] = {"id": rid}
    req.app.store.put(vm)
    op = req.app.start_lro(req, kind="vm-create", resource_id=rid, location=location)
    return req.app.lro_response(op, status=201, body=vm.body, location=False)


def _serial_log(req: Request, properties: dict[str, Any]) -> str:
    """What the VM's serial console will show: a Secure Boot violation for an unsigned loader."""
    uefi = (properties.get("securityProfile") or {}).get("uefiSettings") or {}
    if uefi.get("secureBootEnabled") and not req.app.settings.signed_images:
        return SECURE_BOOT_VIOLATION
    return req.app.settings.serial_log


# What may change in a PUT on an existing VM (Azure: PropertyChangeNotAllowed otherwise).
_FIXED_ON_UPDATE: Final = (
    ("storageProfile", "imageReference", "id"),
    ("storageProfile", "imageReference", "communityGalleryImageId"),
    ("storageProfile", "osDisk", "name"),
    ("osProfile", "computerName"),
    ("osProfile", "adminUsername"),
    ("securityProfile", "securityType"),
)


def _dig(tree: dict[str, Any], path: tuple[str, ...]) -> object:
    node: Any = tree
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _update(req: Request, vm: Resource, envelope: Envelope) -> Response:
    """A PUT on an existing VM: tags, size, boot diagnostics change; its identity does not."""
    location = envelope.location
    same_location(req, vm, location)
    if vm.properties["provisioningState"] not in {"Succeeded", "Failed"}:
        raise ArmError(
            409,
            "OperationNotAllowed",
            f"Operation on VM '{vm.name}' is not allowed: another operation is in progress.",
        )
    properties = envelope.properties
    for path in _FIXED_ON_UPDATE:
        new = _dig(properties, path)
        if new is not None and new != _dig(vm.properties, path):
            raise property_change(".".join(path))
    size = str(properties["hardwareProfile"]["vmSize"])
    if size != vm.properties["hardwareProfile"]["vmSize"]:
        image_ref = vm.properties["storageProfile"]["imageReference"].get("id", "")
        image = req.app.store.get(image_ref.rsplit("/versions/", 1)[0])
        if image is not None:
            _check_size(req, size, location, image, vm.properties)
        vm.properties["hardwareProfile"]["vmSize"] = size
    if properties.get("diagnosticsProfile"):
        vm.properties["diagnosticsProfile"] = properties["diagnosticsProfile"]
    vm.body["tags"] = envelope.tags
    vm.properties["provisioningState"] = "Updating"
    op = req.app.start_lro(req, kind="vm-update", resource_id=vm.id, location=location)
    return req.app.lro_response(op, status=200, body=vm.body, location=False)


def _public_os_profile(os_profile: dict[str, Any], default_name: str) -> dict[str, Any]:
    """The osProfile as Azure returns it: never the password or custom data."""
    out = {
        "computerName": os_profile.get("computerName", default_name),
        "adminUsername": os_profile["adminUsername"],
        "linuxConfiguration": os_profile.get("linuxConfiguration")
        or {"disablePasswordAuthentication": False},
        "secrets": [],
        "allowExtensionOperations": True,
        "requireGuestProvisionSignal": True,
    }
    linux = out["linuxConfiguration"]
    if linux.get("disablePasswordAuthentication") and not (linux.get("ssh") or {}).get(
        "publicKeys"
    ):
        raise invalid_parameter(
            "Password authentication is disabled, so at least one SSH public key is required.",
            "properties.osProfile.linuxConfiguration.ssh.publicKeys",
        )
    if not linux.get("disablePasswordAuthentication") and not os_profile.get("adminPassword"):
        raise invalid_parameter(
            "Required parameter 'adminPassword' is missing (null).",
            "properties.osProfile.adminPassword",
        )
    return out


_TRUSTED_LAUNCH_IMAGES: Final = frozenset(
    {"trustedlaunchsupported", "trustedlaunch", "trustedlaunchandconfidentialvmsupported"}
)
_CONFIDENTIAL_IMAGES: Final = frozenset(
    {
        "confidentialvmsupported",
        "confidentialvm",
        "trustedlaunchandconfidentialvmsupported",
    }
)
_ENCRYPTION_TYPES: Final = frozenset(
    {"vmgueststateonly", "diskwithvmgueststate", "nonpersistedtpm"}
)
# The VM security type Standard is accepted from this api-version on.
_STANDARD_SINCE: Final = "2025-11-01"


def _check_security(req: Request, properties: dict[str, Any], image: Resource) -> None:
    """Azure's rules for a VM's security type against its image and its own settings."""
    target = "properties.securityProfile.securityType"
    security = properties.get("securityProfile") or {}
    wanted = str(security.get("securityType") or "")
    features = {
        str(f.get("name", "")).lower(): f.get("value") for f in image.properties.get("features", [])
    }
    offered = str(features.get("securitytype") or "Standard")
    if wanted.lower() == "standard" and req.api_version < _STANDARD_SINCE:
        raise invalid_parameter(
            f"The value 'Standard' of parameter 'securityProfile.securityType' is not allowed "
            f"before api-version {_STANDARD_SINCE}. Allowed values are 'TrustedLaunch', "
            "'ConfidentialVM'.",
            target,
        )
    uefi = security.get("uefiSettings")
    if uefi and wanted.lower() not in {"trustedlaunch", "confidentialvm"}:
        raise invalid_parameter(
            "Use of UefiSettings is not supported unless securityType is TrustedLaunch or "
            "ConfidentialVM.",
            "properties.securityProfile.uefiSettings",
        )
    if wanted.lower() == "trustedlaunch" and offered.lower() not in _TRUSTED_LAUNCH_IMAGES:
        raise invalid_parameter(
            f"The image's security type '{offered}' does not support a TrustedLaunch VM.",
            target,
        )
    if offered.lower() == "trustedlaunch" and wanted.lower() != "trustedlaunch":
        raise invalid_parameter(
            "The image requires securityProfile.securityType TrustedLaunch.",
            target,
        )
    if offered.lower() == "confidentialvm" and wanted.lower() != "confidentialvm":
        raise invalid_parameter(
            "The image requires securityProfile.securityType ConfidentialVM.",
            target,
        )
    if wanted.lower() == "confidentialvm":
        _check_confidential(properties, offered, uefi or {})


def _check_confidential(properties: dict[str, Any], offered: str, uefi: dict[str, Any]) -> None:
    """A confidential VM needs a confidential image, vTPM and an OS disk encryption type."""
    if offered.lower() not in _CONFIDENTIAL_IMAGES:
        raise invalid_parameter(
            f"The image's security type '{offered}' does not support a ConfidentialVM.",
            "properties.securityProfile.securityType",
        )
    if not uefi.get("vTpmEnabled"):
        raise invalid_parameter(
            "A ConfidentialVM needs securityProfile.uefiSettings.vTpmEnabled true.",
            "properties.securityProfile.uefiSettings.vTpmEnabled",
        )
    os_disk = (properties.get("storageProfile") or {}).get("osDisk") or {}
    disk_security = (os_disk.get("managedDisk") or {}).get("securityProfile") or {}
    encryption = str(disk_security.get("securityEncryptionType") or "")
    if encryption.lower() not in _ENCRYPTION_TYPES:
        raise invalid_parameter(
            "A ConfidentialVM needs storageProfile.osDisk.managedDisk.securityProfile."
            "securityEncryptionType (VMGuestStateOnly, DiskWithVMGuestState or NonPersistedTPM).",
            "properties.storageProfile.osDisk.managedDisk.securityProfile.securityEncryptionType",
        )


def _check_size(
    req: Request, size: str, location: str, image: Resource, properties: dict[str, Any]
) -> None:
    """The size exists, is offered here, and can boot the image with the VM's security."""
    target = "properties.hardwareProfile.vmSize"
    spec = VM_SIZES.get(size)
    if spec is None:
        raise invalid_parameter(
            f"The requested VM size {size} is not available in the current region. The sizes "
            f"available in the current region are: {', '.join(sorted(VM_SIZES))}.",
            target,
        )
    if (location, size) in req.app.settings.unavailable_sizes or size in (
        req.app.settings.unavailable_sizes
    ):
        raise ArmError(
            409,
            "SkuNotAvailable",
            f"The requested VM size for resource 'Following SKUs have failed for Capacity "
            f"Restrictions: {size}' is currently not available in location '{location}'. "
            "Please try another size or deploy to a different location or different zone.",
        )
    generation = str(image.properties.get("hyperVGeneration", "V1"))
    if generation not in spec.generations:
        raise invalid_parameter(
            f"The selected VM size '{size}' cannot boot Hypervisor Generation "
            f"'{generation[-1]}'. If this was a Create operation please check that the "
            "Hypervisor Generation of the Image matches the Hypervisor Generation of the "
            "selected VM Size.",
            target,
        )
    architecture = str(image.properties.get("architecture", "x64"))
    if architecture.lower() != spec.architecture.lower():
        raise invalid_parameter(
            f"The selected VM size '{size}' ({spec.architecture}) cannot boot an image of "
            f"architecture '{architecture}'.",
            target,
        )
    wanted = str((properties.get("securityProfile") or {}).get("securityType") or "").lower()
    if wanted == "trustedlaunch" and not spec.trusted_launch:
        raise invalid_parameter(
            f"The VM size '{size}' is not supported for Trusted Launch. Use a size that "
            "supports it, or create a Standard VM.",
            target,
        )
    if wanted == "confidentialvm" and not spec.confidential:
        raise invalid_parameter(
            f"The VM size '{size}' does not support a ConfidentialVM; use a confidential size "
            "such as Standard_DC2as_v5.",
            target,
        )


def get(req: Request) -> Response:
    vm = VMS.require(req)
    if req.query.get("$expand", "").lower() == "instanceview":
        return Response(
            200, {**vm.body, "properties": {**vm.properties, "instanceView": _view(vm)}}
        )
    return Response(200, vm.body)


def _view(vm: Resource) -> dict[str, Any]:
    state = vm.properties["provisioningState"]
    statuses = [
        {"code": f"ProvisioningState/{state.lower()}", "level": "Info", "displayStatus": state}
    ]
    if state == "Succeeded":
        statuses.append(
            {"code": "PowerState/running", "level": "Info", "displayStatus": "VM running"}
        )
    return {"computerName": vm.properties["osProfile"]["computerName"], "statuses": statuses}


def instance_view(req: Request) -> Response:
    return Response(200, _view(VMS.require(req)))


def boot_diagnostics(req: Request) -> Response:
    vm = VMS.require(req)
    enabled = ((vm.properties.get("diagnosticsProfile") or {}).get("bootDiagnostics") or {}).get(
        "enabled"
    )
    if not enabled:
        raise not_allowed(
            f"Boot diagnostics are not enabled on VM '{vm.name}'; enable "
            "diagnosticsProfile.bootDiagnostics to read its serial log."
        )
    if "serial_log_blob" not in vm.meta:
        raise ArmError(
            409, "OperationNotAllowed", f"VM '{vm.name}' has not booted yet; try again later."
        )
    minutes = req.query.get("sasUriExpirationTimeInMinutes", "120")
    if not minutes.isdigit() or not 1 <= int(minutes) <= 1440:  # noqa: PLR2004
        raise invalid_parameter(
            f"sasUriExpirationTimeInMinutes {minutes} is invalid: 1 to 1440.",
            "sasUriExpirationTimeInMinutes",
        )
    container, blob = vm.meta["serial_log_blob"]
    text = vm.meta.get("serial_log", "")
    hours = max(1, int(minutes) // 60)
    log_url = req.app.blobs.put_text(container, blob, text, hours=hours)
    screenshot = req.app.blobs.put_text(
        container, blob.replace("serialconsole.log", "screenshot.bmp"), "", hours=hours
    )
    return Response(
        200, {"consoleScreenshotBlobUri": screenshot, "serialConsoleLogBlobUri": log_url}
    )


def _created(app: ArmApp, op: Operation) -> None:
    vm = app.store.get(op.resource_id)
    if vm is None:
        return
    group_id = vm.id.split("/providers/", 1)[0]
    os_disk = vm.properties["storageProfile"]["osDisk"]
    disk_name = os_disk.get("name") or f"{vm.name}_OsDisk_1_{uuid.uuid4().hex}"
    disk_id = f"{group_id}/providers/Microsoft.Compute/disks/{disk_name}"
    size_gb = int(os_disk.get("diskSizeGB", 1))
    app.store.put(
        Resource(
            id=disk_id,
            type="Microsoft.Compute/disks",
            body={
                "id": disk_id,
                "name": disk_name,
                "type": "Microsoft.Compute/disks",
                "location": vm.body["location"],
                "managedBy": vm.id,
                "sku": {"name": os_disk["managedDisk"]["storageAccountType"], "tier": "Standard"},
                "tags": {},
                "properties": {
                    "osType": os_disk["osType"],
                    "creationData": {
                        "createOption": "FromImage",
                        "galleryImageReference": {
                            "id": vm.properties["storageProfile"]["imageReference"].get("id", "")
                        },
                    },
                    "diskSizeGB": size_gb,
                    "diskSizeBytes": size_gb * 1024**3,
                    "timeCreated": app.now_iso(),
                    "provisioningState": "Succeeded",
                    "diskState": "Attached",
                    "uniqueId": str(uuid.uuid4()),
                },
            },
        )
    )
    os_disk["name"] = disk_name
    os_disk["managedDisk"]["id"] = disk_id
    vm.properties["provisioningState"] = "Succeeded"
    short = re.sub(r"[^a-z0-9]", "", vm.name.lower())[:9] or "vm"
    container = f"bootdiagnostics-{short}-{vm.properties['vmId']}"
    blob = f"{vm.name}.{vm.properties['vmId']}.serialconsole.log"
    vm.meta["serial_log_blob"] = [container, blob]
    vm.meta["container"] = container


def _deleted(app: ArmApp, op: Operation) -> None:
    vm = app.store.delete(op.resource_id)
    if vm is None:
        return
    os_disk = vm.properties["storageProfile"]["osDisk"]
    disk_id = os_disk.get("managedDisk", {}).get("id")
    disk = app.store.get(disk_id) if disk_id else None
    if disk is not None:
        if os_disk.get("deleteOption") == "Delete":
            app.store.delete(disk.id)
        else:
            disk.body.pop("managedBy", None)
            disk.properties["diskState"] = "Unattached"
    for ref in vm.properties["networkProfile"]["networkInterfaces"]:
        nic = app.store.get(ref["id"])
        if nic is None:
            continue
        nic.properties.pop("virtualMachine", None)
        if (ref.get("properties") or {}).get("deleteOption") == "Delete":
            app.store.delete(nic.id)
            network.unlink_nic(app, nic)
    if vm.meta.get("container"):
        app.blobs.delete(vm.meta["container"])


ROUTES: Final = VMS.routes(
    put,
    ("GET", "/instanceView", instance_view, "instanceView/read", "VirtualMachines_InstanceView"),
    (
        "POST",
        "/retrieveBootDiagnosticsData",
        boot_diagnostics,
        "retrieveBootDiagnosticsData/action",
        "VirtualMachines_RetrieveBootDiagnosticsData",
    ),
    get=get,
)
COMPLETIONS: Final[dict[str, Completion]] = {
    "vm-create": _created,
    "vm-delete": _deleted,
    "vm-update": provisioned,
}

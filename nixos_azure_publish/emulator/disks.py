"""Microsoft.Compute/disks: managed disks and their direct-upload life cycle.

``createOption: Upload`` makes a disk in ``ReadyToUpload`` backed by a real
Azurite page blob of ``uploadSizeBytes``; ``beginGetAccess`` (Write) returns a
revocable SAS to it and moves the disk to ``ActiveUpload``; ``endGetAccess``
revokes the SAS and validates the VHD footer like Azure, leaving the disk
``Unattached`` (or refusing the upload and returning it to ``ReadyToUpload``).

``createOption: Import`` copies a fixed-VHD page blob of the storage account
(``sourceUri``, with the ``storageAccountId`` that holds it) into a new disk;
``createOption: Copy`` copies another disk (``sourceResourceId``). Either disk
takes its size from the source and holds the same bytes.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator import apiversions
from nixos_azure_publish.emulator.armerror import (
    ArmError,
    invalid_parameter,
    not_allowed,
    property_change,
)
from nixos_azure_publish.emulator.blobs import DISK_BLOB, FOOTER_SIZE
from nixos_azure_publish.emulator.common import (
    Envelope,
    check_compute_name,
    parse_id,
    props,
    provisioned,
    same_location,
    tags_of,
)
from nixos_azure_publish.emulator.kinds import Kind
from nixos_azure_publish.emulator.store import Resource

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.context import Completion, Request, Response
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Operation

TYPE: Final = "Microsoft.Compute/disks"
MIB: Final = 1024 * 1024
GIB: Final = 1024 * MIB
MIN_UPLOAD: Final = 20 * MIB + FOOTER_SIZE
MAX_UPLOAD: Final = 32 * 1024 * GIB + FOOTER_SIZE
SKUS: Final = {
    "Standard_LRS": "Standard",
    "StandardSSD_LRS": "Standard",
    "Premium_LRS": "Premium",
    "StandardSSD_ZRS": "Standard",
    "Premium_ZRS": "Premium",
    "UltraSSD_LRS": "Ultra",
    "PremiumV2_LRS": "Premium",
}
CREATE_OPTIONS: Final = {"Upload", "Empty", "FromImage", "Copy", "Import"}
SUPPORTED_CREATE: Final = {"Upload", "Empty", "FromImage", "Import", "Copy"}
# The creationData fields that name a source: each belongs to one createOption only.
SOURCE_FIELDS: Final = {
    "uploadSizeBytes": "Upload",
    "sourceUri": "Import",
    "storageAccountId": "Import",
    "sourceResourceId": "Copy",
}
# A disk in these states has its content and can be the source of a copy.
READABLE_STATES: Final = {"Unattached", "Attached", "Reserved", "ActiveSAS", "ActiveSASFrozen"}
_CREATION: Final = "disk.properties.creationData"
VHD_COOKIE: Final = b"conectix"
VHD_FIXED: Final = 2


def _validate_create(properties: dict[str, Any]) -> dict[str, Any]:
    creation = properties.get("creationData")
    if not isinstance(creation, dict) or not creation.get("createOption"):
        raise invalid_parameter(
            "Required parameter 'disk.properties.creationData.createOption' is missing (null).",
            "disk.properties.creationData.createOption",
        )
    option = _check_option(creation)
    if option == "Upload":
        _check_upload_size(creation.get("uploadSizeBytes"))
    elif option == "Empty":
        size_gb = properties.get("diskSizeGB")
        if not isinstance(size_gb, int) or size_gb <= 0:
            raise invalid_parameter(
                "Required parameter 'diskSizeGB' is missing (null) for createOption Empty.",
                "disk.properties.diskSizeGB",
            )
    for key, allowed in (("hyperVGeneration", {"V1", "V2"}), ("osType", {"Linux", "Windows"})):
        value = properties.get(key)
        if value is not None and value not in allowed:
            raise invalid_parameter(
                f"The value '{value}' of {key} is not valid: {' or '.join(sorted(allowed))}.",
                f"disk.properties.{key}",
            )
    return creation


def _check_option(creation: dict[str, Any]) -> str:
    """The createOption, known to Azure and to the emulator, with no other option's fields."""
    option = str(creation["createOption"])
    if option not in CREATE_OPTIONS:
        raise invalid_parameter(
            f"The value '{option}' of parameter 'createOption' is not valid.",
            "disk.properties.creationData.createOption",
        )
    if option not in SUPPORTED_CREATE:
        raise ArmError(
            400,
            "BadRequest",
            f"createOption '{option}' is not supported by this emulator "
            f"({', '.join(sorted(SUPPORTED_CREATE))} only).",
        )
    for key, owner in SOURCE_FIELDS.items():
        if key in creation and option != owner:
            raise invalid_parameter(
                f"Parameter '{key}' is only allowed with createOption {owner}, not {option}.",
                f"{_CREATION}.{key}",
            )
    return option


def _check_upload_size(size: object) -> None:
    target = "disk.properties.creationData.uploadSizeBytes"
    if not isinstance(size, int) or isinstance(size, bool):
        raise invalid_parameter(
            "Required parameter 'uploadSizeBytes' is missing (null) for createOption Upload.",
            target,
        )
    if size < MIN_UPLOAD or size > MAX_UPLOAD:
        raise invalid_parameter(
            f"Upload size {size} bytes is invalid: it must be between {MIN_UPLOAD} "
            f"(20 MiB + 512) and {MAX_UPLOAD} (32 TiB + 512) bytes.",
            target,
        )
    if size % 512:
        raise invalid_parameter(f"Upload size {size} bytes is not a multiple of 512 bytes.", target)


def _sku(body: dict[str, Any]) -> dict[str, str]:
    sku = body.get("sku") or {}
    name = sku.get("name", "Standard_LRS") if isinstance(sku, dict) else None
    if name not in SKUS:
        raise invalid_parameter(f"The SKU '{name}' is not valid for disks.", "disk.sku.name")
    return {"name": name, "tier": SKUS[name]}


def _required(creation: dict[str, Any], key: str) -> str:
    value = creation.get(key)
    if not isinstance(value, str) or not value:
        raise ArmError(
            400,
            "BadRequest",
            f"Required parameter '{key}' is missing (null).",
            target=f"{_CREATION}.{key}",
        )
    return value


def _import_source(req: Request, creation: dict[str, Any]) -> tuple[str, str, int]:
    """The page blob an Import reads (container, blob) and its size, checked as Azure does.

    The blob must be a fixed VHD in the storage account ``storageAccountId`` names.
    Messages name the blob without its query: a SAS never reaches an error.
    """
    uri = _required(creation, "sourceUri")
    account_id = _required(creation, "storageAccountId")
    shown = uri.split("?", 1)[0]
    parsed = parse_id(account_id)
    kind, _, account = (parsed[2] if parsed else "").rpartition("/")
    if kind.lower() != "microsoft.storage/storageaccounts" or not account:
        raise invalid_parameter(
            f"The storageAccountId '{account_id}' is not the id of a storage account.",
            f"{_CREATION}.storageAccountId",
        )
    located = req.app.blobs.locate(uri)
    if located is None or located[0].lower() != account.lower():
        raise invalid_parameter(
            f"The source blob '{shown}' is not in storage account '{account}'.",
            f"{_CREATION}.sourceUri",
        )
    _, container, blob = located
    found = req.app.blobs.blob_size(container, blob)
    if found is None:
        raise ArmError(
            404,
            "NotFound",
            f"The blob '{shown}' to import was not found.",
            target=f"{_CREATION}.sourceUri",
        )
    size, page_blob = found
    if not page_blob:
        problem: str | None = "it is not a page blob"
    elif size < FOOTER_SIZE:
        problem = "it is smaller than a VHD footer"
    else:
        footer = req.app.blobs.read(container, size - FOOTER_SIZE, FOOTER_SIZE, blob=blob)
        problem = footer_problem(footer, size)
    if problem is not None:
        raise ArmError(
            400, "BadRequest", f"Only blobs formatted as VHDs can be imported: {problem}."
        )
    return container, blob, size


def _copy_source(req: Request, creation: dict[str, Any], location: str) -> Resource:
    """The disk a Copy reads: it exists, holds its content and is in the new disk's region."""
    ref = _required(creation, "sourceResourceId")
    target = f"{_CREATION}.sourceResourceId"
    if parse_id(ref) is None:
        raise invalid_parameter(f"The sourceResourceId '{ref}' is not a valid resource id.", target)
    source = req.app.store.get(ref)
    if source is None:
        # The emulator keeps no snapshots: a snapshot id is never found.
        raise ArmError(404, "NotFound", f"Resource {ref} not found.", target=target)
    if source.type != TYPE:
        raise invalid_parameter(
            f"A resource of type '{source.type}' cannot be copied into a disk: "
            "sourceResourceId names a disk or a snapshot.",
            target,
        )
    state = source.properties.get("diskState")
    if state not in READABLE_STATES:
        raise not_allowed(
            f"Disk '{source.name}' is in state '{state}' and cannot be copied; finish the "
            "upload and revoke its access (endGetAccess) first."
        )
    if source.body["location"] != location:
        raise invalid_parameter(
            f"The source disk is in '{source.body['location']}'; a copy must be in the same "
            f"region, not '{location}'.",
            target,
        )
    return source


def _source_size(properties: dict[str, Any], size_bytes: int) -> int:
    """The size of a disk made from a source: the source's, which diskSizeGB cannot change."""
    size_gb = properties.get("diskSizeGB")
    if size_gb is not None and size_gb != max(1, math.ceil(size_bytes / GIB)):
        raise invalid_parameter(
            f"diskSizeGB {size_gb} differs from the size of the source ({size_bytes} bytes): "
            "a disk is never smaller than its source, and this emulator makes it the "
            "source's size. Leave diskSizeGB out.",
            "disk.properties.diskSizeGB",
        )
    return size_bytes


def _inherit(properties: dict[str, Any], source: Resource) -> dict[str, Any]:
    """The request's properties, with the source disk's generation and OS where it has none."""
    out = dict(properties)
    for key in ("osType", "hyperVGeneration", "supportedCapabilities"):
        if key in source.properties:
            out.setdefault(key, source.properties[key])
    theirs = source.properties.get("hyperVGeneration")
    if theirs is not None and out["hyperVGeneration"] != theirs:
        raise invalid_parameter(
            f"The hyperVGeneration '{out['hyperVGeneration']}' does not match the source "
            f"disk's '{theirs}'.",
            "disk.properties.hyperVGeneration",
        )
    return out


@dataclass(frozen=True)
class Wanted:
    """What a disk PUT asks for, checked as Azure checks it."""

    location: str
    tags: dict[str, str]
    sku: dict[str, str]
    properties: dict[str, Any]
    creation: dict[str, Any]

    @classmethod
    def of(cls, req: Request) -> Wanted:
        envelope = Envelope.of(req)
        creation = _validate_create(envelope.properties)
        sku = _sku(envelope.body)
        return cls(envelope.location, envelope.tags, sku, envelope.properties, creation)


@dataclass(frozen=True)
class Source:
    """Where a new disk's bytes come from, and so its size."""

    wanted: Wanted
    """The request, with what the source fixes filled in."""
    size_bytes: int | None = None
    blob: tuple[str, str] | None = None
    """(container, blob) to copy, or None: the disk starts all zeros (or empty)."""


def _source(req: Request, wanted: Wanted) -> Source:
    option = wanted.creation["createOption"]
    if option == "Import":
        container, blob, blob_size = _import_source(req, wanted.creation)
        size_bytes = _source_size(wanted.properties, blob_size - FOOTER_SIZE)
        return Source(wanted, size_bytes, (container, blob))
    if option == "Copy":
        disk = _copy_source(req, wanted.creation, wanted.location)
        properties = _inherit(wanted.properties, disk)
        creation = {**wanted.creation, "sourceUniqueId": disk.properties["uniqueId"]}
        held = disk.meta.get("container")
        return Source(
            replace(wanted, properties=properties, creation=creation),
            _source_size(properties, int(disk.properties["diskSizeBytes"])),
            (held, DISK_BLOB) if held else None,
        )
    return Source(wanted)


def new_disk_body(req: Request, resource_id: str, source: Source) -> dict[str, Any]:
    """The body Azure returns for a new disk."""
    wanted = source.wanted
    creation = wanted.creation
    if creation["createOption"] == "Upload":
        size_bytes = int(creation["uploadSizeBytes"]) - FOOTER_SIZE
        state = "ReadyToUpload"
    else:
        size_bytes = source.size_bytes or int(wanted.properties.get("diskSizeGB", 1)) * GIB
        state = "Unattached"
    out: dict[str, Any] = {
        "id": resource_id,
        "name": resource_id.rsplit("/", 1)[-1],
        "type": TYPE,
        "location": wanted.location,
        "tags": wanted.tags,
        "sku": wanted.sku,
        "properties": {
            "creationData": dict(creation),
            "diskSizeGB": max(1, math.ceil(size_bytes / GIB)),
            "diskSizeBytes": size_bytes,
            "diskIOPSReadWrite": 500,
            "diskMBpsReadWrite": 60,
            "encryption": {"type": "EncryptionAtRestWithPlatformKey"},
            "networkAccessPolicy": "AllowAll",
            "publicNetworkAccess": "Enabled",
            "timeCreated": req.app.now_iso(),
            "provisioningState": "Updating",
            "diskState": state,
            "uniqueId": req.app.new_unique_id(),
        },
    }
    for key in ("osType", "hyperVGeneration", "supportedCapabilities", "securityProfile"):
        if key in wanted.properties:
            out["properties"][key] = wanted.properties[key]
    return out


def put(req: Request) -> Response:
    req.app.require_group(req)
    check_compute_name(req.params["diskName"], "disk")
    wanted = Wanted.of(req)
    rid = DISKS.id(req)
    existing = req.app.store.get(rid)
    if existing is not None:
        return _update_in_place(req, existing, wanted)
    source = _source(req, wanted)
    disk = Resource(id=rid, type=TYPE, body=new_disk_body(req, rid, source))
    if wanted.creation["createOption"] == "Upload" or source.blob is not None:
        container = "md-" + disk.properties["uniqueId"].replace("-", "")
        disk.meta["container"] = container
        if source.blob is None:
            req.app.blobs.create_page_blob(container, int(wanted.creation["uploadSizeBytes"]))
        else:
            req.app.blobs.copy_pages(source.blob, container)
    req.app.store.put(disk)
    op = req.app.start_lro(req, kind="disk-provision", resource_id=rid, location=wanted.location)
    return req.app.lro_response(op, status=202, body=disk.body)


def _update_in_place(req: Request, disk: Resource, wanted: Wanted) -> Response:
    location = wanted.location
    same_location(req, disk, location)
    old_creation = disk.properties["creationData"]
    for key in ("createOption", *SOURCE_FIELDS):
        if wanted.creation.get(key) != old_creation.get(key):
            raise property_change(f"disk.properties.creationData.{key}")
    generation = wanted.properties.get("hyperVGeneration")
    if generation not in {None, disk.properties.get("hyperVGeneration")}:
        raise property_change("disk.properties.hyperVGeneration")
    disk.body["tags"] = wanted.tags
    disk.body["sku"] = wanted.sku
    op = req.app.start_lro(req, kind="disk-provision", resource_id=disk.id, location=location)
    disk.properties["provisioningState"] = "Updating"
    return req.app.lro_response(op, status=202, body=disk.body)


def patch(req: Request) -> Response:
    disk = DISKS.require(req)
    body = req.json_body()
    if "tags" in body:
        disk.body["tags"] = tags_of(body)
    properties = props(body)
    for key in ("osType", "supportedCapabilities"):
        if key in properties:
            disk.properties[key] = properties[key]
    op = req.app.start_lro(
        req, kind="disk-provision", resource_id=disk.id, location=disk.body["location"]
    )
    disk.properties["provisioningState"] = "Updating"
    return req.app.lro_response(op, status=202, body=disk.body)


def _in_use(req: Request, disk: Resource) -> None:
    """A disk being uploaded, exported or attached cannot be deleted."""
    del req
    state = disk.properties.get("diskState")
    if state in {"ActiveUpload", "ActiveSAS", "ActiveSASFrozen"}:
        raise not_allowed(
            f"Disk '{disk.name}' is in state '{state}' and cannot be deleted: revoke its "
            "access (endGetAccess) first."
        )
    if disk.body.get("managedBy"):
        raise not_allowed(
            f"Disk '{disk.name}' is attached to VM '{disk.body['managedBy']}' and cannot be "
            "deleted."
        )


def grant(req: Request) -> Response:
    disk = DISKS.require(req)
    body = req.json_body()
    access = body.get("access")
    if access not in {"Read", "Write", "None"}:
        raise invalid_parameter(
            f"The value '{access}' of parameter 'access' is not valid: Read or Write.",
            "grantAccessData.access",
        )
    duration = body.get("durationInSeconds")
    if not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
        raise invalid_parameter(
            "Required parameter 'durationInSeconds' is missing or not a positive integer.",
            "grantAccessData.durationInSeconds",
        )
    if duration > req.app.settings.sas_hours_max * 3600:
        raise invalid_parameter(
            f"durationInSeconds {duration} exceeds the maximum of "
            f"{req.app.settings.sas_hours_max * 3600}.",
            "grantAccessData.durationInSeconds",
        )
    if disk.body.get("managedBy"):
        raise not_allowed(
            f"Disk '{disk.name}' is attached to VM '{disk.body['managedBy']}'; access to an "
            "attached disk cannot be granted."
        )
    state = disk.properties.get("diskState")
    if access == "Write" and state not in {"ReadyToUpload", "ActiveUpload"}:
        raise not_allowed(
            f"Write access can only be granted to a disk created for upload that is in state "
            f"ReadyToUpload; disk '{disk.name}' is '{state}'."
        )
    if access == "Read" and state in {"ReadyToUpload", "ActiveUpload"}:
        raise not_allowed(
            f"Read access cannot be granted to disk '{disk.name}' in state '{state}'."
        )
    if "container" not in disk.meta:
        raise ArmError(
            400, "BadRequest", "This emulator grants access only to disks created for upload."
        )
    op = req.app.start_lro(
        req,
        kind="disk-grant",
        resource_id=disk.id,
        location=disk.body["location"],
        args={"access": access, "seconds": duration, "marks_resource": False},
    )
    return req.app.lro_response(op, status=202)


def revoke(req: Request) -> Response:
    disk = DISKS.require(req)
    op = req.app.start_lro(
        req,
        kind="disk-revoke",
        resource_id=disk.id,
        location=disk.body["location"],
        args={"marks_resource": False},
    )
    return req.app.lro_response(op, status=202)


def footer_problem(footer: bytes, blob_size: int) -> str | None:
    """Why Azure would refuse this VHD footer, or None when it is acceptable."""
    if footer[0:8] != VHD_COOKIE:
        return "Disk is expected to have cookie value 'conectix'"
    disk_type = struct.unpack(">I", footer[60:64])[0]
    if disk_type != VHD_FIXED:
        return f"the VHD disk type is {disk_type}; only fixed VHDs (type 2) are supported"
    stored = struct.unpack(">I", footer[64:68])[0]
    computed = ~sum(footer[:64] + b"\0\0\0\0" + footer[68:]) & 0xFFFFFFFF
    if stored != computed:
        return "the VHD footer checksum is invalid"
    current = struct.unpack(">Q", footer[48:56])[0]
    if current % MIB:
        return (
            f"unsupported virtual size of {current} bytes. The size must be a whole number (in MBs)"
        )
    if current + FOOTER_SIZE != blob_size:
        return (
            f"the VHD footer's current size {current} plus the 512-byte footer does not "
            f"match the uploaded size {blob_size}"
        )
    return None


DISKS: Final = Kind(
    TYPE,
    "diskName",
    "Disks",
    apiversions.DISKS,
    delete_kind="disk-delete",
    in_use=_in_use,
)
ROUTES: Final = DISKS.routes(
    put,
    ("PATCH", "", patch, "write", "Disks_Update"),
    ("POST", "/beginGetAccess", grant, "beginGetAccess/action", "Disks_GrantAccess"),
    ("POST", "/endGetAccess", revoke, "endGetAccess/action", "Disks_RevokeAccess"),
)


def _deleted(app: ArmApp, op: Operation) -> None:
    disk = app.store.delete(op.resource_id)
    if disk is not None and disk.meta.get("container"):
        app.blobs.delete(disk.meta["container"])


def _granted(app: ArmApp, op: Operation) -> dict[str, Any] | None:
    disk = app.store.get(op.resource_id)
    if disk is None:
        raise ArmError(404, "NotFound", "The disk was deleted while access was granted.")
    url = app.blobs.grant(
        disk.meta["container"],
        policy_id=op.id,
        access=op.args["access"],
        seconds=int(op.args["seconds"]),
    )
    disk.properties["diskState"] = "ActiveUpload" if op.args["access"] == "Write" else "ActiveSAS"
    return {"accessSAS": url}


def _revoke_complete(app: ArmApp, op: Operation) -> None:
    """Revoke every SAS, then check the uploaded VHD like Azure does when an upload ends."""
    disk = app.store.get(op.resource_id)
    if disk is None:
        raise ArmError(404, "NotFound", "The disk was deleted.")
    container = str(disk.meta.get("container", ""))
    if container:
        app.blobs.revoke(container)
    state = disk.properties.get("diskState")
    if state == "ActiveUpload" and container:
        size = app.blobs.size(container)
        problem = footer_problem(app.blobs.read(container, size - FOOTER_SIZE, FOOTER_SIZE), size)
        if problem is not None:
            disk.properties["diskState"] = "ReadyToUpload"
            raise invalid_parameter(
                f"The VHD uploaded to disk '{disk.name}' is not acceptable: {problem}.",
                "disk",
            )
        disk.properties["diskState"] = "Unattached"
    elif state in {"ActiveSAS", "ActiveSASFrozen"}:
        disk.properties["diskState"] = "Unattached"


COMPLETIONS: Final[dict[str, Completion]] = {
    "disk-provision": provisioned,
    "disk-delete": _deleted,
    "disk-grant": _granted,
    "disk-revoke": _revoke_complete,
}

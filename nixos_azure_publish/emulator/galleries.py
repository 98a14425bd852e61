"""Microsoft.Compute/galleries: galleries, sharing, image definitions and versions.

Rules enforced as Azure does: gallery names, Community sharing needs
``communityGalleryInfo``, definition identifiers unique per gallery and
immutable fields after creation, the current API's defaults (V2 +
TrustedLaunchSupported), version names ``Major.Minor.Patch``, sources that
exist and are ready, matching Hyper-V generations, and a per-region
replication state machine that advances with (configurable) time.
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator import apiversions
from nixos_azure_publish.emulator.armerror import (
    ArmError,
    conflict,
    invalid_parameter,
    not_allowed,
    property_change,
)
from nixos_azure_publish.emulator.common import (
    Envelope,
    check_name,
    immutable,
    known_region,
    normalize_location,
    parse_id,
    props,
    provisioned,
    tags_of,
)
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.kinds import Kind
from nixos_azure_publish.emulator.store import Resource

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.emulator.context import Completion, Request
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.kinds import InUse
    from nixos_azure_publish.emulator.store import Operation

GALLERY: Final = "Microsoft.Compute/galleries"
IMAGE: Final = "Microsoft.Compute/galleries/images"
VERSION: Final = "Microsoft.Compute/galleries/images/versions"
_GALLERY_NAME: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._]{0,78}[A-Za-z0-9])?$")
_IMAGE_NAME: Final = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,78}[A-Za-z0-9])?$")
_VERSION_NAME: Final = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
INT32_MAX: Final = 2**31 - 1
FAILS_AT: Final = 50
"""Progress (percent) at which an injected replication failure stops a region."""
MAX_REPLICAS: Final = 100
REPLICA_STORAGE: Final = {"Standard_LRS", "Standard_ZRS", "Premium_LRS"}
SECURITY_TYPES: Final = {
    "Standard",
    "TrustedLaunchSupported",
    "TrustedLaunch",
    "TrustedLaunchAndConfidentialVmSupported",
    "ConfidentialVMSupported",
    "ConfidentialVM",
    "ConfidentialVmSupported",
}
# Definitions of these security types refuse a managed disk as a version's source.
_TRUSTED_LAUNCH_TYPES: Final = frozenset(
    {"trustedlaunchsupported", "trustedlaunch", "trustedlaunchandconfidentialvmsupported"}
)
# Definition features Azure knows, with their values (compared without case or blanks).
FEATURE_NAMES: Final = (
    "SecurityType",
    "IsAcceleratedNetworkSupported",
    "DiskControllerTypes",
    "IsHibernateSupported",
)
FEATURES: Final = {
    "securitytype": frozenset(v.lower() for v in SECURITY_TYPES),
    "isacceleratednetworksupported": frozenset({"true", "false"}),
    "diskcontrollertypes": frozenset({"scsi", "nvme", "scsi,nvme", "nvme,scsi"}),
    "ishibernatesupported": frozenset({"true", "false"}),
}
# Fixed once the definition exists (Azure: PropertyChangeNotAllowed).
IMMUTABLE_IMAGE_FIELDS: Final = (
    "osType",
    "osState",
    "hyperVGeneration",
    "architecture",
    "purchasePlan",
)


# -- helpers ---------------------------------------------------------------------------------


def _same_location(parent: Resource, location: str, what: str) -> None:
    if parent.body["location"] != location:
        raise invalid_parameter(
            f"The {what} must be in the same location as gallery '{parent.name}' "
            f"('{parent.body['location']}'), not '{location}'.",
            "location",
        )


# -- galleries -------------------------------------------------------------------------------


def put_gallery(req: Request) -> Response:
    req.app.require_group(req)
    name = req.params["galleryName"]
    check_name(
        name,
        _GALLERY_NAME,
        "gallery",
        "1-80 letters, digits, '.' and '_', starting and ending with a letter or digit",
        "galleryName",
    )
    envelope = Envelope.of(req)
    properties = envelope.properties
    sharing = properties.get("sharingProfile") or {}
    permissions = sharing.get("permissions", "Private")
    if permissions not in {"Private", "Groups", "Community"}:
        raise invalid_parameter(
            f"The value '{permissions}' of sharingProfile.permissions is not valid.",
            "gallery.properties.sharingProfile.permissions",
        )
    community = (
        _community_info(sharing.get("communityGalleryInfo")) if permissions == "Community" else {}
    )
    existing = req.app.store.get(GALLERIES.id(req))
    if existing is not None:
        if existing.body["location"] != envelope.location:
            raise property_change("gallery.location")
        old_sharing = existing.properties["sharingProfile"]
        if permissions != old_sharing["permissions"] and "sharingProfile" in properties:
            raise ArmError(
                409,
                "OperationNotAllowed",
                "The sharing permissions of an existing gallery cannot be changed with a "
                "PUT; use the gallery's /share operation.",
            )
        existing.body["tags"] = envelope.tags
        if "description" in properties:
            existing.properties["description"] = properties["description"]
        existing.properties["provisioningState"] = "Updating"
        return GALLERIES.provisioning(req, existing, "gallery-provision", status=200)
    profile: dict[str, Any] = {"permissions": permissions}
    if permissions == "Community":
        profile["communityGalleryInfo"] = {
            **community,
            "communityGalleryEnabled": False,
            "publicNames": [f"{community['publicNamePrefix']}-{uuid.uuid4()}"],
        }
    gallery = GALLERIES.new(
        req,
        envelope,
        {
            "identifier": {"uniqueName": f"{req.subscription}-{name.upper()}"},
            "sharingProfile": profile,
            "provisioningState": "Creating",
        },
    )
    if properties.get("description") is not None:
        gallery.properties["description"] = properties["description"]
    return GALLERIES.provisioning(req, gallery, "gallery-provision", status=201)


def _community_info(info: object) -> dict[str, str]:
    target = "gallery.properties.sharingProfile.communityGalleryInfo"
    if not isinstance(info, dict):
        raise invalid_parameter(
            "A gallery shared with the community requires sharingProfile.communityGalleryInfo "
            "(publisherUri, publisherContact, eula, publicNamePrefix).",
            target,
        )
    missing = [
        key
        for key in ("publisherUri", "publisherContact", "eula", "publicNamePrefix")
        if not isinstance(info.get(key), str) or not info[key]
    ]
    if missing:
        raise invalid_parameter(
            f"Required parameter(s) {', '.join(missing)} of communityGalleryInfo are missing.",
            target,
        )
    prefix = info["publicNamePrefix"]
    if not re.match(r"^[A-Za-z0-9]{5,16}$", prefix):
        raise invalid_parameter(
            f"publicNamePrefix '{prefix}' is invalid: 5-16 letters and digits.",
            f"{target}.publicNamePrefix",
        )
    return {k: info[k] for k in ("publisherUri", "publisherContact", "eula", "publicNamePrefix")}


def _empty_first(what: str, holds: str, kind: Callable[[], Kind]) -> InUse:
    """Azure refuses to delete a *what* that still holds resources of the child *kind*."""

    def in_use(req: Request, parent: Resource) -> None:
        child = kind()
        if list(req.app.store.children(f"{parent.id}/{child.segment}", child.type)):
            raise conflict(
                f"{what} '{parent.name}' cannot be deleted because it {holds}; delete them first.",
                "CannotDeleteResource",
            )

    return in_use


def share(req: Request) -> Response:
    gallery = GALLERIES.require(req)
    body = req.json_body()
    operation = body.get("operationType")
    profile = gallery.properties["sharingProfile"]
    if operation not in {
        "Add",
        "Remove",
        "Reset",
        "EnableCommunity",
        "EnableCommunityGalleryVersion",
    }:
        raise invalid_parameter(
            f"The value '{operation}' of operationType is not valid.", "sharingUpdate.operationType"
        )
    if operation == "EnableCommunity" and profile["permissions"] != "Community":
        raise not_allowed(
            f"Gallery '{gallery.name}' was not created with sharingProfile.permissions "
            "Community; community sharing cannot be enabled on it."
        )
    if operation in {"Add", "Remove"} and profile["permissions"] == "Community":
        raise not_allowed("Groups cannot be shared with on a community gallery.")
    op = req.app.start_lro(
        req,
        kind="gallery-share",
        resource_id=gallery.id,
        location=gallery.body["location"],
        args={"update": body, "marks_resource": False},
    )
    # GalleryRP declares a SharingUpdate body on the 202, unlike most POST actions.
    echo: dict[str, Any] = {"operationType": operation}
    if body.get("groups"):
        echo["groups"] = body["groups"]
    return req.app.lro_response(op, status=202, body=echo)


# -- image definitions -----------------------------------------------------------------------


def put_image(req: Request) -> Response:
    gallery = GALLERIES.require(req)
    name = req.params["galleryImageName"]
    check_name(
        name,
        _IMAGE_NAME,
        "gallery image",
        "1-80 letters, digits, '.', '-' and '_', starting and ending with a letter or digit",
        "galleryImageName",
    )
    envelope = Envelope.of(req)
    _same_location(gallery, envelope.location, "image definition")
    properties = envelope.properties
    _check_image_required(properties)
    identifier = properties["identifier"]
    rid = DEFINITIONS.id(req)
    _identifier_unique(req, gallery, rid, identifier)
    features = _features(properties)
    existing = req.app.store.get(rid)
    if existing is not None:
        _update_image(existing, properties, features)
        existing.body["tags"] = envelope.tags
        return DEFINITIONS.provisioning(req, existing, "gallery-provision", status=200)
    image = DEFINITIONS.new(
        req, envelope, _new_image_properties(properties, features, req.api_version)
    )
    return DEFINITIONS.provisioning(req, image, "gallery-provision", status=201)


def _check_image_required(properties: dict[str, Any]) -> None:
    for key in ("osType", "osState", "identifier"):
        if properties.get(key) is None:
            raise invalid_parameter(
                f"Required parameter 'galleryImage.properties.{key}' is missing (null).",
                f"galleryImage.properties.{key}",
            )
    identifier = properties["identifier"]
    if not isinstance(identifier, dict) or not all(
        isinstance(identifier.get(k), str) and identifier[k] for k in ("publisher", "offer", "sku")
    ):
        raise invalid_parameter(
            "galleryImage.properties.identifier needs publisher, offer and sku.",
            "galleryImage.properties.identifier",
        )
    for key, allowed in (
        ("osState", {"Generalized", "Specialized"}),
        ("osType", {"Linux", "Windows"}),
        ("hyperVGeneration", {"V1", "V2", None}),
        ("architecture", {"x64", "Arm64", None}),
    ):
        if properties.get(key) not in allowed:
            raise invalid_parameter(
                f"The value '{properties[key]}' of {key} is not valid.",
                f"galleryImage.properties.{key}",
            )


_MUTABLE_IMAGE_FIELDS: Final = (
    "description",
    "eula",
    "privacyStatementUri",
    "releaseNoteUri",
    "endOfLifeDate",
    "recommended",
    "disallowed",
)


def _update_image(
    existing: Resource, properties: dict[str, Any], features: list[dict[str, str]]
) -> None:
    old = existing.properties
    for key in IMMUTABLE_IMAGE_FIELDS:
        immutable(old.get(key), properties.get(key), f"galleryImage.properties.{key}")
    identifier = properties["identifier"]
    immutable(
        {k: old["identifier"][k].lower() for k in ("publisher", "offer", "sku")},
        {k: identifier[k].lower() for k in ("publisher", "offer", "sku")},
        "galleryImage.properties.identifier",
    )
    if "features" in properties:
        immutable(
            _feature(old.get("features", []), "SecurityType"),
            _feature(features, "SecurityType"),
            "galleryImage.properties.features.SecurityType",
        )
        old["features"] = features
    for key in _MUTABLE_IMAGE_FIELDS:
        if key in properties:
            old[key] = properties[key]
    old["provisioningState"] = "Updating"


def _new_image_properties(
    properties: dict[str, Any], features: list[dict[str, str]], api_version: str
) -> dict[str, Any]:
    # Since gallery API 2025-03-03 a new definition defaults to V2, and without a security
    # type gets the Trusted Launch default (generation 2 only); before, V1 and Standard.
    current = api_version >= apiversions.TRUSTED_LAUNCH_DEFAULT_SINCE
    generation = properties.get("hyperVGeneration") or ("V2" if current else "V1")
    if _feature(features, "SecurityType") is None and generation == "V2" and current:
        features = [*features, {"name": "SecurityType", "value": "TrustedLaunchSupported"}]
    security = _feature(features, "SecurityType")
    if security not in {None, "Standard"} and generation != "V2":
        raise invalid_parameter(
            f"SecurityType '{security}' requires hyperVGeneration V2.",
            "galleryImage.properties.features",
        )
    stored: dict[str, Any] = {
        key: properties[key]
        for key in (*_MUTABLE_IMAGE_FIELDS, "purchasePlan")
        if properties.get(key) is not None
    }
    identifier = properties["identifier"]
    stored.update(
        {
            "osType": properties["osType"],
            "osState": properties["osState"],
            "identifier": {k: identifier[k] for k in ("publisher", "offer", "sku")},
            "hyperVGeneration": generation,
            "architecture": properties.get("architecture", "x64"),
            "features": features,
            "provisioningState": "Creating",
        }
    )
    return stored


def _features(properties: dict[str, Any]) -> list[dict[str, str]]:
    features = properties.get("features") or []
    if not isinstance(features, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) for f in features
    ):
        raise invalid_parameter(
            "galleryImage.properties.features must be a list of {name, value}.",
            "galleryImage.properties.features",
        )
    target = "galleryImage.properties.features"
    for feature in features:
        name = str(feature["name"])
        allowed = FEATURES.get(name.lower())
        if allowed is None:
            raise invalid_parameter(
                f"The feature '{name}' is not supported. Supported features are "
                f"{', '.join(sorted(FEATURE_NAMES))}.",
                target,
            )
        value = str(feature.get("value", ""))
        if value.replace(" ", "").lower() not in allowed:
            raise invalid_parameter(
                f"The value '{value}' of feature {name} is not valid.",
                target,
            )
    return [dict(f) for f in features]


def _feature(features: list[dict[str, Any]], name: str) -> str | None:
    for feature in features:
        if str(feature.get("name", "")).lower() == name.lower():
            return str(feature.get("value"))
    return None


def _identifier_unique(
    req: Request, gallery: Resource, rid: str, identifier: dict[str, str]
) -> None:
    wanted = tuple(identifier[k].lower() for k in ("publisher", "offer", "sku"))
    for other in req.app.store.children(gallery.id + "/images", IMAGE):
        if other.id.lower() == rid.lower():
            continue
        ident = other.properties["identifier"]
        if tuple(ident[k].lower() for k in ("publisher", "offer", "sku")) == wanted:
            raise conflict(
                f"Gallery image '{other.name}' in gallery '{gallery.name}' already has the "
                f"identifier (publisher '{identifier['publisher']}', offer "
                f"'{identifier['offer']}', sku '{identifier['sku']}'); identifiers are unique "
                "per gallery.",
            )


# -- image versions --------------------------------------------------------------------------


def _check_version_name(name: str) -> None:
    match = _VERSION_NAME.match(name)
    if match is None or any(int(part) > INT32_MAX for part in match.groups()):
        raise invalid_parameter(
            f"The gallery image version name '{name}' is invalid. It must follow the format "
            "<MajorVersion>.<MinorVersion>.<Patch>, each a 32-bit integer.",
            "galleryImageVersionName",
        )


def _target_regions(
    profile: dict[str, Any], location: str, default_replicas: int
) -> list[dict[str, Any]]:
    target = "galleryImageVersion.properties.publishingProfile.targetRegions"
    raw = profile.get("targetRegions")
    if raw is None:
        raw = [{"name": location}]
    if not isinstance(raw, list) or not raw:
        raise invalid_parameter(
            "publishingProfile.targetRegions must list at least one region.", target
        )
    default_storage = profile.get("storageAccountType", "Standard_LRS")
    regions = [_target_region(entry, default_replicas, default_storage) for entry in raw]
    names = [normalize_location(r["name"]) for r in regions]
    for name in names:
        if names.count(name) > 1:
            raise invalid_parameter(f"The target region '{name}' is listed more than once.", target)
    if location not in names:
        raise invalid_parameter(
            f"The image version's own region '{location}' must be one of its target regions.",
            target,
        )
    return regions


def _target_region(entry: object, default_replicas: int, default_storage: str) -> dict[str, Any]:
    target = "galleryImageVersion.properties.publishingProfile.targetRegions"
    if not isinstance(entry, dict) or not entry.get("name"):
        raise invalid_parameter("Every target region needs a name.", target)
    name = known_region(
        normalize_location(entry["name"], target="targetRegions.name"), VERSION, target=target
    )
    replicas = entry.get("regionalReplicaCount", default_replicas)
    if not isinstance(replicas, int) or not 1 <= replicas <= MAX_REPLICAS:
        raise invalid_parameter(
            f"regionalReplicaCount {replicas} of region '{name}' is invalid: 1 to {MAX_REPLICAS}.",
            target,
        )
    storage = entry.get("storageAccountType", default_storage)
    if storage not in REPLICA_STORAGE:
        raise invalid_parameter(
            f"storageAccountType '{storage}' of region '{name}' is invalid.", target
        )
    region: dict[str, Any] = {
        "name": entry["name"],
        "regionalReplicaCount": replicas,
        "storageAccountType": storage,
    }
    if "excludeFromLatest" in entry:
        region["excludeFromLatest"] = bool(entry["excludeFromLatest"])
    if "encryption" in entry:
        region["encryption"] = entry["encryption"]
    return region


def _check_disk_source(image: Resource, disk: Resource) -> None:
    """Trusted Launch-type definitions take no managed disk as a version's source.

    Observed behaviour (Azure, 2023-24): such definitions take only VHD blob, managed
    image ("User Image") and gallery version sources.
    """
    security = _feature(image.properties.get("features", []), "SecurityType") or ""
    if security.lower() in _TRUSTED_LAUNCH_TYPES:
        raise invalid_parameter(
            f"The security type '{security}' is not supported for the source id "
            f"'{disk.id}'. Currently only Vhd Blob, User Image and Gallery Image "
            f"Version sources are supported for '{security}' images.",
            "galleryImageVersion.properties.storageProfile",
        )


_COMMUNITY_SOURCE: Final = re.compile(
    r"^/CommunityGalleries/(?P<gallery>[^/]+)/Images/(?P<image>[^/]+)/Versions/(?P<version>[^/]+)$",
    re.IGNORECASE,
)


def _source_version(req: Request, version: Resource, location: str) -> tuple[str, int]:
    """A gallery version as another version's source: its definition's generation and size.

    Azure copies from a replica in the new version's region: the source must have
    finished provisioning and be replicated there.
    """
    if version.properties.get("provisioningState") != "Succeeded":
        raise not_allowed(
            f"The source gallery image version '{version.id}' is not ready (provisioningState "
            f"'{version.properties.get('provisioningState')}')."
        )
    if location not in replicated_regions(req, version):
        raise invalid_parameter(
            f"The source gallery image version '{version.id}' is not replicated to region "
            f"'{location}'. Replicate it there first.",
            "galleryImageVersion.properties.storageProfile.source",
        )
    parent = req.app.store.get(version.id.rsplit("/versions/", 1)[0])
    generation = (parent.properties if parent else {}).get("hyperVGeneration", "V1")
    size_gb = (version.properties.get("storageProfile", {}).get("osDiskImage") or {}).get(
        "sizeInGB", 1
    )
    return str(generation), int(size_gb)


def _community_source(
    req: Request, reference: str, image: Resource, location: str
) -> dict[str, Any]:
    """``source.communityGalleryImageId``: a shared community version, replicated here."""
    from nixos_azure_publish.emulator.community import find_image  # noqa: PLC0415 - a cycle

    target = "galleryImageVersion.properties.storageProfile.source.communityGalleryImageId"
    match = _COMMUNITY_SOURCE.match(reference)
    if match is None:
        raise invalid_parameter(
            f"The community gallery image id '{reference}' is not valid: "
            "/CommunityGalleries/<name>/Images/<image>/Versions/<version>.",
            target,
        )
    # Only a gallery whose community sharing is enabled is found by its public name.
    source_image = find_image(req.app, match["gallery"], match["image"])
    source = (
        req.app.store.get(f"{source_image.id}/versions/{match['version']}")
        if source_image is not None
        else None
    )
    if source is None:
        raise ArmError(
            404,
            "NotFound",
            f"The community gallery image version '{reference}' was not found.",
            target=target,
        )
    generation, size_gb = _source_version(req, source, location)
    _check_generation(source.id, generation, image)
    return {
        "source": {"communityGalleryImageId": reference},
        "osDiskImage": {"hostCaching": "ReadWrite", "sizeInGB": size_gb},
    }


def _check_generation(source_id: str, source_generation: str, image: Resource) -> None:
    generation = image.properties.get("hyperVGeneration", "V1")
    if source_generation != generation:
        raise conflict(
            f"The resource with id '{source_id}' has a different Hypervisor generation "
            f"['{source_generation}'] than the parent gallery image Hypervisor generation "
            f"['{generation}']."
        )


def _source(
    req: Request, storage: dict[str, Any], image: Resource, location: str
) -> dict[str, Any]:
    """Check the version's source like Azure and return a normalized storage profile."""
    source = storage.get("source") or {}
    os_disk = storage.get("osDiskImage") or {}
    if source.get("communityGalleryImageId"):
        return _community_source(req, str(source["communityGalleryImageId"]), image, location)
    return _resource_source(req, source, os_disk, image, location)


def _resource_source(  # noqa: C901 - one branch per kind of source, as Azure's rules go
    req: Request,
    source: dict[str, Any],
    os_disk: dict[str, Any],
    image: Resource,
    location: str,
) -> dict[str, Any]:
    """A source named by resource id: a disk, a managed image or another gallery's version."""
    source_id = source.get("id") or (os_disk.get("source") or {}).get("id")
    if not source_id:
        raise invalid_parameter(
            "The image version needs a source: storageProfile.source.id (a managed image or "
            "disk) or storageProfile.osDiskImage.source.id (a disk or snapshot).",
            "galleryImageVersion.properties.storageProfile",
        )
    parsed = parse_id(source_id)
    if parsed is None:
        raise invalid_parameter(
            f"The source id '{source_id}' is not a valid resource id.",
            "galleryImageVersion.properties.storageProfile.source.id",
        )
    resource = req.app.store.get(source_id)
    if resource is None:
        raise ArmError(
            404,
            "NotFound",
            f"The source resource '{source_id}' of the image version was not found.",
            target="galleryImageVersion.properties.storageProfile.source.id",
        )
    generation = image.properties.get("hyperVGeneration", "V1")
    if resource.type == "Microsoft.Compute/disks":
        state = resource.properties.get("diskState")
        if state not in {"Unattached", "Reserved", "Attached"}:
            raise not_allowed(
                f"The source disk '{resource.name}' is in state '{state}'; finish the upload "
                "and revoke its access (endGetAccess) first."
            )
        size_gb = resource.properties.get("diskSizeGB", 1)
        _check_disk_source(image, resource)
    elif resource.type == "Microsoft.Compute/images":
        if resource.properties.get("provisioningState") != "Succeeded":
            raise not_allowed(
                f"The source image '{resource.name}' is not ready (provisioningState "
                f"'{resource.properties.get('provisioningState')}')."
            )
        size_gb = resource.properties["storageProfile"]["osDisk"].get("diskSizeGB", 1)
    elif resource.type == VERSION:
        source_generation, size_gb = _source_version(req, resource, location)
        _check_generation(resource.id, source_generation, image)
        return {
            "source": {"id": resource.id},
            "osDiskImage": {"hostCaching": "ReadWrite", "sizeInGB": size_gb},
        }
    else:
        raise invalid_parameter(
            f"A resource of type '{resource.type}' cannot be the source of an image version.",
            "galleryImageVersion.properties.storageProfile.source.id",
        )
    source_generation = resource.properties.get("hyperVGeneration", "V1")
    if source_generation != generation:
        raise conflict(
            f"The resource with id '{resource.id}' has a different Hypervisor generation "
            f"['{source_generation}'] than the parent gallery image Hypervisor generation "
            f"['{generation}']."
        )
    if os_disk.get("source"):
        return {
            "osDiskImage": {
                "hostCaching": os_disk.get("hostCaching", "ReadWrite"),
                "sizeInGB": size_gb,
                "source": {"id": resource.id},
            }
        }
    return {
        "source": {"id": resource.id},
        "osDiskImage": {"hostCaching": "ReadWrite", "sizeInGB": size_gb},
    }


def put_version(req: Request) -> Response:
    image = DEFINITIONS.require(req)
    name = req.params["galleryImageVersionName"]
    _check_version_name(name)
    envelope = Envelope.of(req)
    location, tags, properties = envelope.location, envelope.tags, envelope.properties
    _same_location(image, location, "image version")
    profile = properties.get("publishingProfile") or {}
    replica_count = profile.get("replicaCount", 1)
    if not isinstance(replica_count, int) or not 1 <= replica_count <= MAX_REPLICAS:
        raise invalid_parameter(
            f"replicaCount {replica_count} is invalid: 1 to {MAX_REPLICAS}.",
            "galleryImageVersion.properties.publishingProfile.replicaCount",
        )
    regions = _target_regions(profile, location, replica_count)
    rid = VERSIONS.id(req)
    existing = req.app.store.get(rid)
    if existing is not None:
        return _update_version(
            req, existing, properties=properties, profile=profile, regions=regions, tags=tags
        )
    if properties.get("storageProfile") is None:
        raise invalid_parameter(
            "Required parameter 'galleryImageVersion.properties.storageProfile' is missing.",
            "galleryImageVersion.properties.storageProfile",
        )
    storage = _source(req, properties["storageProfile"], image, location)
    publishing: dict[str, Any] = {
        "targetRegions": regions,
        "replicaCount": replica_count,
        "excludeFromLatest": bool(profile.get("excludeFromLatest", False)),
        "publishedDate": req.app.now_iso(),
        "storageAccountType": profile.get("storageAccountType", "Standard_LRS"),
        "replicationMode": profile.get("replicationMode", "Full"),
    }
    if profile.get("endOfLifeDate") is not None:
        publishing["endOfLifeDate"] = profile["endOfLifeDate"]
    # Azure's default is false: an update that leaves out a replicated region is refused
    # unless the version (or the update itself) allows it.
    safety = {
        "allowDeletionOfReplicatedLocations": bool(
            (properties.get("safetyProfile") or {}).get("allowDeletionOfReplicatedLocations", False)
        ),
        "reportedForPolicyViolation": False,
    }
    version = Resource(
        id=rid,
        type=VERSION,
        body={
            "id": rid,
            "name": name,
            "type": VERSION,
            "location": location,
            "tags": tags,
            "properties": {
                "publishingProfile": publishing,
                "storageProfile": storage,
                "safetyProfile": safety,
                "provisioningState": "Creating",
            },
        },
    )
    now = req.app.now()
    version.meta["replication"] = _schedule(req, [r["name"] for r in regions], now, {})
    req.app.store.put(version)
    op = req.app.start_lro(
        req,
        kind="version-provision",
        resource_id=rid,
        location=location,
        seconds=_replication_done(version) - now,
    )
    return req.app.lro_response(
        op, status=201, body=_view(req, version, expand=False), location=False
    )


def _schedule(
    req: Request, regions: list[str], now: float, old: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per region: when replication started, when it completes, and an injected failure."""
    plan: dict[str, dict[str, Any]] = {}
    step = req.app.settings.replication_seconds
    fresh = 0
    for region in regions:
        key = normalize_location(region)
        if key in old:
            plan[key] = old[key]
            continue
        fresh += 1
        plan[key] = {
            "start": now,
            "end": now + step * (1 + 0.5 * (fresh - 1)) + req.app.faults.lro_delay,
        }
        failure = req.app.faults.replication_failure(key)
        if failure is not None:
            plan[key]["failed"] = failure
    return plan


def _replication_done(version: Resource) -> float:
    return max(float(r["end"]) for r in version.meta["replication"].values())


def _replication_status(req: Request, version: Resource) -> dict[str, Any]:
    now = req.app.now()
    summary = []
    for region in version.properties["publishingProfile"]["targetRegions"]:
        plan = version.meta["replication"][normalize_location(region["name"])]
        span = max(plan["end"] - plan["start"], 1e-9)
        progress = 100 if now >= plan["end"] else int(100 * (now - plan["start"]) / span)
        state, details = ("Completed" if progress >= 100 else "Replicating"), ""  # noqa: PLR2004
        if plan.get("failed") and progress >= FAILS_AT:
            # An injected failure stops replication to this region halfway.
            state, details, progress = "Failed", str(plan["failed"]), FAILS_AT
        summary.append(
            {
                "region": region["name"],
                "state": state,
                "details": details,
                "progress": max(0, min(progress, 100)),
            }
        )
    states = {s["state"] for s in summary}
    aggregated = "InProgress"
    if "Failed" in states:
        aggregated = "Failed"
    elif states == {"Completed"}:
        aggregated = "Completed"
    return {"aggregatedState": aggregated, "summary": summary}


def failed_regions(version: Resource) -> dict[str, str]:
    """Regions whose replication has failed (or will), with Azure's details."""
    return {
        region: str(plan["failed"])
        for region, plan in version.meta.get("replication", {}).items()
        if plan.get("failed")
    }


def _version_done(app: ArmApp, op: Operation) -> None:
    """A version's create or update ends when replication does: Failed if a region failed."""
    version = app.store.get(op.resource_id)
    if version is None:
        return
    failed = failed_regions(version)
    if failed:
        raise ArmError(
            500,
            "ReplicationJobsNotCompleted",
            "Replication job not completed at region(s): "
            + "; ".join(f"{region}: {details}" for region, details in sorted(failed.items())),
        )
    version.properties["provisioningState"] = "Succeeded"


def replicated_regions(req: Request, version: Resource) -> set[str]:
    """The regions where *version* is fully replicated now."""
    status = _replication_status(req, version)
    return {normalize_location(s["region"]) for s in status["summary"] if s["state"] == "Completed"}


def _view(req: Request, version: Resource, *, expand: bool) -> dict[str, Any]:
    body = dict(version.body)
    if expand:
        body["properties"] = {
            **version.properties,
            "replicationStatus": _replication_status(req, version),
        }
    return body


def _update_version(
    req: Request,
    version: Resource,
    *,
    properties: dict[str, Any],
    profile: dict[str, Any],
    regions: list[dict[str, Any]],
    tags: dict[str, str],
) -> Response:
    storage = properties.get("storageProfile")
    if storage is not None:
        old = version.properties["storageProfile"]
        new_id = (storage.get("source") or {}).get("id") or (
            (storage.get("osDiskImage") or {}).get("source") or {}
        ).get("id")
        old_id = (old.get("source") or {}).get("id") or (
            (old.get("osDiskImage") or {}).get("source") or {}
        ).get("id")
        if new_id is not None and str(new_id).lower() != str(old_id).lower():
            raise property_change("galleryImageVersion.properties.storageProfile.source")
    publishing = version.properties["publishingProfile"]
    old_regions = {normalize_location(r["name"]) for r in publishing["targetRegions"]}
    new_regions = {normalize_location(r["name"]) for r in regions}
    removed = old_regions - new_regions
    # The update's own safety profile counts for this update, and is kept.
    safety = {
        **version.properties.get("safetyProfile", {}),
        **(properties.get("safetyProfile") or {}),
    }
    if removed and not safety.get("allowDeletionOfReplicatedLocations", False):
        # Azure's words (seen in terraform-provider-azurerm's acceptance tests, PR 21999).
        raise ArmError(
            400,
            "BadRequest",
            "Complete set of target locations not specified while updating gallery artifact"  # noqa: S608 - not SQL
            f" '{version.body['name']}' and type 'GalleryImageVersion'. Deletion of previously"
            " replicated locations is not allowed, and you need to specify a complete set of"
            " target locations in the update request or specify null or empty set for target"
            " regions in the update request or set allow deletion of replicated locations"
            " under safety profile property.",
        )
    version.properties["safetyProfile"] = safety
    if "targetRegions" in profile:
        publishing["targetRegions"] = regions
    for key in ("replicaCount", "excludeFromLatest", "endOfLifeDate"):
        if key in profile:
            publishing[key] = profile[key]
    version.body["tags"] = tags
    now = req.app.now()
    version.meta["replication"] = _schedule(
        req, [r["name"] for r in publishing["targetRegions"]], now, version.meta["replication"]
    )
    version.properties["provisioningState"] = "Updating"
    op = req.app.start_lro(
        req,
        kind="version-provision",
        resource_id=version.id,
        location=version.body["location"],
        seconds=max(_replication_done(version) - now, req.app.settings.operation_seconds),
    )
    return req.app.lro_response(
        op, status=200, body=_view(req, version, expand=False), location=False
    )


def patch_version(req: Request) -> Response:
    version = VERSIONS.require(req)
    body = req.json_body()
    properties = props(body)
    if properties.get("storageProfile") is None:
        # The update model requires it too (GalleryImageVersionUpdate in GalleryRP).
        raise invalid_parameter(
            "Required parameter 'galleryImageVersion.properties.storageProfile' is missing.",
            "galleryImageVersion.properties.storageProfile",
        )
    profile = properties.get("publishingProfile") or {}
    merged = {**version.properties["publishingProfile"], **profile}
    regions = _target_regions(merged, version.body["location"], merged.get("replicaCount", 1))
    tags = tags_of(body) if "tags" in body else version.body.get("tags", {})
    return _update_version(
        req, version, properties=properties, profile=profile, regions=regions, tags=tags
    )


def get_version(req: Request) -> Response:
    version = VERSIONS.require(req)
    expand = req.query.get("$expand", "")
    if expand and expand.lower() not in {"replicationstatus", "uefisettings"}:
        raise invalid_parameter(
            f"The value '{expand}' of $expand is not valid: ReplicationStatus or UefiSettings.",
            "$expand",
        )
    return Response(200, _view(req, version, expand=expand.lower() == "replicationstatus"))


# -- registration ----------------------------------------------------------------------------


GALLERIES: Final = Kind(
    GALLERY,
    "galleryName",
    "Galleries",
    apiversions.GALLERIES,
    in_use=_empty_first("Gallery", "contains image definitions", lambda: DEFINITIONS),
)
DEFINITIONS: Final[Kind] = GALLERIES.child(
    IMAGE,
    "galleryImageName",
    "GalleryImages",
    "images",
    "ListByGallery",
    in_use=_empty_first("Gallery image", "has image versions", lambda: VERSIONS),
)
VERSIONS: Final[Kind] = DEFINITIONS.child(
    VERSION,
    "galleryImageVersionName",
    "GalleryImageVersions",
    "versions",
    "ListByGalleryImage",
    view=lambda req, version: _view(req, version, expand=False),
)
ROUTES: Final = (
    *GALLERIES.routes(
        put_gallery,
        ("POST", "/share", share, "share/action", "GallerySharingProfile_Update"),
    ),
    *DEFINITIONS.routes(put_image),
    *VERSIONS.routes(
        put_version,
        ("PATCH", "", patch_version, "write", "GalleryImageVersions_Update"),
        get=get_version,
    ),
)


def _deleted(app: ArmApp, op: Operation) -> None:
    app.store.delete(op.resource_id)


def _share_complete(app: ArmApp, op: Operation) -> dict[str, Any]:
    gallery = app.store.get(op.resource_id)
    if gallery is None:
        raise ArmError(404, "NotFound", "The gallery was deleted.")
    update = op.args["update"]
    profile = gallery.properties["sharingProfile"]
    kind = update["operationType"]
    community = profile.get("communityGalleryInfo")
    if kind == "EnableCommunity" and community is not None:
        community["communityGalleryEnabled"] = True
    elif kind == "Reset":
        # A community gallery stays a community gallery, but is no longer shared.
        if community is not None:
            community["communityGalleryEnabled"] = False
        else:
            profile["permissions"] = "Private"
        profile.pop("groups", None)
    elif kind in {"Add", "Remove"}:
        profile["permissions"] = "Groups"
        groups = profile.setdefault("groups", [])
        for group in update.get("groups") or []:
            if kind == "Add":
                groups.append(group)
            elif group in groups:
                groups.remove(group)
    result: dict[str, Any] = {"operationType": kind}
    if update.get("groups"):
        result["groups"] = update["groups"]
    return result


COMPLETIONS: Final[dict[str, Completion]] = {
    "gallery-provision": provisioned,
    "version-provision": _version_done,
    "delete": _deleted,
    "gallery-share": _share_complete,
}

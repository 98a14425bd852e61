"""Community gallery read APIs: what anyone sees of a gallery shared with the community.

``/locations/{loc}/communityGalleries/{publicName}[/images/{image}[/versions/{v}]]``.
A gallery is visible only after ``/share`` EnableCommunity; a version only in the
regions it has finished replicating to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator import apiversions
from nixos_azure_publish.emulator.armerror import ArmError
from nixos_azure_publish.emulator.common import SUBSCRIPTION_PROVIDERS, normalize_location
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.galleries import GALLERY, IMAGE, VERSION, replicated_regions
from nixos_azure_publish.emulator.router import table

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.context import Completion, Request
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Resource

COMMUNITY: Final = "Microsoft.Compute/locations/communityGalleries"


def find_gallery(app: ArmApp, public_name: str) -> Resource | None:
    """The gallery whose community sharing is enabled under *public_name*."""
    for res in app.store.resources.values():
        if res.type != GALLERY:
            continue
        info = res.properties.get("sharingProfile", {}).get("communityGalleryInfo") or {}
        names = [n.lower() for n in info.get("publicNames", [])]
        if info.get("communityGalleryEnabled") and public_name.lower() in names:
            return res
    return None


def find_image(app: ArmApp, public_name: str, image_name: str) -> Resource | None:
    gallery = find_gallery(app, public_name)
    if gallery is None:
        return None
    return app.store.get(f"{gallery.id}/images/{image_name}")


def _not_found(what: str) -> ArmError:
    return ArmError(404, "NotFound", f"The community {what} was not found.")


def _identifier(public_name: str, *parts: str) -> dict[str, str]:
    path = f"/CommunityGalleries/{public_name}"
    labels = ("Images", "Versions")
    for label, part in zip(labels, parts, strict=False):
        path += f"/{label}/{part}"
    return {"uniqueId": path}


def get_gallery(req: Request) -> Response:
    public = req.params["publicGalleryName"]
    gallery = find_gallery(req.app, public)
    if gallery is None:
        raise _not_found(f"gallery '{public}'")
    info = gallery.properties["sharingProfile"]["communityGalleryInfo"]
    return Response(
        200,
        {
            "name": public,
            "location": normalize_location(req.params["location"]),
            "type": COMMUNITY,
            "identifier": _identifier(public),
            "properties": {
                "disclaimer": "",
                "artifactTags": {},
                "communityMetadata": {
                    "publisherUri": info["publisherUri"],
                    "publisherContact": info["publisherContact"],
                    "eula": info["eula"],
                    "publicNames": info["publicNames"],
                },
            },
        },
    )


def _image_view(req: Request, public: str, image: Resource) -> dict[str, Any]:
    p = image.properties
    props: dict[str, Any] = {
        key: p[key]
        for key in (
            "osType",
            "osState",
            "endOfLifeDate",
            "recommended",
            "disallowed",
            "hyperVGeneration",
            "features",
            "purchasePlan",
            "architecture",
            "privacyStatementUri",
            "eula",
        )
        if key in p
    }
    props["identifier"] = dict(p["identifier"])
    props["artifactTags"] = {}
    return {
        "name": image.name,
        "location": normalize_location(req.params["location"]),
        "type": f"{COMMUNITY}/images",
        "identifier": _identifier(public, image.name),
        "properties": props,
    }


def _image(req: Request) -> tuple[str, Resource]:
    public = req.params["publicGalleryName"]
    image = find_image(req.app, public, req.params["galleryImageName"])
    if image is None:
        raise _not_found(f"gallery image '{public}/{req.params['galleryImageName']}'")
    return public, image


def get_image(req: Request) -> Response:
    public, image = _image(req)
    return Response(200, _image_view(req, public, image))


def list_images(req: Request) -> Response:
    public = req.params["publicGalleryName"]
    gallery = find_gallery(req.app, public)
    if gallery is None:
        raise _not_found(f"gallery '{public}'")
    images = req.app.store.children(gallery.id + "/images", IMAGE)
    return Response(200, {"value": [_image_view(req, public, i) for i in images]})


def _visible_versions(req: Request, image: Resource) -> list[Resource]:
    location = normalize_location(req.params["location"])
    return [
        v
        for v in req.app.store.children(image.id + "/versions", VERSION)
        if location in replicated_regions(req, v)
    ]


def _version_view(req: Request, public: str, image: Resource, version: Resource) -> dict[str, Any]:
    publishing = version.properties["publishingProfile"]
    os_disk = version.properties["storageProfile"].get("osDiskImage", {})
    props: dict[str, Any] = {
        "publishedDate": publishing.get("publishedDate"),
        "excludeFromLatest": bool(publishing.get("excludeFromLatest", False)),
        "storageProfile": {
            "osDiskImage": {
                "diskSizeGB": os_disk.get("sizeInGB", 1),
                "hostCaching": os_disk.get("hostCaching", "ReadWrite"),
            }
        },
        "artifactTags": {},
    }
    if publishing.get("endOfLifeDate"):
        props["endOfLifeDate"] = publishing["endOfLifeDate"]
    return {
        "name": version.name,
        "location": normalize_location(req.params["location"]),
        "type": f"{COMMUNITY}/images/versions",
        "identifier": _identifier(public, image.name, version.name),
        "properties": props,
    }


def get_version(req: Request) -> Response:
    public, image = _image(req)
    wanted = req.params["galleryImageVersionName"]
    versions = _visible_versions(req, image)
    if wanted.lower() == "latest":
        versions = [
            v for v in versions if not v.properties["publishingProfile"].get("excludeFromLatest")
        ]
        if versions:
            best = max(versions, key=lambda v: tuple(int(p) for p in v.name.split(".")))
            return Response(200, _version_view(req, public, image, best))
    for version in versions:
        if version.name == wanted:
            return Response(200, _version_view(req, public, image, version))
    raise _not_found(f"gallery image version '{public}/{image.name}/{wanted}'")


def list_versions(req: Request) -> Response:
    public, image = _image(req)
    return Response(
        200,
        {"value": [_version_view(req, public, image, v) for v in _visible_versions(req, image)]},
    )


_GALLERY: Final = (
    SUBSCRIPTION_PROVIDERS
    + "Microsoft.Compute/locations/{location}/communityGalleries/{publicGalleryName}"
)
ROUTES: Final = table(
    apiversions.GALLERIES,
    COMMUNITY,
    ("GET", _GALLERY, get_gallery, "read", "CommunityGalleries_Get"),
    ("GET", _GALLERY + "/images", list_images, "images/read", "CommunityGalleryImages_List"),
    (
        "GET",
        _GALLERY + "/images/{galleryImageName}",
        get_image,
        "images/read",
        "CommunityGalleryImages_Get",
    ),
    (
        "GET",
        _GALLERY + "/images/{galleryImageName}/versions",
        list_versions,
        "images/versions/read",
        "CommunityGalleryImageVersions_List",
    ),
    (
        "GET",
        _GALLERY + "/images/{galleryImageName}/versions/{galleryImageVersionName}",
        get_version,
        "images/versions/read",
        "CommunityGalleryImageVersions_Get",
    ),
)
COMPLETIONS: Final[dict[str, Completion]] = {}

"""Where an ``import`` takes its image from: parsed, then resolved to one version.

Three kinds of source:

- a community gallery image, ``/CommunityGalleries/<public>/Images/<image>[/Versions/<v>]``;
- a gallery image version id in any subscription the credential can read,
  ``/subscriptions/.../galleries/<g>/images/<i>[/versions/<v>]``;
- an ``https://`` URL of a fixed VHD.

``latest`` (or no version) resolves as Azure resolves it for a VM in the
destination's region: the highest ``Major.Minor.Patch`` that is not excluded
from latest and is replicated there. Resolving reads only; it also gives what
a new image definition must match (generation, architecture, security type,
features) so that a contradicting target is refused before anything is made.
"""

from __future__ import annotations

import hashlib
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.replication import region_key
from nixos_azure_publish.azure.status import version_key
from nixos_azure_publish.errors import AzureError, UsageError

if TYPE_CHECKING:
    from nixos_azure_publish.azure.clients import AzureClients

Kind = Literal["gallery", "community", "url"]

_COMMUNITY: Final = re.compile(
    r"^/CommunityGalleries/(?P<gallery>[^/]+)/Images/(?P<image>[^/]+)"
    r"(?:/Versions/(?P<version>[^/]+))?/?$",
    re.IGNORECASE,
)
_GALLERY: Final = re.compile(
    r"^/subscriptions/(?P<subscription>[^/]+)/resourceGroups/(?P<group>[^/]+)"
    r"/providers/Microsoft\.Compute/galleries/(?P<gallery>[^/]+)/images/(?P<image>[^/]+)"
    r"(?:/versions/(?P<version>[^/]+))?/?$",
    re.IGNORECASE,
)
_VERSION: Final = re.compile(r"^\d{1,10}\.\d{1,10}\.\d{1,10}$")
LATEST: Final = "latest"


@dataclass(frozen=True)
class ImportSource:
    """A source as the user named it, parsed."""

    kind: Kind
    text: str
    # gallery: subscription, group, gallery; community: the public name.
    subscription: str | None = None
    group: str | None = None
    gallery: str | None = None
    image: str | None = None
    version: str | None = None

    @property
    def image_ref(self) -> str:
        """The source without its version (what the ``source`` tag records)."""
        if self.kind == "community":
            return f"/CommunityGalleries/{self.gallery}/Images/{self.image}"
        if self.kind == "gallery":
            return (
                f"/subscriptions/{self.subscription}/resourceGroups/{self.group}"
                f"/providers/Microsoft.Compute/galleries/{self.gallery}/images/{self.image}"
            )
        return url_without_query(self.text)


def url_without_query(url: str) -> str:
    """The URL without its query (a SAS) or fragment: what may be logged and tagged."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def parse_source(text: str, *, allow_http: bool = False) -> ImportSource:
    """Parse SOURCE; a usage error (exit 2) says what forms are accepted.

    *allow_http* admits ``http://`` URLs: only the local emulator serves its blobs so.
    """
    value = text.strip()
    # The patterns' groups are named as ImportSource's fields.
    patterns: tuple[tuple[Kind, re.Pattern[str]], ...] = (
        ("community", _COMMUNITY),
        ("gallery", _GALLERY),
    )
    for kind, pattern in patterns:
        match = pattern.match(value)
        if match:
            fields = match.groupdict()
            version = _version(fields.pop("version"), value)
            return ImportSource(kind, value, version=version, **fields)
    schemes = ("https://", "http://") if allow_http else ("https://",)
    if value.lower().startswith(schemes) and urllib.parse.urlsplit(value).netloc:
        return ImportSource("url", value)
    shown = url_without_query(value) if "://" in value else value
    raise UsageError(
        f"cannot import from {shown!r}",
        hint="Name a community image (/CommunityGalleries/<name>/Images/<image>[/Versions/<v>]),"
        " a gallery image version id (/subscriptions/.../galleries/<g>/images/<i>/versions/<v>)"
        " or an https:// URL of a fixed VHD",
    )


def _version(value: str | None, text: str) -> str | None:
    if value is None or value.lower() == LATEST:
        return None
    if not _VERSION.match(value):
        raise UsageError(
            f"the version {value!r} in {text!r} is not Major.Minor.Patch or latest",
            hint="Name a version like 1.2.3, or leave it out for the latest",
        )
    return value


@dataclass(frozen=True)
class ResolvedSource:
    """One source version, and what a definition holding it must be."""

    source: ImportSource
    version: str
    # What the new version's storageProfile.source names.
    version_ref: str
    hyper_v_generation: str
    architecture: str
    security_type: str
    features: dict[str, str] = field(default_factory=dict)
    # The source version's own tags (gallery sources only), e.g. its store path.
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        """The source without its version, as the ``source`` tag records it."""
        return self.source.image_ref

    @property
    def content_hash(self) -> str:
        """A content id for the pipeline (32 hex digits): the source version, digested."""
        key = f"{self.reference.lower()}@{self.version}"
        return hashlib.sha256(key.encode()).hexdigest()[:32]

    def storage_profile(self) -> dict[str, Any]:
        """The new version's ``storageProfile``: its source is the source version."""
        if self.source.kind == "community":
            return {"source": {"communityGalleryImageId": self.version_ref}}
        return {"source": {"id": self.version_ref}}


def _definition_facts(props: dict[str, Any]) -> tuple[str, str, str, dict[str, str]]:
    features = {str(f.get("name")): str(f.get("value")) for f in props.get("features") or []}
    generation = str(props.get("hyperVGeneration") or "V1")
    return (
        generation,
        str(props.get("architecture") or "x64"),
        features.get("SecurityType") or "Standard",
        features,
    )


def resolve(clients: AzureClients, source: ImportSource, *, location: str) -> ResolvedSource:
    """The version the source names (``latest`` resolved for *location*); reads only."""
    if source.kind == "community":
        return _resolve_community(clients, source, location)
    if source.kind == "gallery":
        return _resolve_gallery(clients, source, location)
    raise AzureError(  # pragma: no cover - URL sources are resolved by the upload from URL
        "internal: a URL source is not a gallery source"
    )


def _resolve_community(
    clients: AzureClients, source: ImportSource, location: str
) -> ResolvedSource:
    public, image = str(source.gallery), str(source.image)
    compute = clients.compute
    definition = arm.get_or_none(
        f"reading community image {source.image_ref}",
        compute.community_gallery_images.get,
        location,
        public,
        image,
    )
    if definition is None:
        raise AzureError(
            f"community image {source.image_ref} is not found in {location}",
            hint="Check the public gallery name and image name (they are case-sensitive in"
            " places), and that the gallery is shared with the community",
        )
    if source.version is None:
        versions = arm.list_json(
            f"listing the versions of community image {source.image_ref}",
            compute.community_gallery_image_versions.list,
            location,
            public,
            image,
        )
        candidates = [
            str(v.get("name"))
            for v in versions
            if not (v.get("properties") or {}).get("excludeFromLatest")
        ]
        if not candidates:
            raise AzureError(
                f"community image {source.image_ref} has no version in latest that is"
                f" replicated to {location}",
                hint="Name a version explicitly, or import into a region the image is in",
            )
        version = max(candidates, key=version_key)
    else:
        found = arm.get_or_none(
            f"reading community image version {source.text}",
            compute.community_gallery_image_versions.get,
            location,
            public,
            image,
            source.version,
        )
        if found is None:
            raise AzureError(
                f"community image version {source.image_ref}/Versions/{source.version} is not"
                f" found in {location}",
                hint="Check the version, and that it is replicated to the target's location",
            )
        version = source.version
    generation, arch, security, features = _definition_facts(definition.get("properties") or {})
    return ResolvedSource(
        source=source,
        version=version,
        version_ref=f"{source.image_ref}/Versions/{version}",
        hyper_v_generation=generation,
        architecture=arch,
        security_type=security,
        features=features,
    )


def _resolve_gallery(clients: AzureClients, source: ImportSource, location: str) -> ResolvedSource:
    compute = clients.compute_for(str(source.subscription))
    group, gallery, image = str(source.group), str(source.gallery), str(source.image)
    definition = arm.get_or_none(
        f"reading image definition {source.image_ref}",
        compute.gallery_images.get,
        group,
        gallery,
        image,
    )
    if definition is None:
        raise AzureError(
            f"image definition {source.image_ref} is not found",
            hint="Check the id, and that the identity may read that gallery",
        )
    names = (
        [source.version]
        if source.version is not None
        else [
            str(v.get("name"))
            for v in arm.list_json(
                f"listing the versions of {source.image_ref}",
                compute.gallery_image_versions.list_by_gallery_image,
                group,
                gallery,
                image,
            )
        ]
    )
    chosen: tuple[str, dict[str, Any]] | None = None
    missing = None
    for name in sorted(names, key=version_key, reverse=True):
        body = arm.get_or_none(
            f"reading image version {source.image_ref}/versions/{name}",
            compute.gallery_image_versions.get,
            group,
            gallery,
            image,
            name,
            expand="ReplicationStatus",
        )
        if body is None:
            missing = name
            continue
        props = body.get("properties") or {}
        publishing = props.get("publishingProfile") or {}
        if source.version is None and publishing.get("excludeFromLatest"):
            continue
        if props.get("provisioningState") != "Succeeded" or not _replicated_to(props, location):
            if source.version is not None:
                raise AzureError(
                    f"image version {source.image_ref}/versions/{name} is not replicated to"
                    f" {location} (provisioning {props.get('provisioningState')})",
                    hint="Replicate the source version to the target's location first, or"
                    " import into a region it is replicated to",
                )
            continue
        chosen = (name, body)
        break
    if chosen is None:
        if missing is not None and source.version is not None:
            raise AzureError(
                f"image version {source.image_ref}/versions/{missing} is not found",
                hint="Check the version name",
            )
        raise AzureError(
            f"{source.image_ref} has no version in latest that is replicated to {location}",
            hint="Name a version explicitly, or import into a region the image is in",
        )
    name, body = chosen
    generation, arch, security, features = _definition_facts(definition.get("properties") or {})
    return ResolvedSource(
        source=source,
        version=name,
        version_ref=str(body.get("id") or f"{source.image_ref}/versions/{name}"),
        hyper_v_generation=generation,
        architecture=arch,
        security_type=security,
        features=features,
        tags=dict(body.get("tags") or {}),
    )


def _replicated_to(props: dict[str, Any], location: str) -> bool:
    summary = (props.get("replicationStatus") or {}).get("summary")
    if summary is None:  # no replication status: the target regions say where it is
        regions = (props.get("publishingProfile") or {}).get("targetRegions") or []
        return any(region_key(str(r.get("name", ""))) == region_key(location) for r in regions)
    return any(
        region_key(str(r.get("region", ""))) == region_key(location)
        and r.get("state") == "Completed"
        for r in summary
    )

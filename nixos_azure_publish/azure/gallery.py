"""The Compute Gallery and its image definition: looked up, checked, created when missing.

An existing definition is never changed: if it disagrees with the target on
anything a version inherits (OS type and state, Hyper-V generation,
architecture, security type, identifier), publishing into it would fail late
or produce an image that does not boot, so we stop before any upload.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.names import arm_datetime
from nixos_azure_publish.errors import AzureError, ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import GallerySettings, PublishTarget

log = logging.getLogger(__name__)


def get_gallery(clients: AzureClients, group: str, name: str) -> dict[str, Any] | None:
    """The gallery's JSON, or None."""
    return arm.get_or_none(f"reading gallery {name}", clients.compute.galleries.get, group, name)


def gallery_body(
    settings: GallerySettings, *, location: str, tags: Mapping[str, str]
) -> dict[str, Any]:
    """The create body of the gallery."""
    props: dict[str, Any] = {}
    if settings.description:
        props["description"] = settings.description
    if settings.community is not None:
        c = settings.community
        props["sharingProfile"] = {
            "permissions": "Community",
            "communityGalleryInfo": {
                "publisherUri": c.publisher_uri,
                "publisherContact": c.publisher_contact,
                "eula": c.eula,
                "publicNamePrefix": c.public_name_prefix,
            },
        }
    return {"location": location, "tags": dict(tags), "properties": props}


def check_gallery(existing: Mapping[str, Any], settings: GallerySettings) -> None:
    """Refuse a gallery whose sharing cannot become what the target asks for."""
    permissions = ((existing.get("properties") or {}).get("sharingProfile") or {}).get(
        "permissions", "Private"
    )
    if settings.community is not None and permissions != "Community":
        raise AzureError(
            f"gallery {settings.name} exists with sharing {permissions!r};"
            " community sharing can only be chosen when a gallery is created",
            hint="Use a new gallery name for the community gallery, or remove gallery.community",
        )


def public_name(gallery: Mapping[str, Any]) -> str | None:
    """The name community users know the gallery by (Azure derives it from the prefix)."""
    sharing = (gallery.get("properties") or {}).get("sharingProfile") or {}
    names = (sharing.get("communityGalleryInfo") or {}).get("publicNames") or []
    return str(names[0]) if names else None


def ensure_gallery(
    clients: AzureClients, target: PublishTarget, *, tags: Mapping[str, str]
) -> bool:
    """Create the gallery (and enable community sharing) when missing; True when created."""
    settings = target.gallery
    if settings is None:
        return False
    group = target.resource_group
    existing = get_gallery(clients, group, settings.name)
    if existing is not None:
        check_gallery(existing, settings)
        return False
    log.info("creating gallery %s", settings.name)
    body = gallery_body(settings, location=target.location, tags=tags)
    arm.wait(
        f"creating gallery {settings.name}",
        clients.compute.galleries.begin_create_or_update,
        group,
        settings.name,
        body,
    )
    if settings.community is not None:
        arm.wait(
            f"enabling community sharing of gallery {settings.name}",
            clients.compute.gallery_sharing_profile.begin_update,
            group,
            settings.name,
            {"operationType": "EnableCommunity"},
        )
    return True


def definition_features(target: PublishTarget) -> list[dict[str, str]]:
    """The definition's features; the security type is always explicit."""
    d = target.image_definition
    features = [{"name": "SecurityType", "value": target.security_type}]
    if d is not None and d.accelerated_networking:
        features.append({"name": "IsAcceleratedNetworkSupported", "value": "True"})
    if d is not None and d.disk_controller_types:
        features.append(
            {"name": "DiskControllerTypes", "value": ", ".join(d.disk_controller_types)}
        )
    return features


def definition_body(target: PublishTarget, *, tags: Mapping[str, str]) -> dict[str, Any]:
    """The create body of the image definition."""
    d = target.image_definition
    if d is None:  # pragma: no cover - callers check
        raise AzureError("the target has no image definition")
    props: dict[str, Any] = {
        "osType": "Linux",
        "osState": "Generalized",
        "hyperVGeneration": target.hyper_v_generation,
        "architecture": target.architecture,
        "identifier": {"publisher": d.publisher, "offer": d.offer, "sku": d.sku},
        "features": definition_features(target),
    }
    optional = {
        "description": d.description,
        "eula": d.eula,
        "releaseNoteUri": d.release_note_uri,
        "privacyStatementUri": d.privacy_statement_uri,
        "endOfLifeDate": arm_datetime(d.end_of_life_date) if d.end_of_life_date else None,
    }
    props.update({k: v for k, v in optional.items() if v is not None})
    if d.recommended is not None:
        rec: dict[str, Any] = {}
        for key, rng in (("vCPUs", d.recommended.v_cpus), ("memory", d.recommended.memory)):
            if rng is not None:
                rec[key] = {k: v for k, v in (("min", rng.min), ("max", rng.max)) if v is not None}
        props["recommended"] = rec
    return {"location": target.location, "tags": dict(tags), "properties": props}


def get_definition(clients: AzureClients, target: PublishTarget) -> dict[str, Any] | None:
    """The image definition's JSON, or None (also when the gallery does not exist)."""
    if target.gallery is None or target.image_definition is None:
        return None
    return arm.get_or_none(
        f"reading image definition {target.image_definition.name}",
        clients.compute.gallery_images.get,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
    )


def definition_conflicts(existing: Mapping[str, Any], target: PublishTarget) -> list[str]:
    """How an existing definition disagrees with the target; empty when it agrees."""
    d = target.image_definition
    props = existing.get("properties") or {}
    features = {f.get("name"): f.get("value") for f in props.get("features") or []}
    want_identifier = (
        {"publisher": d.publisher, "offer": d.offer, "sku": d.sku} if d is not None else {}
    )
    have_identifier = props.get("identifier") or {}
    checks = [
        ("osType", props.get("osType"), "Linux"),
        ("osState", props.get("osState"), "Generalized"),
        # Definitions created before these properties existed default to V1 and x64.
        ("hyperVGeneration", props.get("hyperVGeneration") or "V1", target.hyper_v_generation),
        ("architecture", props.get("architecture") or "x64", target.architecture),
        ("securityType", features.get("SecurityType") or "Standard", target.security_type),
    ]
    problems = [
        f"{key} is {have!r}, the target needs {want!r}"
        for key, have, want in checks
        if str(have).lower() != str(want).lower()
    ]
    for key, want in want_identifier.items():
        have = have_identifier.get(key)
        if have is not None and str(have).lower() != want.lower():
            problems.append(f"identifier.{key} is {have!r}, the target says {want!r}")
    return problems


def identifier_owner(clients: AzureClients, target: PublishTarget) -> str | None:
    """Another definition of the gallery that holds the target's identifier, if any.

    Azure keeps publisher/offer/sku unique within a gallery (compared without case) and
    answers 409 when a new definition repeats one: found here, before any upload.
    """
    d = target.image_definition
    if target.gallery is None or d is None:
        return None
    want = (d.publisher.lower(), d.offer.lower(), d.sku.lower())
    definitions = arm.list_json(
        f"listing the image definitions of gallery {target.gallery.name}",
        clients.compute.gallery_images.list_by_gallery,
        target.resource_group,
        target.gallery.name,
    )
    for body in definitions:
        if str(body.get("name", "")).lower() == d.name.lower():
            continue
        have = (body.get("properties") or {}).get("identifier") or {}
        key = tuple(str(have.get(k, "")).lower() for k in ("publisher", "offer", "sku"))
        if key == want:
            return str(body.get("name"))
    return None


def check_identifier_free(clients: AzureClients, target: PublishTarget) -> None:
    """Refuse, before anything is created, an identifier another definition holds."""
    owner = identifier_owner(clients, target)
    d = target.image_definition
    if owner is None or d is None or target.gallery is None:
        return
    problem = (
        f"imageDefinition: the identifier {d.publisher}/{d.offer}/{d.sku} belongs to"
        f" definition {owner!r} of gallery {target.gallery.name}; identifiers are unique"
        f" in a gallery, so change publisher, offer or sku, or set imageDefinition.name"
        f" to {owner!r} to publish into it"
    )
    raise ConfigError([problem])


def check_definition(existing: Mapping[str, Any], target: PublishTarget) -> None:
    """Raise a clear :class:`AzureError` when the definition cannot take this image."""
    problems = definition_conflicts(existing, target)
    if problems:
        name = target.image_definition.name if target.image_definition else "?"
        raise AzureError(
            f"image definition {name} exists and disagrees with the target: " + "; ".join(problems),
            hint="Definitions cannot change these properties: publish into a new"
            " imageDefinition.name, or fix the target to match",
        )


def ensure_definition(
    clients: AzureClients, target: PublishTarget, *, tags: Mapping[str, str]
) -> bool:
    """Create the definition when missing (checking an existing one); True when created."""
    if target.gallery is None or target.image_definition is None:
        return False
    existing = get_definition(clients, target)
    if existing is not None:
        check_definition(existing, target)
        return False
    name = target.image_definition.name
    log.info("creating image definition %s", name)
    arm.wait(
        f"creating image definition {name}",
        clients.compute.gallery_images.begin_create_or_update,
        target.resource_group,
        target.gallery.name,
        name,
        definition_body(target, tags=tags),
    )
    return True

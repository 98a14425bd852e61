"""Helpers shared by the resource-provider modules: ids, bodies, validation."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator.armerror import ArmError, invalid_parameter, property_change
from nixos_azure_publish.emulator.catalogue import REGIONS
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.router import resource_type_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.emulator.context import Request
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Operation, Resource

MAX_TAGS = 50
# Path templates of a resource type's collection: in a group, and in the subscription.
GROUP_PROVIDERS = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/"
SUBSCRIPTION_PROVIDERS = "/subscriptions/{subscriptionId}/providers/"
# Disks and images: 1-80 letters, digits, '_', '.', '-'; start with a letter or digit, end
# with a letter, digit or '_' (Azure's resource naming rules).
COMPUTE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_.-]{0,78}[A-Za-z0-9_])?$")
_LOCATION = re.compile(r"^[a-z0-9]+$")
_ARM_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/(?P<rest>.+)$",
    re.IGNORECASE,
)


def utc_now_iso() -> str:
    """Now as Azure writes it: ISO 8601 with a UTC offset."""
    return dt.datetime.now(dt.UTC).isoformat()


def iso(timestamp: float) -> str:
    """A POSIX timestamp as Azure writes times."""
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()


def check_compute_name(name: str, kind: str) -> None:
    """Azure's naming rule for disks and images (``InvalidParameter`` on ``<kind>.name``)."""
    if not COMPUTE_NAME.match(name):
        raise invalid_parameter(f"The value of parameter {kind}.name is invalid.", f"{kind}.name")


def check_name(name: str, pattern: re.Pattern[str], what: str, rule: str, target: str) -> None:
    """Azure's InvalidParameter (on *target*) for a *what* name that breaks *rule* (*pattern*)."""
    if not pattern.match(name):
        raise invalid_parameter(f"The {what} name '{name}' is invalid: {rule}.", target)


def same_location(req: Request, existing: Resource, location: str) -> None:
    """Azure's 409 for a PUT that names an existing resource in another region."""
    if location != existing.body["location"]:
        raise ArmError(
            409,
            "InvalidResourceLocation",
            f"The resource '{existing.name}' already exists in location "
            f"'{existing.body['location']}' in resource group '{req.group}'. A resource with "
            f"the same name cannot be created in location '{location}'. Please select a new "
            "resource name.",
        )


def provider_id(req: Request, rest: str) -> str:
    """``/subscriptions/S/resourceGroups/G/providers/<rest>`` for the request's group."""
    return f"/subscriptions/{req.subscription}/resourceGroups/{req.group}/providers/{rest}"


def normalize_location(value: object, *, target: str = "location") -> str:
    """Azure's canonical form of a region name ("West Europe" -> "westeurope")."""
    if not isinstance(value, str) or not value.strip():
        raise ArmError(
            400, "LocationRequired", "The location property is required for this definition."
        )
    location = value.replace(" ", "").lower()
    if not _LOCATION.match(location):
        raise invalid_parameter(f"The location '{value}' is invalid.", target)
    return location


def known_region(location: str, resource_type: str, *, target: str = "location") -> str:
    """*location* (normalised), or Resource Manager's error for a region Azure does not have."""
    if location in REGIONS:
        return location
    if resource_type.endswith("/resourceGroups"):
        raise ArmError(
            400,
            "LocationNotAvailableForResourceGroup",
            f"The provided location '{location}' is not available for resource group. List of "
            f"available regions is '{','.join(sorted(REGIONS))}'.",
            target=target,
        )
    raise ArmError(
        400,
        "LocationNotAvailableForResourceType",
        f"The provided location '{location}' is not available for resource type "
        f"'{resource_type}'. List of available regions for the resource type is "
        f"'{','.join(sorted(REGIONS))}'.",
        target=target,
    )


def location_of(req: Request, body: dict[str, Any]) -> str:
    """The request body's region, normalised and known to Azure."""
    return known_region(normalize_location(body.get("location")), resource_type_of(req.action))


def tags_of(body: dict[str, Any]) -> dict[str, str]:
    """The request's tags, checked against Azure's limits."""
    tags = body.get("tags") or {}
    if not isinstance(tags, dict):
        raise invalid_parameter("The tags must be an object of strings.", "tags")
    if len(tags) > MAX_TAGS:
        raise ArmError(
            400,
            "InvalidTemplate",
            f"The number of tags ({len(tags)}) exceeds the maximum of {MAX_TAGS}.",
        )
    for key, value in tags.items():
        if len(key) > 512 or not isinstance(value, str) or len(value) > 256:  # noqa: PLR2004
            raise ArmError(
                400,
                "InvalidTagNameCharacters" if len(key) > 512 else "InvalidParameter",  # noqa: PLR2004
                f"The tag '{key}' is invalid: names have at most 512 characters, "
                "values are strings of at most 256.",
            )
    return {str(k): str(v) for k, v in tags.items()}


def props(body: dict[str, Any]) -> dict[str, Any]:
    value = body.get("properties") or {}
    if not isinstance(value, dict):
        raise invalid_parameter("The 'properties' must be an object.", "properties")
    return value


@dataclass(frozen=True)
class Envelope:
    """What every resource's PUT body holds, checked: its region, tags and properties."""

    body: dict[str, Any]
    location: str
    tags: dict[str, str]
    properties: dict[str, Any]

    @classmethod
    def of(cls, req: Request) -> Envelope:
        body = req.json_body()
        location = location_of(req, body)
        return cls(body, location, tags_of(body), props(body))


def parse_id(resource_id: object) -> tuple[str, str, str] | None:
    """(subscription, group, provider path) of an ARM resource id, or None."""
    if not isinstance(resource_id, str):
        return None
    match = _ARM_ID.match(resource_id)
    if match is None:
        return None
    return match["sub"], match["rg"], match["rest"]


def ok(resource: Resource, status: int = 200) -> Response:
    return Response(status, resource.body)


def listing(resources: list[Resource]) -> Response:
    return Response(200, {"value": [r.body for r in resources]})


def subscription_list(type_name: str) -> Callable[[Request], Response]:
    """A handler listing every resource of *type_name* in the request's subscription."""

    def handler(req: Request) -> Response:
        prefix = f"/subscriptions/{req.params['subscriptionId']}/".lower()
        return listing(
            [
                r
                for key, r in req.app.store.resources.items()
                if r.type.lower() == type_name.lower() and key.startswith(prefix)
            ]
        )

    return handler


def provisioned(app: ArmApp, op: Operation) -> None:
    """The usual completion of a create or update: the resource has Succeeded."""
    res = app.store.get(op.resource_id)
    if res is not None:
        res.properties["provisioningState"] = "Succeeded"


def no_content() -> Response:
    """What ARM answers to a DELETE of something that does not exist."""
    return Response(204)


def immutable(old: object, new: object, prop: str) -> None:
    """Refuse a change of a property that Azure fixes at creation."""
    if new is not None and old != new:
        raise property_change(prop)

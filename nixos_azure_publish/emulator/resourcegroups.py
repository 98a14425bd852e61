"""Microsoft.Resources: resource groups (create, get, exists, list, delete), and the
regions a subscription offers (the region catalogue)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from nixos_azure_publish.emulator import apiversions, catalogue
from nixos_azure_publish.emulator.armerror import ArmError, group_not_found
from nixos_azure_publish.emulator.common import (
    listing,
    location_of,
    ok,
    tags_of,
)
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.lro import poll_result
from nixos_azure_publish.emulator.router import table
from nixos_azure_publish.emulator.store import Resource

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.context import Completion, Request
    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Operation

TYPE = "Microsoft.Resources/resourceGroups"
_NAME = re.compile(r"^[-\w._()]{1,90}$")


def _id(req: Request) -> str:
    return req.app.group_id(req.subscription, req.group)


def put(req: Request) -> Response:
    body = req.json_body()
    name = req.group
    if not _NAME.match(name) or name.endswith("."):
        raise ArmError(
            400,
            "InvalidResourceGroupName",
            f"The resource group name '{name}' is invalid: 1-90 letters, digits, '-', '_', '.', "
            "'(' and ')', not ending in '.'.",
        )
    location = location_of(req, body)
    tags = tags_of(body)
    existing = req.app.store.get(_id(req))
    if existing is not None:
        if existing.body["location"] != location:
            raise ArmError(
                409,
                "InvalidResourceGroupLocation",
                f"Invalid resource group location '{location}'. The Resource group already "
                f"exists in location '{existing.body['location']}'.",
            )
        if existing.properties.get("provisioningState") == "Deleting":
            raise ArmError(
                409,
                "ResourceGroupBeingDeleted",
                f"The resource group '{name}' is in deprovisioning state and cannot perform "
                "this operation.",
            )
        existing.body["tags"] = tags
        return ok(existing)
    group = Resource(
        id=_id(req),
        type=TYPE,
        body={
            "id": _id(req),
            "name": name,
            "type": TYPE,
            "location": location,
            "tags": tags,
            "properties": {"provisioningState": "Succeeded"},
        },
    )
    req.app.store.put(group)
    return ok(group, 201)


def get(req: Request) -> Response:
    return ok(req.app.require_group(req))


def head(req: Request) -> Response:
    return Response(204 if req.app.store.get(_id(req)) else 404)


def list_groups(req: Request) -> Response:
    prefix = f"/subscriptions/{req.subscription}/resourcegroups/"
    groups = [
        r
        for key, r in req.app.store.resources.items()
        if r.type == TYPE and key.startswith(prefix.lower())
    ]
    return listing(groups)


def list_locations(req: Request) -> Response:
    """Subscriptions_ListLocations: every region of the catalogue, as physical regions.

    Simplified: the display names are the names (Azure writes 'West Europe').
    """
    return Response(
        200,
        {
            "value": [
                {
                    "id": f"/subscriptions/{req.subscription}/locations/{name}",
                    "name": name,
                    "type": "Region",
                    "displayName": name,
                    "regionalDisplayName": name,
                    "metadata": {"regionType": "Physical", "regionCategory": "Recommended"},
                }
                for name in sorted(catalogue.REGIONS)
            ]
        },
    )


def delete(req: Request) -> Response:
    group = req.app.store.get(_id(req))
    if group is None:
        raise group_not_found(req.group)
    group.properties["provisioningState"] = "Deleting"
    op = req.app.start_lro(
        req, kind="delete-group", resource_id=group.id, location=group.body["location"]
    )
    token = op.id
    return Response(
        202,
        None,
        {
            "Location": f"{req.app.base_url}/subscriptions/{req.subscription}/operationresults/"
            f"{token}?api-version={req.api_version}",
            "Retry-After": str(req.app.settings.retry_after),
        },
    )


def operation_result(req: Request) -> Response:
    return poll_result(req)


def _complete_delete(app: ArmApp, op: Operation) -> None:
    for res in app.store.under(op.resource_id):
        app.store.delete(res.id)
        container = res.meta.get("container")
        if container:
            app.blobs.delete(container)
    app.store.delete(op.resource_id)


_GROUPS: Final = "/subscriptions/{subscriptionId}/resourcegroups"
_GROUP: Final = _GROUPS + "/{resourceGroupName}"
_ACTION: Final = "Microsoft.Resources/subscriptions/resourceGroups"
ROUTES: Final = table(
    apiversions.ANY_DATED,
    _ACTION,
    ("PUT", _GROUP, put, "write", "ResourceGroups_CreateOrUpdate"),
    ("GET", _GROUP, get, "read", "ResourceGroups_Get"),
    ("HEAD", _GROUP, head, "read", "ResourceGroups_CheckExistence"),
    ("DELETE", _GROUP, delete, "delete", "ResourceGroups_Delete"),
    (
        "GET",
        "/subscriptions/{subscriptionId}/resourcegroups",
        list_groups,
        "read",
        "ResourceGroups_List",
    ),
    (
        "GET",
        "/subscriptions/{subscriptionId}/locations",
        list_locations,
        "Microsoft.Resources/subscriptions/locations/read",
        "Subscriptions_ListLocations",
    ),
    (
        "GET",
        "/subscriptions/{subscriptionId}/operationresults/{operationId}",
        operation_result,
        "Microsoft.Resources/subscriptions/operationresults/read",
        "OperationResults_Get",
    ),
)
COMPLETIONS: Final[dict[str, Completion]] = {"delete-group": _complete_delete}

"""What every ARM resource type shares: its ids, lookups, read/list/delete handlers, routes.

A resource-provider module describes each of its types once as a :class:`Kind`
(type, name parameter, operation-id prefix, api-versions, and what its deletes
look like) and writes only the handlers that are its own (create, update,
actions). ``Kind.routes`` turns that into the route table, with Azure's
operation ids for the standard operations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator.armerror import not_found
from nixos_azure_publish.emulator.common import (
    GROUP_PROVIDERS,
    SUBSCRIPTION_PROVIDERS,
    no_content,
    provider_id,
    subscription_list,
)
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.router import table
from nixos_azure_publish.emulator.store import Resource

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.emulator.common import Envelope
    from nixos_azure_publish.emulator.context import Request
    from nixos_azure_publish.emulator.router import Handler, Route

    InUse = Callable[[Request, Resource], None]
    """Raises Azure's error when a resource cannot be deleted yet (it is in use)."""


@dataclass(frozen=True)
class Kind:
    """One resource type: in a resource group, or under a parent resource (*parent*)."""

    type: str
    """``Microsoft.Compute/disks``."""
    param: str
    """The path parameter holding a resource's name (``diskName``)."""
    operations: str
    """The prefix of the spec's operation ids (``Disks``)."""
    api_versions: frozenset[str]
    lists: tuple[str, ...] = ("ListByResourceGroup", "List")
    """Operation names of the list in the parent and, if any, of the subscription-wide list."""
    parent: Kind | None = None
    segment: str = ""
    """Under a parent: the path segment between the parent's id and the name (``images``)."""
    delete_kind: str = "delete"
    """The long-running operation a delete starts (its completion removes the resource)."""
    delete_monitor: str = "operations"
    in_use: InUse | None = None
    view: Callable[[Request, Resource], dict[str, Any]] | None = None
    """What GET and list answer for a resource, when it is not the stored body."""

    def child(
        self,
        type_name: str,
        param: str,
        operations: str,
        segment: str,
        listing: str,
        *,
        in_use: InUse | None = None,
        view: Callable[[Request, Resource], dict[str, Any]] | None = None,
    ) -> Kind:
        """A type nested under this one (at *segment*), served with the same api-versions.

        *listing* names the operation that lists a parent's children.
        """
        return Kind(
            type_name,
            param,
            operations,
            self.api_versions,
            (listing,),
            parent=self,
            segment=segment,
            in_use=in_use,
            view=view,
        )

    # -- ids and lookups -------------------------------------------------------------------

    def collection_id(self, req: Request) -> str:
        """The id the request's resources of this kind live under."""
        if self.parent is None:
            return provider_id(req, self.type)
        return f"{self.parent.id(req)}/{self.segment}"

    def id(self, req: Request, name: str | None = None) -> str:
        """The id of the resource the request names (or of *name* next to it)."""
        return f"{self.collection_id(req)}/{name or req.params[self.param]}"

    def require_parent(self, req: Request) -> None:
        """The resource group, or the parent resource, or Azure's 404 for it."""
        if self.parent is None:
            req.app.require_group(req)
        else:
            self.parent.require(req)

    def find(self, req: Request) -> Resource | None:
        """The resource the request names, or None (its parent must exist)."""
        self.require_parent(req)
        return req.app.store.get(self.id(req))

    def require(self, req: Request) -> Resource:
        """The resource the request names, or Azure's 404 (for its parent first)."""
        resource = self.find(req)
        if resource is None:
            rid = self.id(req)
            parent_path, _, name = rid.split("/providers/", 1)[1].rpartition("/")
            raise not_found(parent_path, name, req.group)
        return resource

    def _view(self, req: Request, resource: Resource) -> dict[str, Any]:
        return resource.body if self.view is None else self.view(req, resource)

    # -- creating ----------------------------------------------------------------------------

    def new(self, req: Request, envelope: Envelope, properties: dict[str, Any]) -> Resource:
        """The resource the request names, in the shape Azure returns, stored."""
        rid = self.id(req)
        body = {
            "id": rid,
            "name": rid.rsplit("/", 1)[-1],
            "type": self.type,
            "location": envelope.location,
            "tags": envelope.tags,
            "properties": properties,
        }
        return req.app.store.put(Resource(id=rid, type=self.type, body=body))

    @staticmethod
    def provisioning(req: Request, resource: Resource, kind: str, *, status: int) -> Response:
        """Start provisioning *resource* (operation *kind*); the first answer (200 or 201)."""
        op = req.app.start_lro(
            req, kind=kind, resource_id=resource.id, location=resource.body["location"]
        )
        return req.app.lro_response(op, status=status, body=resource.body, location=False)

    # -- the standard handlers -------------------------------------------------------------

    def get(self, req: Request) -> Response:
        return Response(200, self._view(req, self.require(req)))

    def list(self, req: Request) -> Response:
        """Every resource of this kind in the request's group (or parent)."""
        self.require_parent(req)
        found = req.app.store.children(self.collection_id(req), self.type)
        return Response(200, {"value": [self._view(req, r) for r in found]})

    def delete(self, req: Request) -> Response:
        """Start deleting the resource (202), or 204 when there is none."""
        resource = self.find(req)
        if resource is None:
            return no_content()
        if self.in_use is not None:
            self.in_use(req, resource)
        resource.properties["provisioningState"] = "Deleting"
        op = req.app.start_lro(
            req, kind=self.delete_kind, resource_id=resource.id, location=resource.body["location"]
        )
        return req.app.lro_response(op, status=202, monitor=self.delete_monitor)

    # -- routes ----------------------------------------------------------------------------

    @property
    def template(self) -> str:
        """The path template of one resource."""
        return f"{self.collection_template}/{{{self.param}}}"

    @property
    def collection_template(self) -> str:
        if self.parent is None:
            return GROUP_PROVIDERS + self.type
        return f"{self.parent.template}/{self.segment}"

    def routes(
        self,
        put: Handler,
        *extra: tuple[str, str, Handler, str, str],
        get: Handler | None = None,
    ) -> tuple[Route, ...]:
        """Create (*put*), get, delete and list, then the *extra* rows.

        Extra rows are (method, path below the resource's, handler, action, operation id).
        """
        ops = self.operations
        rows: list[tuple[str, str, Handler, str, str]] = [
            ("PUT", self.template, put, "write", f"{ops}_CreateOrUpdate"),
            ("GET", self.template, get or self.get, "read", f"{ops}_Get"),
            ("DELETE", self.template, self.delete, "delete", f"{ops}_Delete"),
            ("GET", self.collection_template, self.list, "read", f"{ops}_{self.lists[0]}"),
        ]
        if len(self.lists) > 1:
            everywhere = SUBSCRIPTION_PROVIDERS + self.type
            rows.append(
                ("GET", everywhere, subscription_list(self.type), "read", f"{ops}_{self.lists[1]}")
            )
        rows += [
            (method, self.template + below, handler, action, operation)
            for method, below, handler, action, operation in extra
        ]
        return table(self.api_versions, self.type, *rows)

"""Routes ARM paths to handlers; knows each route's api-versions and RBAC action.

ARM matches path segments case-insensitively and requires ``api-version`` on
every call; so does the router. A route's *action* is the RBAC permission a
real principal needs for the call (``Microsoft.Compute/disks/write``).

Each resource-provider module declares its routes as a table (``ROUTES``, made
with :func:`table`) and its operation completions as ``COMPLETIONS``; the
application (``core.ArmApp``) installs them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import unquote

from nixos_azure_publish.emulator.armerror import ArmError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nixos_azure_publish.emulator.context import Request, Response

    Handler = Callable[[Request], Response]

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


@dataclass(frozen=True)
class Route:
    """One ARM operation: method + path template -> handler."""

    method: str
    template: str
    handler: Callable[[Request], Response]
    api_versions: frozenset[str]
    action: str
    operation_id: str
    segments: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "segments", tuple(self.template.strip("/").split("/")))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        found: dict[str, str] = {}
        for want, got in zip(self.segments, parts, strict=True):
            if want.startswith("{") and want.endswith("}"):
                if not got:
                    return None
                found[want[1:-1]] = got
            elif want.lower() != got.lower():
                return None
        return found


@dataclass(frozen=True)
class Match:
    route: Route
    params: dict[str, str]


class Router:
    """An ordered list of routes."""

    def __init__(self) -> None:
        self.routes: list[Route] = []

    def add(
        self,
        method: str,
        template: str,
        handler: Callable[[Request], Response],
        *,
        api_versions: frozenset[str] | set[str],
        action: str,
        operation_id: str,
    ) -> None:
        self.routes.append(
            Route(method, template, handler, frozenset(api_versions), action, operation_id)
        )

    def extend(self, routes: Iterable[Route]) -> None:
        self.routes.extend(routes)

    def resolve(self, method: str, path: str) -> Match:
        """The route for *method* and *path*, or the ArmError Azure would answer."""
        parts = [unquote(p) for p in path.strip("/").split("/")]
        path_matched = False
        for route in self.routes:
            params = route.match(parts)
            if params is None:
                continue
            path_matched = True
            if route.method == method:
                return Match(route, params)
        if path_matched:
            raise ArmError(
                405,
                "MethodNotAllowed",
                f"The requested method '{method}' is not allowed for this resource.",
            )
        raise ArmError(
            404,
            "InvalidResourceType",
            f"The resource type could not be found for the path '{path}'.",
        )


def table(
    api_versions: frozenset[str],
    resource_type: str,
    *rows: tuple[str, str, Handler, str, str],
) -> tuple[Route, ...]:
    """Routes from rows of (method, template, handler, action, operation id).

    An action that does not start with a provider namespace is relative to
    *resource_type*: ``"write"`` stands for ``Microsoft.Compute/disks/write``.
    """
    return tuple(
        Route(
            method,
            template,
            handler,
            api_versions,
            action if action.startswith("Microsoft.") else f"{resource_type}/{action}",
            operation_id,
        )
        for method, template, handler, action, operation_id in rows
    )


def check_api_version(route: Route, api_version: str | None, resource_type: str) -> None:
    """Raise Azure's error when the api-version is missing or not one the route serves."""
    if not api_version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if "*" in route.api_versions:
        if not _DATE.match(api_version):
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{api_version}' is invalid. The supported versions are "
                "dates in the form YYYY-MM-DD.",
            )
        return
    if api_version not in route.api_versions:
        supported = "', '".join(sorted(route.api_versions))
        raise ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for API version '{api_version}' and type "
            f"'{resource_type}'. The supported api-versions are '{supported}'.",
        )


def resource_type_of(action: str) -> str:
    """``Microsoft.Compute/disks`` from ``Microsoft.Compute/disks/write``."""
    head = action.rsplit("/", 1)[0]
    if head.endswith("/action"):
        head = head.rsplit("/", 2)[0]
    return head

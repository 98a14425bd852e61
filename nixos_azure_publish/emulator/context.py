"""What a request handler receives and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator.armerror import invalid_parameter

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.emulator.core import ArmApp
    from nixos_azure_publish.emulator.store import Operation

    Completion = Callable[[ArmApp, Operation], dict[str, Any] | None]
    """What finishes a long-running operation of one kind (its result, if any)."""


@dataclass
class Request:
    """One parsed ARM request."""

    method: str
    path: str
    raw: str
    """The path with its query string, as the client sent it."""
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    params: dict[str, str]
    api_version: str
    action: str
    app: ArmApp

    @property
    def subscription(self) -> str:
        return self.params["subscriptionId"]

    @property
    def group(self) -> str:
        return self.params["resourceGroupName"]

    def json_body(self) -> dict[str, Any]:
        """The body as a JSON object, or Azure's error for anything else."""
        if not isinstance(self.body, dict):
            raise invalid_parameter(
                "The request content was invalid and could not be deserialized."
            )
        return self.body


@dataclass
class Response:
    """What the HTTP layer sends back."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

"""ARM error responses: ``{"error": {"code", "message", "target"?, "details"?}}``.

Handlers raise :class:`ArmError`; the HTTP layer turns it into the status and
body Azure Resource Manager would send. The codes are Azure's own.
"""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    """An ARM error response, raised by request handlers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        target: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body of the error response."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            error["target"] = self.target
        return {"error": error}


def not_found(resource_type: str, name: str, group: str) -> ArmError:
    """Azure's 404 for a missing resource in an existing group."""
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{group}' was not found. "
        "For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def group_not_found(group: str) -> ArmError:
    """Azure's 404 for a missing resource group."""
    return ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")


def invalid_parameter(message: str, target: str | None = None) -> ArmError:
    """Azure's 400 for a request value it refuses."""
    return ArmError(400, "InvalidParameter", message, target=target)


def conflict(message: str, code: str = "Conflict") -> ArmError:
    """Azure's 409 for a request that conflicts with the resource's state."""
    return ArmError(409, code, message)


def not_allowed(message: str) -> ArmError:
    """Azure's 409 OperationNotAllowed."""
    return ArmError(409, "OperationNotAllowed", message)


def property_change(prop: str) -> ArmError:
    """Azure's 409 for a change of a property that is fixed after creation."""
    return ArmError(
        409,
        "PropertyChangeNotAllowed",
        f"Changing property '{prop}' is not allowed.",
        target=prop,
    )

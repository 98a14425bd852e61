"""Polling endpoints of long-running operations, as ARM serves them.

The first answer of an operation carries ``Azure-AsyncOperation`` (a status
document: InProgress, Succeeded or Failed with an error) and ``Location``
(``?monitor=true``: 202 while running, then the operation's result).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from nixos_azure_publish.emulator import apiversions
from nixos_azure_publish.emulator.armerror import ArmError
from nixos_azure_publish.emulator.common import iso
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.router import Route, table
from nixos_azure_publish.emulator.store import Operation

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.context import Completion, Request

__all__ = ["COMPLETIONS", "ROUTES", "Operation"]

_STATUS_OF_CODE = {
    "Conflict": 409,
    "OperationNotAllowed": 409,
    "PropertyChangeNotAllowed": 409,
    "InvalidParameter": 400,
    "BadRequest": 400,
    "NotFound": 404,
    "ResourceNotFound": 404,
}


def _operation(req: Request) -> Operation:
    op = req.app.store.operations.get(req.params["operationId"])
    if op is None or op.subscription.lower() != req.subscription.lower():
        raise ArmError(404, "NotFound", f"Operation '{req.params['operationId']}' was not found.")
    return op


def poll_status(req: Request) -> Response:
    """``Azure-AsyncOperation`` (or, with ``monitor=true``, ``Location``) polling."""
    op = _operation(req)
    retry = {"Retry-After": str(req.app.settings.retry_after)}
    if req.query.get("monitor", "").lower() == "true":
        return _monitor(req, op, retry)
    body: dict[str, object] = {"startTime": iso(op.start), "status": op.status, "name": op.id}
    if op.end is not None:
        body["endTime"] = iso(op.end)
    if op.error is not None:
        body["error"] = op.error
    if op.output is not None:
        body["properties"] = {"output": op.output}
    return Response(200, body, retry if not op.done else {})


def poll_result(req: Request) -> Response:
    """Network's ``operationResults`` URL: Location semantics."""
    op = _operation(req)
    return _monitor(req, op, {"Retry-After": str(req.app.settings.retry_after)})


def _monitor(req: Request, op: Operation, retry: dict[str, str]) -> Response:
    if not op.done:
        return Response(202, None, {"Location": req.app.base_url + req.raw, **retry})
    if op.error is not None:
        code = str(op.error.get("code", "InternalServerError"))
        raise ArmError(_STATUS_OF_CODE.get(code, 500), code, str(op.error.get("message", "")))
    return Response(200, op.output)


def _routes() -> tuple[Route, ...]:
    routes: list[Route] = []
    for namespace, versions in (
        ("Microsoft.Compute", apiversions.ALL_COMPUTE),
        ("Microsoft.Network", apiversions.NETWORK),
    ):
        base = f"/subscriptions/{{subscriptionId}}/providers/{namespace}/locations/{{location}}"
        routes += table(
            versions,
            f"{namespace}/locations",
            (
                "GET",
                base + "/operations/{operationId}",
                poll_status,
                "operations/read",
                "Operations_Get",
            ),
            (
                "GET",
                base + "/operationResults/{operationId}",
                poll_result,
                "operationResults/read",
                "OperationResults_Get",
            ),
        )
    return tuple(routes)


ROUTES: Final = _routes()
COMPLETIONS: Final[dict[str, Completion]] = {}

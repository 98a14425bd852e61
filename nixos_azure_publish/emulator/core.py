"""The emulator application: routes, state, faults, request log and LRO helpers.

Resource-provider modules (``resourcegroups``, ``disks``, ``images``,
``galleries``, ``community``, ``network``, ``vms``) declare their routes
(``ROUTES``) and operation completions (``COMPLETIONS``), which the app
installs, and use its helpers for ids, resource groups and long-running
operations.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator import (
    community,
    disks,
    galleries,
    images,
    lro,
    network,
    resourcegroups,
    vms,
)
from nixos_azure_publish.emulator.armerror import group_not_found
from nixos_azure_publish.emulator.common import utc_now_iso
from nixos_azure_publish.emulator.context import Response
from nixos_azure_publish.emulator.faults import Faults
from nixos_azure_publish.emulator.recording import ServerTraffic
from nixos_azure_publish.emulator.requestlog import RequestLog
from nixos_azure_publish.emulator.router import Router
from nixos_azure_publish.emulator.schemas import RequestSchemas, shared
from nixos_azure_publish.emulator.settings import EmulatorSettings
from nixos_azure_publish.emulator.store import Resource, Store

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from nixos_azure_publish.emulator.blobs import BlobBackend
    from nixos_azure_publish.emulator.context import Completion, Request


class ArmApp:
    """Everything a handler needs: state, settings, faults, blob storage."""

    def __init__(
        self,
        *,
        blobs: BlobBackend,
        settings: EmulatorSettings | None = None,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings or EmulatorSettings()
        self.faults = Faults()
        self.requests = RequestLog()
        # Server-side traffic in oav's format; None until record_traffic() is called.
        self.traffic: ServerTraffic | None = None
        self.store = Store(state_dir)
        self.blobs = blobs
        self.base_url = ""
        self.router = Router()
        # Request bodies are checked against the shipped specs before any handler runs.
        self.schemas: RequestSchemas = shared()
        for module in (lro, resourcegroups, disks, images, galleries, community, network, vms):
            self.router.extend(module.ROUTES)
            for kind, completion in module.COMPLETIONS.items():
                self.store.completions[kind] = self._completing(completion)

    def _completing(self, completion: Completion) -> Callable[[Store, lro.Operation], Any]:
        return lambda _store, op: completion(self, op)

    def record_traffic(self) -> ServerTraffic:
        """Start keeping every exchange from now on (for spec validation); the recorder."""
        if self.traffic is None:
            self.traffic = ServerTraffic()
        return self.traffic

    # -- ids and lookups -------------------------------------------------------------------

    def group_id(self, subscription: str, group: str) -> str:
        return f"/subscriptions/{subscription}/resourceGroups/{group}"

    def require_group(self, req: Request) -> Resource:
        """The request's resource group, or Azure's ResourceGroupNotFound."""
        group = self.store.get(self.group_id(req.subscription, req.group))
        if group is None:
            raise group_not_found(req.group)
        return group

    # -- long-running operations -----------------------------------------------------------

    def start_lro(
        self,
        req: Request,
        *,
        kind: str,
        resource_id: str,
        location: str,
        seconds: float | None = None,
        args: dict[str, Any] | None = None,
    ) -> lro.Operation:
        duration = self.settings.operation_seconds if seconds is None else seconds
        now = time.time()
        op = lro.Operation(
            id=str(uuid.uuid4()),
            namespace=req.action.split("/", 1)[0],
            location=location,
            subscription=req.subscription,
            api_version=req.api_version,
            kind=kind,
            resource_id=resource_id,
            start=now,
            ready_at=now + max(duration + self.faults.lro_delay, 0.0),
            fail_code=self.faults.lro_failure(req.action),
            args=args or {},
        )
        return self.store.add_operation(op)

    def lro_response(
        self,
        op: lro.Operation,
        *,
        status: int,
        body: Any = None,  # noqa: ANN401 - JSON
        location: bool = True,
        async_operation: bool = True,
        monitor: str = "operations",
    ) -> Response:
        """The first answer of a long-running operation, with ARM's polling headers."""
        headers = {"Retry-After": str(self.settings.retry_after)}
        base = (
            f"{self.base_url}/subscriptions/{op.subscription}/providers/{op.namespace}"
            f"/locations/{op.location}"
        )
        if async_operation:
            headers["Azure-AsyncOperation"] = (
                f"{base}/operations/{op.id}?api-version={op.api_version}"
            )
        if location and monitor == "operations":
            headers["Location"] = (
                f"{base}/operations/{op.id}?monitor=true&api-version={op.api_version}"
            )
        elif location:
            headers["Location"] = f"{base}/{monitor}/{op.id}?api-version={op.api_version}"
        return Response(status, body, headers)

    def now(self) -> float:
        return time.time()

    @staticmethod
    def now_iso() -> str:
        return utc_now_iso()

    @staticmethod
    def new_unique_id() -> str:
        return str(uuid.uuid4())

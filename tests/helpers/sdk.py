"""Real Azure SDK clients aimed at the emulator, with the resource group a test works in."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator.testing import Clients, clients

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator


def sdk_in_group(
    emulator: Emulator,
    group: str,
    location: str = "westeurope",
    *,
    replication_seconds: float | None = None,
    **options: Any,
) -> Clients:
    """Clients for *emulator* (*options* go to them) once *group* exists in *location*.

    With *replication_seconds*, each region of a gallery version replicates that fast.
    """
    if replication_seconds is not None:
        emulator.settings.replication_seconds = replication_seconds
    sdk = clients(emulator, **options)
    sdk.create_group(group, location)
    return sdk

"""The smoke test from tests: a target that asks for one, and the throwaway resources
it must leave behind (none)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceNotFoundError

from tests.helpers.publishing import compute, disks, network
from tests.helpers.targets import GROUP, write_target

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

BROKEN_LOG = (
    "[    0.0] Linux version 6.12\nKernel panic - not syncing: VFS: Unable to mount root fs\n"
)


def smoke_target(folder: Path, image: Path, **smoke: Any) -> Path:
    return write_target(
        folder,
        image,
        version={"targetRegions": ["westeurope", "northeurope"]},
        smokeTest={"enable": True, "vmSize": "Standard_B2s", "timeoutSeconds": 60, **smoke},
    )


NOTHING: dict[str, list[str]] = {"vm": [], "nic": [], "vnet": [], "disk": []}


def throwaways(emulator: Emulator) -> dict[str, list[str]]:
    """What the emulator holds of VMs, NICs, VNets and non-upload disks."""
    client = compute(emulator)
    net = network(emulator)
    try:
        vms = [v.name for v in client.virtual_machines.list(GROUP)]
    except ResourceNotFoundError:  # no resource group yet
        return NOTHING
    return {
        "vm": vms,
        "nic": [n.name for n in net.network_interfaces.list(GROUP)],
        "vnet": [v.name for v in net.virtual_networks.list(GROUP)],
        "disk": [
            d.name for d in disks(client) if d.name.startswith("smoke-") or "OsDisk" in d.name
        ],
    }

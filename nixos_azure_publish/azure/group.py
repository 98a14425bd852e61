"""The resource group: looked up, created only when missing."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.azure.clients import AzureClients

log = logging.getLogger(__name__)


def group_exists(clients: AzureClients, name: str) -> bool:
    """True when the resource group exists."""
    return clients.resource_group(name) is not None


def ensure_group(
    clients: AzureClients, name: str, *, location: str, tags: Mapping[str, str]
) -> bool:
    """Create the group when it is missing; True when it was created."""
    if group_exists(clients, name):
        return False
    log.info("creating resource group %s in %s", name, location)
    clients.create_resource_group(name, location=location, tags=tags)
    return True

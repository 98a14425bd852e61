"""What Azure would refuse, asked of Azure itself before anything is created.

The target's own rules are checked offline by :mod:`nixos_azure_publish.config`;
what only the subscription knows is checked here, in the read-only discover step,
so that a dry run finds it too and a real run stops before the upload.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING

from nixos_azure_publish import config
from nixos_azure_publish.errors import ConfigError

if TYPE_CHECKING:
    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget


def check_regions(clients: AzureClients, target: PublishTarget) -> None:
    """Refuse regions the subscription does not offer (unchecked when it may not list them)."""
    available = clients.locations()
    if available is None:
        return
    subscription = clients.settings.subscription_id
    problems = []
    for path, name in config.region_fields(target):
        if name.lower() in available:
            continue
        near = difflib.get_close_matches(name.lower(), sorted(available), n=1, cutoff=0.8)
        hint = f" (did you mean {near[0]}?)" if near else ""
        problems.append(
            f"{path}: region {name!r} is not available to subscription {subscription}{hint}"
        )
    if problems:
        raise ConfigError(problems)

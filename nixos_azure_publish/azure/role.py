"""The least-privilege custom role: exactly the Azure actions the tool uses, no wildcards.

Two kinds of actions: those of the requests the tool sends (each ARM operation
needs its own), and Azure's linked access checks: a request that names another
resource needs a right on that one too (a NIC in a subnet needs
``subnets/join/action``, a VM on a NIC ``networkInterfaces/join/action``, a
version or a VM made from another resource needs read on it). The integration
test drives the tool against the emulator and derives both from its traffic,
so this list cannot grow stale silently. The upload itself needs no action: it
goes to the disk's blob with the SAS that ``beginGetAccess`` returns.
"""

from __future__ import annotations

import re
from typing import Any, Final

from nixos_azure_publish.errors import UsageError

# publish: resource group, upload disk (+ write SAS), gallery (+ community sharing), image
# definition, managed image (optional, or a Trusted Launch version's source, deleted with the
# disk), image version, replication; retention and cleanup. `status` reads a subset; `gc`
# deletes what publish left. `import` uses every one of them too (a URL source goes through
# an upload disk and, if asked, a managed image; a gallery version source is read with
# versions/read), plus IMPORT below: the test derives both lists from the traffic.
PUBLISH: Final = (
    # The regions the subscription offers, checked before anything is created; effective
    # only where the role is assigned at the subscription (elsewhere the check is skipped).
    "Microsoft.Resources/subscriptions/locations/read",
    "Microsoft.Resources/subscriptions/resourceGroups/read",
    "Microsoft.Resources/subscriptions/resourceGroups/write",
    "Microsoft.Compute/locations/operations/read",
    "Microsoft.Compute/disks/read",
    "Microsoft.Compute/disks/write",
    "Microsoft.Compute/disks/delete",
    "Microsoft.Compute/disks/beginGetAccess/action",
    "Microsoft.Compute/disks/endGetAccess/action",
    "Microsoft.Compute/images/read",
    "Microsoft.Compute/images/write",
    "Microsoft.Compute/images/delete",
    "Microsoft.Compute/galleries/read",
    "Microsoft.Compute/galleries/write",
    "Microsoft.Compute/galleries/share/action",
    "Microsoft.Compute/galleries/images/read",
    "Microsoft.Compute/galleries/images/write",
    "Microsoft.Compute/galleries/images/versions/read",
    "Microsoft.Compute/galleries/images/versions/write",
    "Microsoft.Compute/galleries/images/versions/delete",
)

# The smoke test boots a throwaway VM on a throwaway VNet and NIC and reads its serial log.
SMOKE_TEST: Final = (
    "Microsoft.Compute/virtualMachines/read",
    "Microsoft.Compute/virtualMachines/write",
    "Microsoft.Compute/virtualMachines/delete",
    "Microsoft.Compute/virtualMachines/retrieveBootDiagnosticsData/action",
    "Microsoft.Network/locations/operations/read",
    "Microsoft.Network/virtualNetworks/read",
    "Microsoft.Network/virtualNetworks/write",
    "Microsoft.Network/virtualNetworks/delete",
    "Microsoft.Network/virtualNetworks/subnets/join/action",
    "Microsoft.Network/networkInterfaces/read",
    "Microsoft.Network/networkInterfaces/write",
    "Microsoft.Network/networkInterfaces/delete",
    "Microsoft.Network/networkInterfaces/join/action",
)

# `import` from a community gallery reads the community image and its versions: with
# PUBLISH, exactly what `import` (any source), `status` and `gc` use.
IMPORT: Final = (
    "Microsoft.Compute/locations/communityGalleries/images/read",
    "Microsoft.Compute/locations/communityGalleries/images/versions/read",
)

DEFAULT_NAME: Final = "NixOS Azure Publisher"
_SCOPE = re.compile(
    r"^/(subscriptions/[0-9A-Fa-f-]{36}(/resourceGroups/[-\w._()]+)?"
    r"|providers/Microsoft\.Management/managementGroups/[-\w._()]+)$"
)


def actions(*, smoke_test: bool = False, import_: bool = False) -> list[str]:
    """The actions for the chosen features, sorted, each once."""
    chosen = set(PUBLISH)
    if smoke_test:
        chosen |= set(SMOKE_TEST)
    if import_:
        chosen |= set(IMPORT)
    return sorted(chosen)


def check_scope(scope: str) -> str:
    """*scope* if it is a subscription, resource group or management group id."""
    if not _SCOPE.match(scope):
        raise UsageError(
            f"{scope!r} is not an assignable scope",
            hint="Pass --scope /subscriptions/<id>, /subscriptions/<id>/resourceGroups/<name>"
            " or /providers/Microsoft.Management/managementGroups/<name>",
        )
    return scope


def role_definition(
    *, scopes: list[str], smoke_test: bool = False, import_: bool = False, name: str = DEFAULT_NAME
) -> dict[str, Any]:
    """A custom role, as ``az role definition create --role-definition @role.json`` takes it."""
    features = ["publish", "retention"]
    if smoke_test:
        features.append("smoke test")
    if import_:
        features.append("import")
    return {
        "Name": name,
        "IsCustom": True,
        "Description": "Publishes NixOS images to Azure Compute Gallery with nixos-azure-publish ("
        + ", ".join(features)
        + "); exactly the actions it uses.",
        "Actions": actions(smoke_test=smoke_test, import_=import_),
        "NotActions": [],
        "DataActions": [],
        "NotDataActions": [],
        "AssignableScopes": [check_scope(s) for s in scopes],
    }

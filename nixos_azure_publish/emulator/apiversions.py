"""The api-versions the emulator serves: those the installed SDKs, `az` and Terraform send.

- azure-mgmt-compute 39 / azure-mgmt-network 30 (this project's clients): disks
  2026-03-02, galleries 2026-03-03, images and VMs 2026-04-01, network 2026-03-01.
- Azure CLI (its compute profile in ``azure/cli/core/profiles/_shared.py``):
  VMs and images 2024-11-01, disks 2023-04-02, galleries and definitions
  2021-10-01, versions 2024-03-03; with azure-mgmt-compute 37: disks 2025-01-02,
  galleries 2024-03-03. Its network commands send 2024-03-01 to 2024-07-01.
- Terraform's azurerm provider (go-azure-sdk packages it imports): VMs 2024-03-01,
  images 2022-03-01, disks 2023-04-02, galleries and definitions 2022-03-03,
  versions 2023-07-03, network 2024-03-01 and 2024-05-01.

Resource groups accept any dated version, as ARM itself does. Request bodies of
every version are checked against the newest spec shipped (see ``schemas``); where
Azure's behaviour depends on the version (a definition's defaults, the VM
security type Standard), the handlers follow the version asked for.
"""

from __future__ import annotations

from typing import Final

DISKS: Final = frozenset({"2026-03-02", "2025-01-02", "2023-04-02"})
GALLERIES: Final = frozenset({"2026-03-03", "2024-03-03", "2023-07-03", "2022-03-03", "2021-10-01"})
COMPUTE: Final = frozenset({"2026-04-01", "2024-11-01", "2024-07-01", "2024-03-01", "2022-03-01"})
NETWORK: Final = frozenset({"2026-03-01", "2024-07-01", "2024-05-01", "2024-03-01"})
ANY_DATED: Final = frozenset({"*"})
ALL_COMPUTE: Final = DISKS | GALLERIES | COMPUTE
# Since this gallery api-version a new definition defaults to V2 + TrustedLaunchSupported.
TRUSTED_LAUNCH_DEFAULT_SINCE: Final = "2025-03-03"

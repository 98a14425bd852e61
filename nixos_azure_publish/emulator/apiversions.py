"""The api-versions the emulator serves: exactly those the installed SDKs send.

azure-mgmt-compute sends one version per API area; azure-mgmt-network one for
everything. Resource groups accept any dated version, as ARM itself does.
"""

from __future__ import annotations

from typing import Final

DISKS: Final = frozenset({"2026-03-02"})
GALLERIES: Final = frozenset({"2026-03-03"})
COMPUTE: Final = frozenset({"2026-04-01"})
NETWORK: Final = frozenset({"2026-03-01"})
ANY_DATED: Final = frozenset({"*"})
ALL_COMPUTE: Final = DISKS | GALLERIES | COMPUTE

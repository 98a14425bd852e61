"""Names of Azure's public-cloud regions: the offline list behind "did you mean ...?".

Offline, ``config check`` cannot ask Azure which regions a subscription has, but it can
catch the typing mistakes that would otherwise surface as a confusing error halfway
through a publish (``westeurop``). A name that is not in this list is refused only when
it is a near miss of one that is; any other unknown name is let through, because Azure
opens new regions more often than this list is reviewed, and the publish asks Azure
itself before anything is created.

Provenance: the physical regions of the public cloud, as ``az account list-locations``
lists them with ``metadata.regionType == 'Physical'``; cross-checked with the Azure SDK
for Java's ``com.azure.core.management.Region`` (azure-core-management) for the older
regions and Microsoft's "Azure regions" list for those opened since. Logical regions
(``europe``, ``global``, ...) and sovereign clouds are not included. Reviewed 2026-12.
"""

from __future__ import annotations

import difflib
import re
from typing import Final

PUBLIC_REGIONS: Final = frozenset(
    {
        # Americas
        "brazilsouth",
        "brazilsoutheast",
        "canadacentral",
        "canadaeast",
        "centralus",
        "centraluseuap",
        "chilecentral",
        "eastus",
        "eastus2",
        "eastus2euap",
        "mexicocentral",
        "northcentralus",
        "southcentralus",
        "westcentralus",
        "westus",
        "westus2",
        "westus3",
        # Europe
        "austriaeast",
        "belgiumcentral",
        "francecentral",
        "francesouth",
        "germanynorth",
        "germanywestcentral",
        "italynorth",
        "northeurope",
        "norwayeast",
        "norwaywest",
        "polandcentral",
        "spaincentral",
        "swedencentral",
        "swedensouth",
        "switzerlandnorth",
        "switzerlandwest",
        "uksouth",
        "ukwest",
        "westeurope",
        # Asia Pacific
        "australiacentral",
        "australiacentral2",
        "australiaeast",
        "australiasoutheast",
        "centralindia",
        "eastasia",
        "indonesiacentral",
        "japaneast",
        "japanwest",
        "jioindiacentral",
        "jioindiawest",
        "koreacentral",
        "koreasouth",
        "malaysiawest",
        "newzealandnorth",
        "southeastasia",
        "southindia",
        "taiwannorth",
        "taiwannorthwest",
        "westindia",
        # Middle East and Africa
        "israelcentral",
        "qatarcentral",
        "southafricanorth",
        "southafricawest",
        "uaecentral",
        "uaenorth",
    }
)

_NAME: Final = re.compile(r"^[a-z][a-z0-9]{2,40}$")
# How alike a name must be to a known one to count as a typing mistake of it:
# 'westeurop' / 'westeurope' scores 0.95, 'westeuropa' 0.90; unrelated names score below 0.7.
_NEAR_MISS: Final = 0.85


def _digits_only_differ(a: str, b: str) -> bool:
    # eastus3 is not a typo of eastus2: numbered regions are how Azure adds capacity.
    return re.sub(r"\d+", "", a) == re.sub(r"\d+", "", b)


def suggestion(name: str) -> str | None:
    """The known region *name* was most likely meant to be, if it is a near miss of one."""
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    if folded != name and folded in PUBLIC_REGIONS:
        return folded
    near = difflib.get_close_matches(folded, PUBLIC_REGIONS, n=1, cutoff=_NEAR_MISS)
    if near and not _digits_only_differ(folded, near[0]):
        return near[0]
    return None


def problem(name: str) -> str | None:
    """What is wrong with a region name, or None when it may be right."""
    if _NAME.match(name):
        if name in PUBLIC_REGIONS:
            return None
        near = suggestion(name)
        return f"unknown region {name!r} (did you mean {near}?)" if near else None
    near = suggestion(name)
    hint = f" (did you mean {near!r}?)" if near else ""
    return f"must be an Azure region name like 'westeurope'{hint}, not {name!r}"

"""What Azure offers: public-cloud regions and the VM sizes a smoke test may ask for.

Regions: the physical regions of Azure's public cloud, as ``az account
list-locations`` names them (``metadata.regionType: Physical``), including the
regions opened up to 2025. A location outside this list gets Resource
Manager's 400 ``LocationNotAvailableForResourceType``.

VM sizes: a table of common sizes, from Azure's size documentation ("Generation
2 VMs on Azure", "Trusted Launch for Azure virtual machines", the Arm64 Dpsv5 /
Epsv5 / Bpsv2 series and the DCasv5 / ECasv5 confidential series): which Hyper-V
generations each boots, its architecture, and whether it runs Trusted Launch or
a confidential VM. A size outside the table is refused like a size that does
not exist; the table is the emulator's simplification of Azure's SKU API.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

REGIONS: Final = frozenset(
    {
        # Americas
        "eastus",
        "eastus2",
        "centralus",
        "northcentralus",
        "southcentralus",
        "westcentralus",
        "westus",
        "westus2",
        "westus3",
        "canadacentral",
        "canadaeast",
        "brazilsouth",
        "brazilsoutheast",
        "mexicocentral",
        "chilecentral",
        # Europe
        "northeurope",
        "westeurope",
        "uksouth",
        "ukwest",
        "francecentral",
        "francesouth",
        "germanywestcentral",
        "germanynorth",
        "norwayeast",
        "norwaywest",
        "swedencentral",
        "swedensouth",
        "switzerlandnorth",
        "switzerlandwest",
        "polandcentral",
        "italynorth",
        "spaincentral",
        "austriaeast",
        "belgiumcentral",
        # Asia Pacific
        "eastasia",
        "southeastasia",
        "australiaeast",
        "australiasoutheast",
        "australiacentral",
        "australiacentral2",
        "japaneast",
        "japanwest",
        "koreacentral",
        "koreasouth",
        "centralindia",
        "southindia",
        "westindia",
        "jioindiacentral",
        "jioindiawest",
        "newzealandnorth",
        "indonesiacentral",
        "malaysiawest",
        # Middle East and Africa
        "uaenorth",
        "uaecentral",
        "qatarcentral",
        "israelcentral",
        "southafricanorth",
        "southafricawest",
    }
)


@dataclass(frozen=True)
class VmSize:
    """What one VM size can boot."""

    generations: frozenset[str]
    """Hyper-V generations it boots: V1, V2 or both."""
    architecture: str
    """x64 or Arm64."""
    trusted_launch: bool
    confidential: bool = False


_BOTH: Final = frozenset({"V1", "V2"})
_V1: Final = frozenset({"V1"})
_V2: Final = frozenset({"V2"})


def _series(names: tuple[str, ...], size: VmSize) -> dict[str, VmSize]:
    return dict.fromkeys(names, size)


VM_SIZES: Final[dict[str, VmSize]] = {
    **_series(
        ("Standard_A1_v2", "Standard_A2_v2", "Standard_A4_v2", "Standard_A2m_v2"),
        VmSize(_V1, "x64", trusted_launch=False),
    ),
    **_series(
        (
            "Standard_B1s",
            "Standard_B1ms",
            "Standard_B2s",
            "Standard_B2ms",
            "Standard_B4ms",
            "Standard_B2ts_v2",
            "Standard_B2ls_v2",
            "Standard_B2s_v2",
            "Standard_B2ats_v2",
            "Standard_B2als_v2",
            "Standard_B2as_v2",
            "Standard_DS1_v2",
            "Standard_DS2_v2",
            "Standard_D2s_v3",
            "Standard_D4s_v3",
            "Standard_D2s_v4",
            "Standard_D2ds_v4",
            "Standard_D2s_v5",
            "Standard_D4s_v5",
            "Standard_D2ds_v5",
            "Standard_D2as_v5",
            "Standard_D2ads_v5",
            "Standard_E2s_v5",
            "Standard_F2s_v2",
            "Standard_F4s_v2",
        ),
        VmSize(_BOTH, "x64", trusted_launch=True),
    ),
    **_series(
        (
            "Standard_B2pts_v2",
            "Standard_B2pls_v2",
            "Standard_B2ps_v2",
            "Standard_D2ps_v5",
            "Standard_D4ps_v5",
            "Standard_D2pds_v5",
            "Standard_D2pls_v5",
            "Standard_E2ps_v5",
        ),
        VmSize(_V2, "Arm64", trusted_launch=False),
    ),
    **_series(
        (
            "Standard_DC2as_v5",
            "Standard_DC4as_v5",
            "Standard_DC2ads_v5",
            "Standard_EC2as_v5",
            "Standard_EC2ads_v5",
        ),
        VmSize(_V2, "x64", trusted_launch=False, confidential=True),
    ),
}

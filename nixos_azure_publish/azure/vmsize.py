"""What a VM size name says about the images it can boot, read from Azure's naming convention.

Azure names sizes ``[Family][Sub-family]#[Constrained vCPUs][Additive features]
[Accelerator]_[Version]`` ("Azure virtual machine sizes naming conventions"):
the additive feature ``p`` marks an Arm64 processor, the sub-family ``C`` with
``a`` (AMD) or ``e`` (Intel TDX) a confidential size, and the A family
(``Standard_A2_v2``, ``Basic_A1``) boots Hyper-V generation 1 only. That is
enough to refuse, before anything is uploaded, a smoke-test size that cannot
boot the image; Azure's own SKU list decides the rest when the VM is created.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

_SIZE: Final = re.compile(
    r"^(?P<tier>Standard|Basic)_(?P<family>[A-Z]+?)(?P<sub>C?)(?P<cpus>\d+)"
    r"(?:-\d+)?(?P<features>[a-z]*)(?:_(?P<version>v\d+))?$"
)


@dataclass(frozen=True)
class SizeTraits:
    """What a size name tells: its family, processor and whether it is confidential."""

    family: str
    arm64: bool
    confidential: bool
    gen1_only: bool


def traits(size: str) -> SizeTraits | None:
    """The traits of *size*, or None when the name does not follow Azure's convention."""
    match = _SIZE.match(size)
    if match is None:
        return None
    family = match["family"]
    return SizeTraits(
        family=family,
        arm64="p" in match["features"],
        # AMD SEV-SNP (DCasv5) and Intel TDX (DCesv5) sizes run confidential VMs.
        confidential=match["sub"] == "C" and bool({"a", "e"} & set(match["features"])),
        gen1_only=family == "A" or match["tier"] == "Basic",
    )


def boot_problem(
    size: str, *, generation: str, architecture: str, confidential: bool
) -> str | None:
    """Why *size* cannot boot an image of this generation, architecture and security, if so."""
    found = traits(size)
    if found is None:
        return None
    if found.gen1_only and generation == "V2":
        return f"{size} boots Hyper-V generation 1 images only; this image is V2"
    if architecture == "Arm64" and not found.arm64:
        return f"{size} is an x64 size; an Arm64 image needs an Arm64 size such as Standard_D2ps_v5"
    if architecture == "x64" and found.arm64:
        return f"{size} is an Arm64 size; an x64 image needs an x64 size such as Standard_B2s"
    if confidential and not found.confidential:
        return (
            f"{size} is not a confidential size; a confidential VM needs one such as "
            "Standard_DC2as_v5"
        )
    return None

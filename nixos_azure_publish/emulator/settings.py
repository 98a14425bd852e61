"""Tunable behaviour of a running emulator (durations, serial log, identity)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

DEFAULT_SUBSCRIPTION: Final = "00000000-0000-4000-8000-000000000001"
DEFAULT_TENANT: Final = "00000000-0000-4000-8000-000000000002"

DEFAULT_SERIAL_LOG: Final = """\
[    0.000000] Linux version 6.12.30 (nixbld@localhost) (gcc (GCC) 14.2.1) #1-NixOS SMP
[    0.000000] Command line: init=/nix/store/0000000000000000000000000000000-nixos-system/init \
console=ttyS0,115200n8 earlyprintk=ttyS0 rootdelay=300
[    0.000000] efi: EFI v2.7 by Microsoft
[    0.512345] hv_vmbus: Vmbus version:5.3
[    1.234567] hv_storvsc: registered
<<< NixOS Stage 1 >>>
running udev...
mounting /dev/disk/by-label/nixos on /...
<<< NixOS Stage 2 >>>
running activation script...
setting up /etc...
[    4.567890] systemd[1]: Detected virtualization microsoft.
[    4.600000] systemd[1]: Hostname set to <nixos>.
[  OK  ] Reached target Multi-User System.

<<< Welcome to NixOS 25.05 (x86_64) - ttyS0 >>>

Run 'nixos-help' for the NixOS manual.

nixos login: \
"""

# What Hyper-V's UEFI firmware shows when Secure Boot refuses an unsigned boot loader.
SECURE_BOOT_VIOLATION: Final = """\
Hyper-V UEFI Release v4.1
Virtual Machine Boot Summary
1. SCSI Disk (0,0)  The signed image's hash is not allowed (DB).
No operating system was loaded. Press a key to retry the boot sequence...
Secure Boot violation: the boot loader is not signed by a key in the UEFI database.
"""


@dataclass
class EmulatorSettings:
    """How the emulator behaves. Fields may be changed while it runs."""

    subscription_id: str = DEFAULT_SUBSCRIPTION
    tenant_id: str = DEFAULT_TENANT
    operation_seconds: float = 0.05
    """How long an ordinary long-running operation stays InProgress."""
    replication_seconds: float = 0.5
    """How long replication to one target region takes (regions after the first take longer)."""
    retry_after: int = 0
    """Seconds sent in Retry-After on 202 / InProgress answers (0: the client's own interval)."""
    serial_log: str = DEFAULT_SERIAL_LOG
    """The serial console log of every VM booted from then on."""
    signed_images: bool = False
    """Whether images carry a signed boot loader: if not, a VM with Secure Boot on does not
    boot and its serial console shows a Secure Boot violation."""
    unavailable_sizes: set[str | tuple[str, str]] = field(default_factory=set)
    """VM sizes (or (region, size) pairs) answered 409 SkuNotAvailable: capacity limits."""
    sas_hours_max: int = 24 * 30
    """Longest grant Azure accepts is long; refuse beyond this many hours."""

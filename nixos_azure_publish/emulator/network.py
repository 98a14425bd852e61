"""Placeholder."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.core import ArmApp


def register(app: ArmApp) -> None:
    del app

"""Checking recorded traffic against Azure's API specs with Microsoft's validator ``oav``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.emulator import schemas, speccheck
from tests.conftest import REPO

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator
    from nixos_azure_publish.emulator.speccheck import Validation

SPEC_ROOT = schemas.SPEC_ROOT


def oav() -> str:
    """The path of oav, or skip the test when it is not installed."""
    path = REPO / "node_modules" / ".bin" / "oav"
    if not path.exists():
        pytest.skip("oav is not installed (scripts/test runs npm ci)")
    return str(path)


def validate(emulator: Emulator, exchanges: list[dict[str, Any]], work: Path) -> Validation:
    """oav's verdict on *exchanges* the emulator served, against the specs it ships."""
    return speccheck.validate(
        exchanges, router=emulator.app.router, spec_root=SPEC_ROOT, oav=oav(), work=work
    )

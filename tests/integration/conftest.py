"""Fixtures that start real services on loopback and always stop them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from nixos_azure_publish.emulator.azurite import Azurite, run_azurite

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    """A fresh Azurite blob service (HTTP) on a free loopback port, with its own storage."""
    with run_azurite(location=tmp_path / "azurite", log_file=tmp_path / "azurite.log") as service:
        yield service

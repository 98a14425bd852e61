"""Shared test harness.

Tests under ``tests/unit`` are marked ``unit`` (no network, no external tools);
tests under ``tests/integration`` are marked ``integration`` (real tools on
loopback). Services are started by the package's own launchers
(``emulator.azurite.run_azurite``, ``emulator.server.run_emulator``), which
run each service in its own process group and always stop the whole group.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
        elif parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        elif parts[0] == "reliability":
            item.add_marker(pytest.mark.reliability)


def require_tool(name: str) -> str:
    """The path of *name*, or skip the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        # In CI every tool is installed by scripts/test: a missing one is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, but CI must have it")
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    return path

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
import signal
from pathlib import Path

import pytest

from tests import secretscan

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


# --- The secrets scan (tests/secretscan.py): the session fails on any leaked secret. ------


def pytest_sessionstart(session: pytest.Session) -> None:
    del session
    secretscan.install()
    # Run in the background of a script (`... &` without job control), the suite starts
    # with SIGINT ignored, and so would every publisher it starts: the Ctrl-C tests would
    # then interrupt nothing. A handler here is reset to the default in each child.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_runtest_setup(item: pytest.Item) -> None:
    secretscan.SCANNER.current = item.nodeid
    secretscan.keep_installed()


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    for title, text in report.sections:
        secretscan.SCANNER.scan(text, title)
    if report.failed:
        secretscan.SCANNER.scan(report.longreprtext, f"{report.when} error")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    del exitstatus
    secretscan.report(session)

"""Shared test harness.

Tests under ``tests/unit`` are marked ``unit`` (no network, no external tools);
tests under ``tests/integration`` are marked ``integration`` (real tools on
loopback). Fixtures that start services use :func:`start_process`, which puts
the service in its own process group and always stops the whole group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--live", action="store_true", help="run tests that talk to real Azure")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_live = pytest.mark.skip(reason="needs --live and Azure credentials")
    for item in items:
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        if parts[0] == "unit":
            item.add_marker(pytest.mark.unit)
        elif parts[0] == "integration":
            item.add_marker(pytest.mark.integration)
        if "live" in item.keywords and not config.getoption("--live"):
            item.add_marker(skip_live)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, *, timeout: float = 10.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Wait until something accepts connections on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            msg = f"process exited with {proc.returncode} before listening on {port}"
            raise RuntimeError(msg)
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    msg = f"nothing listened on 127.0.0.1:{port} within {timeout}s"
    raise TimeoutError(msg)


@contextlib.contextmanager
def start_process(
    argv: Sequence[str],
    *,
    port: int | None = None,
    log: Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run *argv* in its own process group; wait for *port*; always stop the group."""
    out = log.open("wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(
        list(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
    )
    try:
        if port is not None:
            wait_for_port(port, proc=proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if log:
            out.close()  # type: ignore[union-attr]


def require_tool(name: str) -> str:
    """The path of *name*, or skip the test when it is not installed."""
    path = shutil.which(name)
    if path is None:
        # In CI every tool is installed by scripts/test: a missing one is a failure, not a skip.
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed, but CI must have it")
        pytest.skip(f"{name} is not installed (scripts/test installs it)")
    return path


@pytest.fixture
def repo() -> Path:
    return REPO

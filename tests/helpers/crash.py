"""Killing a publisher or an importer mid-way: run it as its own process, wait for the
fault proxy to freeze its page writes, and SIGKILL it (no cleanup runs, as after a power
cut or the OOM killer). A kill at a pipeline step is ``publishing.kill_in_step``."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO
from tests.helpers.publishing import env_for
from tests.integration.faultproxy import Faults, run_fault_proxy

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator
    from tests.integration.faultproxy import FaultProxy

NO_PROXY_VARS = ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "HTTPS_PROXY", "https_proxy")


@contextlib.contextmanager
def frozen_after(emulator: Emulator, pages: int) -> Iterator[tuple[FaultProxy, dict[str, str]]]:
    """A fault proxy before the emulator's blob service that lets *pages* page writes (Put
    Page, or Put Page From URL) through and then holds every request; the environment of a
    process whose blob requests go through it (``HTTP_PROXY``, as a user's proxy)."""
    front = urlsplit(emulator.app.blobs.public_endpoint)
    env = env_for(emulator)
    for name in NO_PROXY_VARS:
        env.pop(name, None)
    with run_fault_proxy(front.hostname or "", front.port or 80, Faults(hold_after=pages)) as proxy:
        env["HTTP_PROXY"] = env["http_proxy"] = f"http://127.0.0.1:{proxy.port}"
        yield proxy, env


def wait_until_held(proxy: FaultProxy, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Wait until the proxy holds a request of *proc* (its writes are frozen)."""
    deadline = time.monotonic() + timeout
    while proxy.stats.held == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.01)
    if proxy.stats.held == 0:
        _out, err = proc.communicate(timeout=60) if proc.poll() is None else proc.communicate()
        pytest.fail(f"the writes never reached the kill point; stderr:\n{err[-3000:]}")
    # The writes let through are answered (they land whether the client lives or not):
    # from here the proxy's counts are what the server holds.
    while proxy.stats.page_writes < proxy.stats.admitted and time.monotonic() < deadline:
        time.sleep(0.01)


def kill_when_held(proxy: FaultProxy, proc: subprocess.Popen[str], *, settle: float = 0.0) -> None:
    """SIGKILL *proc* once its writes are frozen (after *settle* more seconds)."""
    wait_until_held(proxy, proc)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


def run_importer(
    emulator: Emulator, source: str, target: Path, state: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """``import SOURCE --config TARGET`` as its own process, its journal in *state*."""
    argv = ["-m", "nixos_azure_publish", "-v", "--json", "import", source, "--config", str(target)]
    return subprocess.Popen(
        [sys.executable, *argv, "--state-dir", str(state)], env=env or env_for(emulator),
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

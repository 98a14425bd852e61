"""How nix.py runs a process: progress while it runs, nothing left behind when interrupted.

A shell script stands in for `nix` here (via $NIXOS_AZURE_PUBLISH_NIX), because the
behaviour under test is the process handling, and a real build that runs for a
controlled time and then hangs cannot be made on demand.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time

import pytest

from nixos_azure_publish import nix
from tests.conftest import require_tool


@pytest.fixture
def slow_nix(tmp_path, monkeypatch):
    sh = require_tool("sh")
    pid_file = tmp_path / "pid"
    script = tmp_path / "nix"
    script.write_text(
        f"#!{sh}\necho $$ > {pid_file}\necho 'building something' >&2\nexec sleep 30\n",
        encoding="utf-8",
    )
    script.chmod(0o755)
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_NIX", str(script))
    return pid_file


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes; /proc tells them apart.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # noqa: PTH123
            return stat.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_an_interrupted_command_leaves_no_nix_running(slow_nix):
    def interrupt_when_started() -> None:
        deadline = time.monotonic() + 10
        while not slow_nix.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_started, daemon=True).start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        nix.build(".#slow")
    assert time.monotonic() - started < 10  # did not wait for the 30 s sleep
    pid = int(slow_nix.read_text(encoding="ascii"))
    assert not _alive(pid)


def test_a_long_command_says_it_is_still_running(slow_nix, monkeypatch, caplog):
    monkeypatch.setattr(nix, "PROGRESS_SECONDS", 0.2)

    def stop_after_two_reports() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum("still running" in r.getMessage() for r in caplog.records) >= 2:
                break
            time.sleep(0.05)
        pid = int(slow_nix.read_text(encoding="ascii"))
        os.kill(pid, 15)

    threading.Thread(target=stop_after_two_reports, daemon=True).start()
    with (
        caplog.at_level(logging.INFO, logger="nixos_azure_publish"),
        pytest.raises(nix.NixBuildError) as info,
    ):
        nix.build(".#slow")
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("still running after") for m in messages) >= 2
    assert "building something" in info.value.stderr_tail
    assert info.value.returncode != 0

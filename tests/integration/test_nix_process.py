"""How nix.py runs a process: progress while it runs, nothing left behind when interrupted.

A shell script stands in for `nix` here (via $NIXOS_AZURE_PUBLISH_NIX), because the
behaviour under test is the process handling, and a real build that runs for a
controlled time and then hangs cannot be made on demand.
"""

from __future__ import annotations

import _thread
import logging
import os
import subprocess
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


def test_the_rerun_command_reads_back_as_the_nix_config_it_ran_with(tmp_path):
    settings = "experimental-features = nix-command flakes\nsubstituters =\nx = it's \\ odd"
    line = nix.rerun_command(["nix", "build", ".#a b"], {"NIX_CONFIG": settings})
    assert "\n" not in line  # one line, to copy from a terminal
    assert line.endswith(" nix build '.#a b'")
    script = tmp_path / "show"
    script.write_text(line.replace(" nix build '.#a b'", " printenv NIX_CONFIG\n"))
    shown = subprocess.run(
        [require_tool("bash"), str(script)], capture_output=True, text=True, check=True
    ).stdout
    assert shown == settings + "\n"


@pytest.fixture
def failing_nix(tmp_path, monkeypatch):
    """A `nix` that fails with the given stderr (Nix's own words, colours included)."""
    sh = require_tool("sh")

    def make(stderr: str) -> None:
        (tmp_path / "stderr").write_text(stderr, encoding="utf-8")
        script = tmp_path / "nix"
        script.write_text(f"#!{sh}\ncat {tmp_path / 'stderr'} >&2\nexit 1\n", encoding="utf-8")
        script.chmod(0o755)
        monkeypatch.setenv("NIXOS_AZURE_PUBLISH_NIX", str(script))

    return make


def test_no_colour_codes_reach_the_message(failing_nix):
    failing_nix(
        "\x1b[31;1merror:\x1b[0m flake 'path:/x' does not provide attribute"
        " \x1b[35;1m'packages.x86_64-linux.y'\x1b[0m\n"
    )
    with pytest.raises(nix.NixCommandError) as info:
        nix.eval_json(".#y")
    for text in (str(info.value), info.value.stderr_tail, info.value.details or ""):
        assert "\x1b" not in text
    assert "does not provide attribute 'packages.x86_64-linux.y'" in str(info.value)


def test_missing_build_users_say_what_to_do_and_rerun_with_the_settings(failing_nix, monkeypatch):
    failing_nix(
        "\x1b[31;1merror:\x1b[0m the group '\x1b[35;1mnixbld\x1b[0m' specified in"
        " 'build-users-group' does not exist\n"
    )
    monkeypatch.setenv("NIX_CONFIG", "substituters =\nsandbox = false")
    with pytest.raises(nix.NixBuildError) as info:
        nix.build(".#image")
    hint = info.value.hint or ""
    assert "group 'nixbld', which does not exist" in hint
    assert "NIX_CONFIG='build-users-group ='" in hint
    assert "NIX_CONFIG=$'substituters =\\nsandbox = false' " in hint
    assert hint.endswith("build --json --no-link '.#image' --show-trace -L")

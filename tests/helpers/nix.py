"""Running real Nix and the repository's Nix scripts from tests."""

from __future__ import annotations

import json
import os
import subprocess
from typing import TYPE_CHECKING, Any

from nixos_azure_publish import nix
from tests.conftest import REPO, require_tool

if TYPE_CHECKING:
    from pathlib import Path


def nix_config(caller: str | None) -> str:
    """What scripts/nix-config prints for a caller whose NIX_CONFIG is *caller* (or unset)."""
    env = {k: v for k, v in os.environ.items() if k != "NIX_CONFIG"}
    if caller is not None:
        env["NIX_CONFIG"] = caller
    return subprocess.run(
        [require_tool("bash"), str(REPO / "scripts" / "nix-config")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def nix_eval(*args: str, check: bool = True) -> Any:
    """``nix eval --json ARGS``: the value; with ``check=False`` the finished process instead."""
    argv = nix.command_line(["eval", "--json", *args])
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if not check:
        return result
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def example_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a CI job running scripts/example: none of the tool's settings,
    no job summary, its own state directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NIXOS_AZURE_PUBLISH_") and k != "GITHUB_STEP_SUMMARY"
    }
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    return env


def run_example(env: dict[str, str]) -> dict[str, Any]:
    """Run scripts/example (the main CI job) as CI does; it must succeed. Its JSON report."""
    proc = subprocess.run(
        [require_tool("bash"), "scripts/example", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report

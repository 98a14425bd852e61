"""Fixtures that start real services on loopback and always stop them."""

from __future__ import annotations

import platform
import shutil
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nixos_azure_publish.emulator.azurite import Azurite, run_azurite
from nixos_azure_publish.emulator.server import Emulator, run_emulator
from tests.conftest import require_tool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    """A fresh Azurite blob service (HTTP) on a free loopback port, with its own storage."""
    with run_azurite(location=tmp_path / "azurite", log_file=tmp_path / "azurite.log") as service:
        yield service


# --- Nix fixture flakes (tests/fixtures/flakes) ---------------------------------------------

FIXTURE_FLAKES = Path(__file__).resolve().parent.parent / "fixtures" / "flakes"
# Offline, no binary cache (each build would first retry it for seconds), and builders may
# use the host's qemu-img (Debian's nix-bin does not sandbox by default; make it explicit).
NIX_OFFLINE_CONFIG = "experimental-features = nix-command flakes\nsubstituters =\nsandbox = false"


@pytest.fixture
def nix_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Nix, offline: skip when `nix` is missing (fail in CI)."""
    require_tool("nix")
    monkeypatch.setenv("NIX_CONFIG", NIX_OFFLINE_CONFIG)
    monkeypatch.delenv("NIXOS_AZURE_PUBLISH_NIX", raising=False)


@pytest.fixture
def fixture_flake(tmp_path: Path, nix_env: None) -> Callable[[str], str]:
    """Copy a fixture flake (with the repository's nix/lib.nix) to a temp dir; its `path:` ref.

    Copied rather than used in place: Nix sees only git-tracked files of a flake in a repo.
    Each copy gets a fresh @nonce@, so its images are really built, never found in the
    store from an earlier test.
    """
    tools = [require_tool(name) for name in ("qemu-img", "truncate", "cp", "mkdir", "chmod")]
    search_path = ":".join(dict.fromkeys(str(Path(tool).parent) for tool in tools))
    system = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}.get(platform.machine())
    if system is None:
        pytest.skip(f"fixture flakes build for Linux x86_64 or aarch64, not {platform.machine()}")

    def copy(name: str) -> str:
        dest = tmp_path / "flakes" / name
        shutil.copytree(FIXTURE_FLAKES / name, dest)
        shutil.copy(FIXTURE_FLAKES.parent.parent.parent / "nix" / "lib.nix", dest / "lib.nix")
        flake = dest / "flake.nix"
        text = flake.read_text(encoding="utf-8")
        for key, value in (
            ("system", system),
            ("path", search_path),
            ("nonce", uuid.uuid4().hex),
            ("python", sys.executable),
        ):
            text = text.replace(f"@{key}@", value)
        flake.write_text(text, encoding="utf-8")
        return f"path:{dest}"

    return copy


# --- The local Azure emulator (nixos_azure_publish.emulator) ---------------------------------


@pytest.fixture(scope="session")
def emulator_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for every emulator of the session (each disk has its own container)."""
    location = tmp_path_factory.mktemp("emulator-azurite")
    with run_azurite(location=location, log_file=location / "azurite.log") as service:
        yield service


@pytest.fixture
def emulator(emulator_azurite: Azurite) -> Iterator[Emulator]:
    """The local Azure: a fresh HTTPS Resource Manager over Azurite, fast LROs; always stopped.

    ``emulator.requests`` logs every call; ``emulator.faults`` and ``emulator.settings``
    may be changed while a test runs.
    """
    with run_emulator(azurite=emulator_azurite) as running:
        yield running

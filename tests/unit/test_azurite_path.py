"""Azurite is found on PATH first: the Nix package puts nixpkgs' azurite there.

The emulator raises its own EmulatorError (it imports nothing from the tool); the CLI
turns it into a usage error.
"""

from __future__ import annotations

import pytest

from nixos_azure_publish.emulator.azurite import find_azurite_blob
from nixos_azure_publish.emulator.errors import EmulatorError


def test_azurite_on_path_is_used_without_node_modules(tmp_path, monkeypatch):
    bin_dir = tmp_path / "azurite" / "bin"
    bin_dir.mkdir(parents=True)
    program = bin_dir / "azurite-blob"
    program.write_text("#!/bin/sh\n", encoding="utf-8")
    program.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_azurite_blob(start=tmp_path) == str(program)


def test_without_azurite_the_hint_names_both_ways_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr("nixos_azure_publish.emulator.azurite.__file__", str(tmp_path / "x.py"))
    with pytest.raises(EmulatorError) as info:
        find_azurite_blob(start=tmp_path)
    assert "nixpkgs' azurite" in (info.value.hint or "")
    assert "npm install azurite@3" in (info.value.hint or "")

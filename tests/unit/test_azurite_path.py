"""Azurite is found on PATH first: the Nix package puts nixpkgs' azurite there."""

from __future__ import annotations

import pytest

from nixos_azure_publish.emulator.azurite import find_azurite_blob
from nixos_azure_publish.errors import UsageError


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
    with pytest.raises(UsageError) as info:
        find_azurite_blob(start=tmp_path)
    assert "nixpkgs' azurite" in (info.value.hint or "")
    assert "npm install azurite@3" in (info.value.hint or "")

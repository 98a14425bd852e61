"""What the README says about Nix and nixpkgs, held to the facts the code relies on."""

from __future__ import annotations

import json
import re

from tests.conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_nix_floor_names_what_nixpkgs_master_requires():
    text = _flat(README)
    # nixpkgs master's lib/minver.nix requires Nix 2.18; the publisher alone runs on 2.8.
    assert "requires Nix 2.18" in text
    assert not re.search(r"Nix 2\.8 or newer is enough", text)


def test_gen2_vms_are_created_with_secure_boot_off():
    text = _flat(README)
    assert "Secure Boot turned off" in text
    assert "--enable-secure-boot false" in text


def test_the_label_example_is_what_nixpkgs_25_05_writes():
    # 25.05+ tags the Azure image `azure`: the label starts with it.
    assert "azure-25.05.YYYYMMDD.<rev>" in README
    example = json.loads((REPO / "examples" / "target.json").read_text(encoding="utf-8"))
    assert example["nixos"]["label"].startswith(f"azure-{example['nixos']['release']}.")

"""The emulator is an independent oracle: it imports nothing from the rest of the package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nixos_azure_publish.emulator

pytestmark = pytest.mark.unit

PACKAGE = "nixos_azure_publish"
EMULATOR = "nixos_azure_publish.emulator"


def _outside_imports(source: str) -> list[str]:
    """The modules of the tool (outside the emulator) that *source* imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                names = ["(relative import)"]
            elif node.module == PACKAGE:
                names = [f"{PACKAGE}.{alias.name}" for alias in node.names]
            else:
                names = [node.module or ""]
        found += [
            name
            for name in names
            if name == "(relative import)"
            or (
                (name == PACKAGE or name.startswith(PACKAGE + "."))
                and name != EMULATOR
                and not name.startswith(EMULATOR + ".")
            )
        ]
    return found


def test_no_emulator_module_imports_the_rest_of_the_package():
    folder = Path(nixos_azure_publish.emulator.__file__).parent
    offenders = {
        path.name: bad
        for path in sorted(folder.rglob("*.py"))
        if (bad := _outside_imports(path.read_text(encoding="utf-8")))
    }
    assert offenders == {}


def test_the_check_sees_each_form_of_import():
    assert _outside_imports("from nixos_azure_publish.redact import redact") == [
        "nixos_azure_publish.redact"
    ]
    assert _outside_imports("import nixos_azure_publish.errors") == ["nixos_azure_publish.errors"]
    assert _outside_imports("from nixos_azure_publish import config") == [
        "nixos_azure_publish.config"
    ]
    assert _outside_imports("from . import x") == ["(relative import)"]
    assert _outside_imports("def f():\n    from nixos_azure_publish.vhd import x\n") == [
        "nixos_azure_publish.vhd"
    ]
    assert _outside_imports("from nixos_azure_publish.emulator import core") == []
    assert _outside_imports("from nixos_azure_publish import emulator") == []

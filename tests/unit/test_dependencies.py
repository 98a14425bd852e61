"""pyproject.toml declares every package the code imports directly (nix/package.nix and
pip both install from that list, so an import missing from it works by accident)."""

from __future__ import annotations

import ast
import importlib.metadata
import sys
import tomllib
from typing import TYPE_CHECKING

from tests.conftest import REPO

if TYPE_CHECKING:
    from pathlib import Path

PACKAGE = REPO / "nixos_azure_publish"


def _optional(tree: ast.Module) -> set[int]:
    """Lines of imports guarded by ``except ImportError`` (optional on purpose)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
            "ImportError" in ast.unparse(h.type) for h in node.handlers if h.type is not None
        ):
            lines |= {
                n.lineno for stmt in node.body for n in ast.walk(stmt) if hasattr(n, "lineno")
            }
    return lines


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional = _optional(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if node.lineno in optional if hasattr(node, "lineno") else False:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def _distribution(module: str) -> str:
    """The installed distribution of *module* (azure.mgmt.compute: azure-mgmt-compute)."""
    parts = module.split(".")
    for size in range(len(parts), 0, -1):
        name = "-".join(parts[:size])
        try:
            return importlib.metadata.distribution(name).metadata["Name"].lower()
        except importlib.metadata.PackageNotFoundError:
            continue
    mapping = importlib.metadata.packages_distributions().get(parts[0], [])
    assert mapping, f"no installed distribution provides {module}"
    return mapping[0].lower()


def test_every_direct_import_is_declared():
    modules = set().union(*(_imported_modules(p) for p in PACKAGE.rglob("*.py")))
    third_party = {
        m
        for m in modules
        if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != PACKAGE.name
    }
    needed = {_distribution(m) for m in third_party}
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    declared = {
        spec.split(">=")[0].split("==")[0].strip().lower()
        for spec in pyproject["project"]["dependencies"]
    }
    assert needed - declared == set(), "imported but not declared in pyproject.toml"

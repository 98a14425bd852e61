"""Fixtures of the reliability suite: the integration suite's services, shared.

The long campaigns are marked ``campaign`` and deselected by default; run them with
``pytest -m campaign tests/reliability``, or with ``.venv/bin/python bench/reliability.py``,
which also writes ``docs/reliability.md``.
"""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 - fixtures, re-exported for this folder
    emulator,
    emulator_azurite,
    fixture_flake,
    nix_env,
)

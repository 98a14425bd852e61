"""Figures of the reliability suite, for ``docs/reliability.md``.

A scenario calls :func:`record` with what it measured. When
``NIXOS_AZURE_PUBLISH_RELIABILITY_FIGURES`` names a file (``bench/reliability.py``
sets it), each record is appended to it as one JSON line; otherwise nothing is
written and the assertions of the tests alone decide.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path
from typing import Any

ENV = "NIXOS_AZURE_PUBLISH_RELIABILITY_FIGURES"


def record(scenario: str, *, method: str, **figures: Any) -> None:
    """Append one scenario's figures (``runs``, ``failures``, anything measured)."""
    target = os.environ.get(ENV)
    if not target:
        return
    line = {"scenario": scenario, "method": method, "at": time.time(), **figures}
    with Path(target).open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(line, sort_keys=True) + "\n")


def children_peak_rss_mib() -> float:
    """The peak resident set of the largest child process waited for so far, in MiB."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

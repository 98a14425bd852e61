"""Nix's ``post-build-hook``: from ``$OUT_PATHS`` to the jobs to enqueue.

Nix runs the hook as root after every local build (not for substituted
paths), synchronously: it blocks the next build, and a failing hook stops the
build queue. So the hook enqueues each output that holds a ``.vhd``, for the
worker to match against its targets, and fails only when it cannot enqueue.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from nixos_azure_publish.hooks.hydra import HookResult, holds_vhd
from nixos_azure_publish.hooks.spool import Job

if TYPE_CHECKING:
    from collections.abc import Mapping

OUT_PATHS_ENV: Final = "OUT_PATHS"
DRV_PATH_ENV: Final = "DRV_PATH"


def jobs_from_environ(environ: Mapping[str, str]) -> HookResult:
    """One job per output in ``$OUT_PATHS`` that holds a ``.vhd``; the target is the worker's."""
    out_paths = environ.get(OUT_PATHS_ENV, "").split()
    if not out_paths:
        return HookResult(skipped=f"${OUT_PATHS_ENV} is empty or not set: nothing was built")
    drv = environ.get(DRV_PATH_ENV) or None
    jobs = [
        Job(store_path=path, source="post-build", drv_path=drv)
        for path in dict.fromkeys(out_paths)
        if Path(path).is_absolute() and holds_vhd(Path(path))
    ]
    if not jobs:
        return HookResult(skipped=f"no output of {drv or 'the build'} holds a .vhd")
    return HookResult(jobs=jobs)

"""Hydra's RunCommand: from the ``$HYDRA_JSON`` of a finished build to the jobs to enqueue.

hydra-notify runs the command synchronously for every finished build, failed
ones too, logs a non-zero exit and never retries; it may run it more than once.
So: ignore what is not ours (failed builds, jobs no target names), take the
image from ``outputs[].path`` (``products`` may point at a file a later step
of the build deleted, such as the raw ``.img``), and enqueue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.errors import UsageError
from nixos_azure_publish.hooks.spool import Job

if TYPE_CHECKING:
    from nixos_azure_publish.hooks.targets import WorkerTarget

HYDRA_JSON_ENV: Final = "HYDRA_JSON"
SUCCEEDED: Final = 0
_EVENTS: Final = frozenset({"buildFinished"})


class HydraInputError(UsageError):
    """``$HYDRA_JSON`` is missing, not JSON, or not shaped like Hydra's build record."""

    kind = "hydra-json"


@dataclass
class HookResult:
    """The jobs a hook found, and why it found none (shown, never an error)."""

    jobs: list[Job] = field(default_factory=list)
    skipped: str | None = None


def holds_vhd(path: Path) -> bool:
    """Whether a store output is a ``.vhd`` or a directory holding one (at its top)."""
    if path.is_file():
        return path.name.endswith(".vhd")
    try:
        return any(p.name.endswith(".vhd") for p in path.iterdir())
    except OSError:
        return False


def read_hydra_json(path: Path) -> dict[str, Any]:
    """The build record Hydra wrote to *path*."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise HydraInputError(
            f"cannot read the Hydra build record {path}: {error.strerror or error}",
            hint="Run this from Hydra's <runcommand> (it sets $HYDRA_JSON) or pass --hydra-json",
        ) from None
    try:
        data = json.loads(text)
    except ValueError as error:
        raise HydraInputError(
            f"the Hydra build record {path} is not JSON ({error})",
            hint="Pass the file Hydra wrote for the build ($HYDRA_JSON)",
        ) from None
    if not isinstance(data, dict):
        raise HydraInputError(
            f"the Hydra build record {path} is not a JSON object",
            hint="Pass the file Hydra wrote for the build ($HYDRA_JSON)",
        )
    return data


def _field(data: dict[str, Any], name: str, kind: type, source: str) -> Any:  # noqa: ANN401
    value = data.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise HydraInputError(
            f"the Hydra build record {source} has no valid {name!r}"
            f" (want {kind.__name__}, got {type(value).__name__})",
            hint="Pass the file Hydra wrote for a finished build ($HYDRA_JSON)",
        )
    return value


def jobs_from_build(
    data: dict[str, Any], targets: list[WorkerTarget], *, source: str
) -> HookResult:
    """The jobs for one Hydra build record: one per output holding a VHD and matching target."""
    event = data.get("event", "buildFinished")
    if event not in _EVENTS:
        return HookResult(skipped=f"event {event!r} is not a finished build")
    project = _field(data, "project", str, source)
    jobset = _field(data, "jobset", str, source)
    job_name = _field(data, "job", str, source)
    status = _field(data, "buildStatus", int, source)
    outputs = _field(data, "outputs", list, source)
    build = data.get("build")
    hydra_job = f"{project}:{jobset}:{job_name}"
    label = f"build {build} ({hydra_job})" if isinstance(build, int) else hydra_job
    if status != SUCCEEDED:
        return HookResult(skipped=f"{label} did not succeed (buildStatus {status})")
    matching = [t for t in targets if t.matches_hydra_job(hydra_job)]
    if not matching:
        return HookResult(skipped=f"{label} matches no target's hydraJobs")
    paths: list[str] = []
    for output in outputs:
        path = output.get("path") if isinstance(output, dict) else None
        if not isinstance(path, str) or not path:
            raise HydraInputError(
                f"the Hydra build record {source} has an output without a path",
                hint="Pass the file Hydra wrote for a finished build ($HYDRA_JSON)",
            )
        if holds_vhd(Path(path)):
            paths.append(path)
    if not paths:
        return HookResult(skipped=f"{label}: no output holds a .vhd")
    drv = data.get("drvPath")
    return HookResult(
        jobs=[
            Job(
                store_path=path,
                target=target.name,
                source="hydra",
                drv_path=drv if isinstance(drv, str) else None,
                hydra_job=hydra_job,
                hydra_build=build if isinstance(build, int) else None,
            )
            for path in paths
            for target in matching
        ]
    )

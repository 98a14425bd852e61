"""The worker's targets file: which targets it may publish, and which Hydra jobs feed each.

A JSON file (the NixOS module writes it from ``services.nixos-azure-publish.targets``)::

    {"targets": {
       "gen2":  {"config": "/etc/nixos-azure-publish/gen2.json",
                 "hydraJobs": ["nixos:release-25.05:azure.x86_64-linux"]},
       "mine":  {"flake": "github:me/images", "target": "default"}}}

Each target is a target file (``config``) or a flake target (``flake`` and
``target``, default ``default``). ``hydraJobs`` are Hydra job matchers
``project:jobset:job`` in Hydra's own syntax (its RunCommand plugin's): ``*``
matches a whole field, a missing trailing field matches everything, and there
are no partial wildcards. Standard library only: the hooks import this module.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

TARGETS_ENV: Final = "NIXOS_AZURE_PUBLISH_TARGETS"
_FIELDS: Final = 3


@dataclass(frozen=True)
class WorkerTarget:
    """One target the worker may publish."""

    name: str
    config: Path | None = None
    flake: str | None = None
    flake_target: str = "default"
    hydra_jobs: tuple[str, ...] = ()

    def matches_hydra_job(self, job: str) -> bool:
        """Whether the Hydra job ``project:jobset:job`` is one of this target's."""
        return any(hydra_job_matches(pattern, job) for pattern in self.hydra_jobs)


def hydra_job_matches(pattern: str, job: str) -> bool:
    """Hydra's RunCommand matcher: up to three fields; ``*``, or a missing field, matches all."""
    want = pattern.split(":")
    have = job.split(":", _FIELDS - 1)
    if len(want) > _FIELDS or len(have) != _FIELDS:
        return False
    want += ["*"] * (_FIELDS - len(want))
    return all(w in {"*", h} for w, h in zip(want, have, strict=True))


def _problem_pattern(pattern: object) -> str | None:
    if not isinstance(pattern, str) or not 1 <= len(pattern.split(":")) <= _FIELDS:
        return f"{pattern!r} is not a Hydra job matcher project:jobset:job"
    if any(not part or ("*" in part and part != "*") for part in pattern.split(":")):
        return f"{pattern!r}: each field is a name or '*' (Hydra matches no partial wildcards)"
    return None


def _parse_entry(name: str, entry: object, problems: list[str]) -> WorkerTarget | None:
    where = f"targets.{name}"
    if not isinstance(entry, dict):
        problems.append(f"{where}: must be an object")
        return None
    found: list[str] = []
    unknown = set(entry) - {"config", "flake", "target", "hydraJobs"}
    found += [f"{where}.{key}: unknown field" for key in sorted(unknown)]
    if ("config" in entry) == ("flake" in entry):
        found.append(f"{where}: give exactly one of config (a file) and flake (a reference)")
    jobs = entry.get("hydraJobs", [])
    if not isinstance(jobs, list):
        found.append(f"{where}.hydraJobs: must be a list of project:jobset:job")
        jobs = []
    found += [
        f"{where}.hydraJobs[{i}]: {p}"
        for i, job in enumerate(jobs)
        if (p := _problem_pattern(job)) is not None
    ]
    found += [
        f"{where}.{key}: must be a non-empty string"
        for key in ("config", "flake", "target")
        if key in entry and (not isinstance(entry[key], str) or not entry[key])
    ]
    if "target" in entry and "flake" not in entry:
        found.append(f"{where}.target: only a flake target has a target name")
    problems += found
    if found:
        return None
    return WorkerTarget(
        name=name,
        config=Path(entry["config"]) if "config" in entry else None,
        flake=entry.get("flake"),
        flake_target=entry.get("target", "default"),
        hydra_jobs=tuple(jobs),
    )


def parse_targets(data: object, *, source: str) -> list[WorkerTarget]:
    """Validate a targets file's content; every problem with its field path."""
    entries = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(entries, dict):
        raise ConfigError(["targets: must be an object of target name -> target"], source=source)
    problems: list[str] = []
    targets = [
        target
        for name, entry in entries.items()
        if (target := _parse_entry(str(name), entry, problems)) is not None
    ]
    if problems:
        raise ConfigError(problems, source=source)
    return targets


def load_targets(path: Path) -> list[WorkerTarget]:
    """The targets of the file at *path*."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(
            [f"cannot read the targets file: {error.strerror or error}"], source=str(path)
        ) from None
    except ValueError as error:
        raise ConfigError([f"not JSON: {error}"], source=str(path)) from None
    return parse_targets(data, source=str(path))


def default_targets_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The targets file named by ``$NIXOS_AZURE_PUBLISH_TARGETS``, if set."""
    env = os.environ if environ is None else environ
    value = env.get(TARGETS_ENV)
    return Path(value) if value else None

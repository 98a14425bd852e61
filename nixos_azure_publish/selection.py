"""Which targets one command works on: target files, flake targets, or all of a flake's.

The one reading of ``--config FILE`` (repeatable), ``--flake REF``, ``--target NAME``
(repeatable), ``--all-targets`` and ``--jobs N`` that every command taking targets
shares. A :class:`TargetSelection` checks the combination, then names its targets as
:class:`TargetSource` objects; each loads (evaluates, validates, builds) on its own, so
one broken target does not stop the others from being loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from nixos_azure_publish.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from nixos_azure_publish.pipeline.context import PublishInput

DEFAULT_JOBS: Final = 4
DEFAULT_TARGET: Final = "default"


@dataclass(frozen=True)
class TargetSource:
    """One target to load: ``azurePublish.<name>`` of a flake, or a target file."""

    flake: str | None = None
    name: str | None = None
    config: Path | None = None

    @property
    def label(self) -> str:
        """How to name the target before it is loaded (its report's name if loading fails)."""
        if self.config is not None:
            return str(self.config)
        return self.name or DEFAULT_TARGET

    def load(self, *, image: Path | None, environ: Mapping[str, str]) -> PublishInput:
        """The validated target and its image (built with Nix for a flake target)."""
        from nixos_azure_publish.pipeline import source  # noqa: PLC0415 - the Azure SDK

        if self.config is not None:
            return source.from_target_file(self.config, image=image, environ=environ)
        if self.flake is None:  # pragma: no cover - made only by TargetSelection
            raise UsageError("a target source needs a flake or a file")
        return source.from_flake(self.flake, self.label, image=image, environ=environ)


@dataclass(frozen=True)
class TargetSelection:
    """The targets a command was given, and how many to work on at once."""

    configs: tuple[Path, ...] = ()
    flake: str | None = None
    targets: tuple[str, ...] = ()
    all_targets: bool = False
    jobs: int = DEFAULT_JOBS

    def check(self) -> None:
        """Refuse a combination that names no target, or names targets ambiguously."""
        if bool(self.configs) == (self.flake is not None):
            raise UsageError(
                "give exactly one of --config FILE and --flake REF",
                hint="e.g. `publish --flake . --target default` or `publish --config target.json`",
            )
        if self.targets and self.flake is None:
            raise UsageError("--target needs --flake", hint="Name the flake with --flake REF")
        if self.all_targets and self.flake is None:
            raise UsageError("--all-targets needs --flake", hint="Name the flake with --flake REF")
        if self.all_targets and self.targets:
            raise UsageError(
                "--all-targets and --target together: which targets is ambiguous",
                hint="Pass either --all-targets or one --target per target",
            )
        if self.jobs < 1:
            raise UsageError(
                f"--jobs must be at least 1, not {self.jobs}", hint="Pass --jobs 1 or more"
            )
        seen = set()
        for config in self.configs:
            key = config.resolve()
            if key in seen:
                raise UsageError(
                    f"--config {config} is given twice", hint="Name each target file once"
                )
            seen.add(key)

    @property
    def several(self) -> bool:
        """The command works on several targets (one combined report), not on exactly one."""
        return self.all_targets or len(self.configs) > 1 or len(set(self.targets)) > 1

    def sources(self) -> list[TargetSource]:
        """The targets in the order given; ``--all-targets`` asks the flake for its names."""
        self.check()
        if self.configs:
            return [TargetSource(config=c) for c in self.configs]
        assert self.flake is not None  # noqa: S101 - check() ensures it
        from nixos_azure_publish import flake as nixflake  # noqa: PLC0415

        if self.all_targets:
            names = nixflake.list_targets(self.flake)
            if not names:
                raise UsageError(
                    f"flake {self.flake} declares no targets under {nixflake.ATTRIBUTE}",
                    hint="Declare one with lib.mkTarget, or pass --config FILE",
                )
        else:
            names = list(dict.fromkeys(self.targets)) or [DEFAULT_TARGET]
        return [TargetSource(flake=self.flake, name=n) for n in names]


def check_distinct(inputs: list[PublishInput]) -> None:
    """Refuse two loaded targets of one name: they would share journals and disk names."""
    seen: dict[str, int] = {}
    for item in inputs:
        seen[item.target.name] = seen.get(item.target.name, 0) + 1
    twice = sorted(name for name, count in seen.items() if count > 1)
    if twice:
        raise UsageError(
            f"several targets are named {', '.join(twice)}: one run publishes each name once",
            hint="Give each target its own name",
        )

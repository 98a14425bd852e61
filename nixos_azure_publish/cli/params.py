"""Parameter types shared by several commands, so that they accept the same arguments."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nixos_azure_publish.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

    Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]

    _PathType = click.ParamType[Path]
else:  # click < 8.2 (nixos-24.11's) has no subscriptable ParamType at run time
    _PathType = click.ParamType


class ImagePath(_PathType):
    """An image: a file, or a directory (a Nix store path) holding exactly one ``*.vhd``.

    What ``publish --image``, ``inspect``, ``convert`` and ``upload`` all take. A path
    that does not exist is a usage error (exit 2), as every missing input is; it is
    raised as our own error so that ``--json`` renders it like any other.
    """

    name = "image"

    def convert(
        self,
        value: Any,  # noqa: ANN401 - click passes what the user typed
        param: click.Parameter | None,  # noqa: ARG002 - click's signature
        ctx: click.Context | None,  # noqa: ARG002
    ) -> Path:
        from nixos_azure_publish.flake import locate_vhd  # noqa: PLC0415 - lazy: nix helpers

        return locate_vhd(value if isinstance(value, Path) else Path(str(value)))


IMAGE = ImagePath()


def target_selection(func: Callable[..., Any]) -> Callable[..., Any]:
    """The options that pick targets, shared by every command that works on targets.

    ``--config FILE`` (repeatable), ``--flake REF``, ``--target NAME`` (repeatable),
    ``--all-targets`` and ``--jobs N``; the command receives them as one
    ``selection: TargetSelection`` keyword argument. Put it below ``@click.command``.
    """
    from nixos_azure_publish.selection import DEFAULT_JOBS, TargetSelection  # noqa: PLC0415

    @functools.wraps(func)
    def wrapper(
        *args: Any,  # noqa: ANN401
        config_files: tuple[Path, ...],
        flake: str | None,
        target_names: tuple[str, ...],
        all_targets: bool,
        jobs: int,
        **kwargs: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        selection = TargetSelection(
            configs=config_files,
            flake=flake,
            targets=target_names,
            all_targets=all_targets,
            jobs=jobs,
        )
        return func(*args, selection=selection, **kwargs)

    options = (
        click.option(
            "--config",
            "config_files",
            multiple=True,
            type=click.Path(path_type=Path, dir_okay=False),
            help="Publish target file (JSON or TOML); repeat it for several targets.",
        ),
        click.option(
            "--flake", help="Flake reference whose azurePublish.<target> to use, e.g. '.'."
        ),
        click.option(
            "--target",
            "target_names",
            multiple=True,
            help="Target name under azurePublish (with --flake; default 'default');"
            " repeat it for several targets.",
        ),
        flag(
            "--all-targets",
            help="Every target under the flake's azurePublish (with --flake).",
        ),
        shown(
            "--jobs",
            type=int,
            default=DEFAULT_JOBS,
            help="With several targets: how many to work on at once.",
        ),
    )
    return _decorated(wrapper, options)


def _decorated(func: Callable[..., Any], options: Iterable[Decorator]) -> Callable[..., Any]:
    """*func* with *options* applied as if stacked above it in this order."""
    for option in reversed(list(options)):
        func = option(func)
    return func


@dataclass(frozen=True)
class Destination:
    """``--config FILE | --flake REF [--target NAME]``: the target whose gallery a command uses."""

    config_file: Path | None
    flake: str | None
    target_name: str | None

    def check(self) -> None:
        """Exactly one of ``--config`` and ``--flake``; ``--target`` only with ``--flake``."""
        if (self.config_file is None) == (self.flake is None):
            raise UsageError(
                "give exactly one of --config FILE and --flake REF",
                hint="e.g. `--flake . --target default` or `--config target.json`",
            )
        if self.target_name is not None and self.flake is None:
            raise UsageError("--target needs --flake", hint="Name the flake with --flake REF")

    def connect(self) -> tuple[PublishTarget, AzureClients]:
        """The target (its image is not needed) and the clients for its subscription."""
        from nixos_azure_publish.azure.clients import AzureSettings, make_clients  # noqa: PLC0415
        from nixos_azure_publish.pipeline import source  # noqa: PLC0415 - loads nix helpers

        self.check()
        environ = dict(os.environ)
        target = source.destination(
            config_file=self.config_file,
            flake_ref=self.flake,
            target=self.target_name or "default",
            environ=environ,
        )
        settings = AzureSettings.from_environ(
            subscription_id=target.subscription_id, environ=environ
        )
        return target, make_clients(settings)


def destination_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options of a :class:`Destination`, given to *command* as ``destination``."""

    @functools.wraps(command)
    def wrapper(
        *args: Any,  # noqa: ANN401
        config_file: Path | None,
        flake: str | None,
        target_name: str | None,
        **kwargs: Any,  # noqa: ANN401
    ) -> Any:  # noqa: ANN401
        return command(*args, destination=Destination(config_file, flake, target_name), **kwargs)

    return _decorated(
        wrapper,
        [
            click.option(
                "--config",
                "config_file",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Target file (JSON or TOML); its image is not needed.",
            ),
            click.option("--flake", help="Flake reference whose azurePublish.<target> to use."),
            click.option(
                "--target",
                "target_name",
                help="Target name under azurePublish (with --flake; default 'default').",
            ),
        ],
    )


def flag(*names: str, help: str, **extra: Any) -> Decorator:  # noqa: A002, ANN401 - click's words
    """A switch: off unless given."""
    return click.option(*names, is_flag=True, help=help, **extra)


def shown(*names: str, type: Any, default: Any, help: str) -> Decorator:  # noqa: A002, ANN401
    """An option with a default, which ``--help`` shows (every such option does)."""
    return click.option(*names, type=type, default=default, show_default=True, help=help)


def dry_run_option(what: str) -> Decorator:
    """``--dry-run``: *what* the command then does instead (it changes nothing)."""
    return flag("--dry-run", help=what)


state_dir_option = click.option(
    "--state-dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Where the local journal lives (default $XDG_STATE_HOME/nixos-azure-publish).",
)

"""The two hook commands, runnable without loading the whole CLI.

``nixos-azure-publish hydra-hook`` and ``post-build-hook`` are registered in
the main CLI as well; the installed script (``__main__.main``) runs them
through :func:`run` when the first argument names a hook, so a hook does not
import the Azure SDK: the whole CLI takes about half a second to import, and a
hook must return sooner. Keep this module's imports light.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Final

import click

from nixos_azure_publish.errors import ExitCode, PublishError
from nixos_azure_publish.hooks import hydra, postbuild
from nixos_azure_publish.hooks.spool import SPOOL_ENV, Spool, SpoolError, default_spool
from nixos_azure_publish.hooks.targets import TARGETS_ENV, default_targets_file, load_targets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from nixos_azure_publish.hooks.hydra import HookResult

HOOKS: Final = frozenset({"hydra-hook", "post-build-hook"})


def spool_from(spool: Path | None) -> Spool:
    """The spool named by --spool, else by the environment; an error when neither names one."""
    root = spool if spool is not None else default_spool()
    if root is None:
        raise SpoolError(
            "no spool directory",
            hint=f"Pass --spool DIR or set ${SPOOL_ENV} (the NixOS module sets it)",
        )
    return Spool(root)


def _enqueue(spool: Spool, result: HookResult) -> None:
    if result.skipped is not None:
        click.echo(f"nothing to publish: {result.skipped}")
        return
    for job in result.jobs:
        state = spool.enqueue(job)
        target = job.target or "the worker's matching targets"
        if state is None:
            click.echo(f"queued {job.store_path} for {target} (job {job.id})")
        else:
            click.echo(f"already in the spool ({state}): {job.store_path} for {target}")


@click.command("hydra-hook", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--hydra-json",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"Hydra's build record (default ${hydra.HYDRA_JSON_ENV}).",
)
@click.option(
    "--spool",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"The worker's spool directory (default ${SPOOL_ENV}).",
)
@click.option(
    "--targets",
    "targets_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"The worker's targets file, with each target's hydraJobs (default ${TARGETS_ENV}).",
)
def hydra_hook(*, hydra_json: Path | None, spool: Path | None, targets_file: Path | None) -> None:
    """For Hydra's <runcommand>: enqueue a finished build's image for the worker.

    Builds that failed, or whose project:jobset:job matches no target's
    hydraJobs, or that have no .vhd output, are skipped with exit 0.

    \b
    Example (hydra.conf):
      <runcommand>
        job = nixos:release-25.05:*
        command = nixos-azure-publish hydra-hook --spool /var/lib/nixos-azure-publish/spool
      </runcommand>
    """
    record = hydra_json
    if record is None:
        value = os.environ.get(hydra.HYDRA_JSON_ENV)
        if not value:
            raise hydra.HydraInputError(
                f"${hydra.HYDRA_JSON_ENV} is not set",
                hint="Run this from Hydra's <runcommand>, or pass --hydra-json FILE",
            )
        record = Path(value)
    targets_path = targets_file if targets_file is not None else default_targets_file()
    if targets_path is None:
        raise hydra.HydraInputError(
            "no targets file, so no Hydra job is ours",
            hint=f"Pass --targets FILE or set ${TARGETS_ENV} (the NixOS module sets it)",
        )
    targets = load_targets(targets_path)
    data = hydra.read_hydra_json(record)
    _enqueue(spool_from(spool), hydra.jobs_from_build(data, targets, source=str(record)))


@click.command("post-build-hook", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--spool",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"The worker's spool directory (default ${SPOOL_ENV}).",
)
def post_build_hook(*, spool: Path | None) -> None:
    """For nix.conf's post-build-hook: enqueue each output in $OUT_PATHS holding a .vhd.

    Exits 0 whatever it finds, because a failing hook stops Nix's build queue;
    only a spool it cannot write is an error, so that it does not go unnoticed.

    \b
    Example (nix.conf; the script runs this with the spool set):
      post-build-hook = /etc/nix/publish-hook   # nixos-azure-publish post-build-hook
    """
    try:
        result = postbuild.jobs_from_environ(os.environ)
    except Exception as error:  # noqa: BLE001 - never stop the build queue over a bad input
        click.echo(f"nothing to publish: {error}", err=True)
        return
    _enqueue(spool_from(spool), result)


def run(command: click.Command, args: Sequence[str]) -> int:
    """Run a hook command; expected failures are one line and their exit code."""
    try:
        command.main(
            args=list(args),
            prog_name=f"nixos-azure-publish {command.name}",
            standalone_mode=False,
        )
    except PublishError as error:
        click.echo(f"error: {error.one_line()}", err=True)
        return int(error.exit_code)
    except click.ClickException as usage:
        usage.show()
        return usage.exit_code
    except click.exceptions.Exit as done:  # --help
        return done.exit_code
    return int(ExitCode.OK)

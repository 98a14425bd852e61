"""`emulator serve`: run the bundled local Azure and print the environment a client needs."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import flag
from nixos_azure_publish.emulator import service
from nixos_azure_publish.emulator.settings import EmulatorSettings

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator


def _exports(environ: dict[str, str]) -> str:
    return "\n".join(f"export {key}={shlex.quote(value)}" for key, value in environ.items())


@click.group("emulator")
def emulator_group() -> None:
    """The bundled local Azure (Resource Manager over HTTPS, Azurite for blobs)."""


@emulator_group.command("serve")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=None, help="Port (default: a free one)."
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep resources, blobs and the certificate here; a restart continues with them.",
)
@click.option(
    "--replication-seconds",
    type=click.FloatRange(0),
    default=None,
    help="How long replication to one region takes (default 0.5).",
)
@flag(
    "--detach",
    help="Run in the background; print the environment (with the PID to stop it) and exit.",
)
@click.option(
    "--ready-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    hidden=True,
    help="Write the environment here as JSON once ready (used by --detach).",
)
@flag(
    "--remove-state-dir",
    hidden=True,
    help="Delete --state-dir when stopped (--detach's throwaway state).",
)
def serve(
    *,
    port: int | None,
    state_dir: Path | None,
    replication_seconds: float | None,
    detach: bool,
    ready_file: Path | None,
    remove_state_dir: bool,
) -> None:
    """Run the emulator until interrupted; first print `export` lines for clients.

    Use `eval "$(nixos-azure-publish emulator serve --detach)"` in a CI shell, then
    stop it with `kill $NIXOS_AZURE_PUBLISH_EMULATOR_PID`.

    \b
    Examples:
      eval "$(nixos-azure-publish emulator serve --detach)"
      nixos-azure-publish emulator serve --port 8443 --state-dir ./.azure-emulator
    """
    ctx = app_context()
    if detach:
        environ = service.start_detached(
            state_dir=state_dir, port=port, replication_seconds=replication_seconds
        )
        ctx.emit(environ, _exports(environ))
        return
    settings = EmulatorSettings()
    if replication_seconds is not None:
        settings.replication_seconds = replication_seconds

    def ready(emulator: Emulator) -> None:
        ctx.emit(emulator.environ, _exports(emulator.environ))
        sys.stdout.flush()
        if ready_file is not None:
            service.write_ready_file(ready_file, emulator.environ)

    service.serve(
        state_dir=state_dir,
        port=port,
        settings=settings,
        on_ready=ready,
        remove_state_dir=remove_state_dir,
    )

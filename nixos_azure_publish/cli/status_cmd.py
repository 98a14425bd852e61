"""``nixos-azure-publish status``: the versions of a target's image definition."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import destination_options, flag

if TYPE_CHECKING:
    from nixos_azure_publish.cli.params import Destination


@click.command("status")
@destination_options
@flag(
    "--watch",
    help="Follow provisioning and replication until nothing moves, printing each change.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Seconds between reads with --watch (default 15; 0.2 against the emulator).",
)
def status_command(
    *,
    destination: Destination,
    watch: bool,
    interval: float | None,
) -> None:
    """Show the versions of the target's image definition and what `latest` is.

    Per version: when it was created, its replication per region (state,
    progress, replicas, storage type), excludeFromLatest, end of life, and what
    the tool's tags say (store path, NixOS label, import source, smoke test).
    Changes nothing in Azure.

    \b
    Example:
      nixos-azure-publish status --flake . --target default
      nixos-azure-publish status --config target.json --json --watch
    """
    from nixos_azure_publish.azure import status as azstatus  # noqa: PLC0415

    target, clients = destination.connect()
    app = app_context()
    if not watch:
        result = azstatus.read_status(clients, target)
    else:
        every = interval
        if every is None:
            every = 0.2 if clients.settings.emulator else 15.0
        result = azstatus.watch(
            clients,
            target,
            interval=every,
            # Progress on stderr; the result (JSON or text) once it settles.
            on_change=lambda s: app.note(s.to_console()),
        )
    app.emit(result.to_json(), result.to_console())

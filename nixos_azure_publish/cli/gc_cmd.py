"""``nixos-azure-publish gc``: retention on its own, and the leftovers of a target's publishes."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import destination_options, dry_run_option, shown

if TYPE_CHECKING:
    from nixos_azure_publish.cli.params import Destination


@click.command("gc")
@destination_options
@dry_run_option("List what would be deleted and what is kept, and why; delete nothing.")
@shown(
    "--older-than",
    "older_than",
    type=click.FloatRange(min=0.0),
    default=24.0,
    help="Hours after which an upload disk, managed image or smoke-test resource is a leftover.",
)
def gc_command(
    *,
    destination: Destination,
    dry_run: bool,
    older_than: float,
) -> None:
    """Delete old versions by the target's retention, and its publishes' leftovers.

    Retention (retention.keepVersions, retention.deleteAfterEndOfLife) runs as
    at the end of a publish. Leftovers are this target's upload disks, managed
    images and smoke-test VMs, NICs, VNets and disks older than --older-than,
    unless a running publish may hold them (open write access, a version still
    replicating from them). Only resources the tool tagged for this target are
    ever candidates.

    \b
    Example:
      nixos-azure-publish gc --flake . --target default --dry-run
      nixos-azure-publish gc --config target.json --json
    """
    from nixos_azure_publish.azure import gc  # noqa: PLC0415

    target, clients = destination.connect()
    found = gc.plan(
        clients,
        target,
        now=dt.datetime.now(dt.UTC),
        min_age=dt.timedelta(hours=older_than),
    )
    result = found if dry_run else gc.run(clients, target, found)
    app_context().emit(result.to_json(), result.to_console())

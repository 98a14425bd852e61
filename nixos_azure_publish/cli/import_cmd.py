"""``nixos-azure-publish import``: a released image into the target's own gallery."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

import click

from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import destination_options, dry_run_option, state_dir_option
from nixos_azure_publish.errors import UsageError

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.azure.importsource import ImportSource
    from nixos_azure_publish.cli.params import Destination
    from nixos_azure_publish.config import PublishTarget
    from nixos_azure_publish.report import PublishReport


@click.command("import")
@click.argument("source")
@destination_options
@dry_run_option("Resolve the source, show what exists and what would be created; change nothing.")
@click.option(
    "--sha256",
    help="For an https:// source: the sha256 (hex) the VHD must have; checked while streaming.",
)
@state_dir_option
def import_command(
    *,
    source: str,
    destination: Destination,
    dry_run: bool,
    sha256: str | None,
    state_dir: Path | None,
) -> None:
    """Import a released image into the target's gallery as a replicated version.

    SOURCE is a community gallery image
    (/CommunityGalleries/<name>/Images/<image>[/Versions/<version>]) or a gallery
    image version id (/subscriptions/.../galleries/<g>/images/<i>/versions/<v>);
    without a version, or with `latest`, the newest version in latest that is
    replicated to the target's location. The new version is copied server-side
    from the source version: no image byte passes through this machine. SOURCE
    may also be an https:// URL of a fixed VHD: it is streamed into an upload
    disk (only its non-zero sectors are sent, nothing is stored locally). The
    target gives the group, gallery, definition (created with the source's
    generation, architecture and security type when missing), version name,
    regions and replicas; its image is not needed. A rerun after success
    changes nothing.

    \b
    Example:
      nixos-azure-publish import /CommunityGalleries/nixos-1a2b/Images/nixos-25.05 \\
          --config target.json
      nixos-azure-publish import "$SOURCE_VERSION_ID" --flake . --target default --dry-run
      nixos-azure-publish import https://example.org/nixos.vhd --sha256 "$SUM" --config t.json
    """
    from nixos_azure_publish.azure import importsource  # noqa: PLC0415
    from nixos_azure_publish.azure.clients import ENV_EMULATOR  # noqa: PLC0415

    # The bundled emulator serves blobs over plain HTTP, as Azurite does.
    parsed = importsource.parse_source(source, allow_http=os.environ.get(ENV_EMULATOR) == "1")
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if parsed.kind != "url" or not _HEX64.match(sha256):
            raise UsageError(
                "--sha256 takes 64 hex digits, and only for an https:// source",
                hint="Leave it out for gallery sources; Azure copies those itself",
            )
    target, clients = destination.connect()
    report = _run(target, clients, parsed, dry_run=dry_run, state_dir=state_dir, sha256=sha256)
    app_context().emit(report.to_json(), report.to_console().rstrip("\n"))


def _run(
    target: PublishTarget,
    clients: AzureClients,
    parsed: ImportSource,
    *,
    dry_run: bool,
    state_dir: Path | None,
    sha256: str | None,
) -> PublishReport:
    from nixos_azure_publish.pipeline import Pipeline, PublishInput, PublishOptions  # noqa: PLC0415
    from nixos_azure_publish.pipeline.importing import (  # noqa: PLC0415
        GALLERY_IMPORT_STEPS,
        URL_IMPORT_STEPS,
    )
    from nixos_azure_publish.upload.progress import LogProgress  # noqa: PLC0415

    pipeline = Pipeline(
        PublishInput(target=target, image_path=None, source=parsed, sha256=sha256),
        clients=clients,
        options=PublishOptions(state_dir=state_dir, progress=LogProgress()),
        steps=URL_IMPORT_STEPS if parsed.kind == "url" else GALLERY_IMPORT_STEPS,
    )
    return pipeline.plan() if dry_run else pipeline.run()

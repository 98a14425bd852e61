"""Command-line interface: one thin module per command group, wired up here."""

from __future__ import annotations

from nixos_azure_publish.cli import (
    config_cmd,
    emulator_cmd,
    gc_cmd,
    hooks_cmd,
    image_cmd,
    import_cmd,
    nix_cmd,
    publish_cmd,
    role_cmd,
    status_cmd,
    upload_cmd,
)
from nixos_azure_publish.cli.app import add_common_options, cli, main

for command in (
    config_cmd.config_group,
    image_cmd.inspect,
    image_cmd.convert,
    nix_cmd.build_command,
    upload_cmd.upload,
    publish_cmd.publish_command,
    status_cmd.status_command,
    gc_cmd.gc_command,
    import_cmd.import_command,
    emulator_cmd.emulator_group,
    hooks_cmd.hydra_hook,
    hooks_cmd.post_build_hook,
    hooks_cmd.enqueue_command,
    hooks_cmd.worker_command,
    role_cmd.role_definition_command,
):
    cli.add_command(add_common_options(command))

__all__ = ["cli", "main"]

"""Command-line interface: one thin module per command group, wired up here."""

from __future__ import annotations

from nixos_azure_publish.cli import (
    config_cmd,
    emulator_cmd,
    hooks_cmd,
    image_cmd,
    nix_cmd,
    publish_cmd,
    role_cmd,
    upload_cmd,
)
from nixos_azure_publish.cli.app import cli, main

cli.add_command(config_cmd.config_group)
cli.add_command(image_cmd.inspect)
cli.add_command(image_cmd.convert)
cli.add_command(nix_cmd.build_command)
cli.add_command(upload_cmd.upload)
cli.add_command(publish_cmd.publish_command)
cli.add_command(emulator_cmd.emulator_group)
for command in (
    hooks_cmd.hydra_hook,
    hooks_cmd.post_build_hook,
    hooks_cmd.enqueue_command,
    hooks_cmd.worker_command,
    role_cmd.role_definition_command,
):
    cli.add_command(command)

__all__ = ["cli", "main"]

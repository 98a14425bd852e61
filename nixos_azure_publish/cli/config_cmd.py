"""`config check` and `config schema`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from nixos_azure_publish import config
from nixos_azure_publish.cli.app import app_context


@click.group("config")
def config_group() -> None:
    """Validate publish targets and describe their schema."""


@config_group.command("check")
@click.option(
    "--config",
    "config_file",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="A publish target as JSON or TOML (camelCase keys).",
)
@click.option("--image", help="Image path, overriding the target's `image`.")
def check(config_file: Path, image: str | None) -> None:
    """Validate a target and print the effective config (defaults filled in) as JSON.

    Exits 0 when valid; otherwise prints every problem with its field path and
    exits 2. Nothing touches Azure.

    \b
    Example:
      nixos-azure-publish config check --config target.json
    """
    target = config.load_target_file(config_file, environ=os.environ, image=image)
    # The effective config is JSON in both modes: it is the command's output.
    click.echo(json.dumps(config.effective(target), indent=2))
    if not app_context().json:
        app_context().note(f"{config_file}: target {target.name!r} is valid")


@config_group.command("schema")
def schema() -> None:
    """Print the JSON Schema of a publish target.

    \b
    Example:
      nixos-azure-publish config schema > target.schema.json
    """
    click.echo(json.dumps(config.json_schema(), indent=2))

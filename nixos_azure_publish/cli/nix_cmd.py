"""`build`: evaluate a flake's publish target, validate it, build its image, show the VHD."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from nixos_azure_publish import config, flake
from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import IMAGE, flag, shown

if TYPE_CHECKING:
    from pathlib import Path


@click.command("build")
@shown(
    "--flake",
    "flake_ref",
    type=str,
    default=".",
    help="Flake reference whose azurePublish.<target> to load (no '#attribute').",
)
@shown(
    "--target",
    type=str,
    default="default",
    help="Name of the target under the flake's azurePublish output.",
)
@click.option(
    "--image",
    type=IMAGE,
    help="Use this VHD (or a directory holding one) instead of building the target's image.",
)
@flag(
    "--no-build",
    help="Evaluate and validate only; report the image only if it is already in the store.",
)
def build_command(flake_ref: str, target: str, image: Path | None, *, no_build: bool) -> None:
    """Evaluate, validate and build a flake's publish target; print its config and VHD path.

    Runs `nix eval --json <flake>#azurePublish.<target>`, validates the result,
    then `nix build` of its image, and finds the one .vhd in the output.
    Nothing touches Azure. With --json, prints the effective target, the
    image path, the store path and the flake revision as one JSON object.

    \b
    Example:
      nixos-azure-publish build --flake . --target default --json
    """
    loaded = flake.load_flake_target(flake_ref, target, image=image, build=not no_build)
    data = {
        "target": config.effective(loaded.target),
        "image": str(loaded.image_path) if loaded.image_path else None,
        "storePath": loaded.store_path,
        "flakeRevision": loaded.flake_revision,
    }
    human = "\n".join(
        [
            f"target {loaded.target.name!r} ({flake_ref}#azurePublish.{target}) is valid",
            f"image: {loaded.image_path or 'not built (--no-build)'}",
            f"store path: {loaded.store_path or '-'}",
            f"flake revision: {loaded.flake_revision or 'unknown'}",
        ]
    )
    app_context().emit(data, human)

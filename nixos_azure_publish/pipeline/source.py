"""Where a publish starts: a target and its image, resolved to a :class:`PublishInput`.

A target comes from a flake's ``azurePublish.<name>`` (evaluated, validated and
its image built) or from a target file (JSON or TOML). Either way the result
names the VHD file, the store path it lies in (its content id) and, for a
flake, the flake's revision.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from nixos_azure_publish import config, flake, nix
from nixos_azure_publish.errors import ConfigError, InternalError
from nixos_azure_publish.pipeline.context import PublishInput

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.config import PublishTarget


def from_flake(
    ref: str,
    target: str = "default",
    *,
    image: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> PublishInput:
    """The target ``azurePublish.<target>`` of flake *ref*, its image built (or *image*)."""
    loaded = flake.load_flake_target(ref, target, image=image, environ=environ)
    if loaded.image_path is None:  # pragma: no cover - building always locates it
        raise InternalError("internal: the target's image was not built")
    return PublishInput(
        target=loaded.target,
        image_path=loaded.image_path,
        store_path=loaded.store_path,
        flake_revision=loaded.flake_revision,
    )


def from_target_file(
    path: Path,
    *,
    image: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> PublishInput:
    """The target in the file at *path*; *image* replaces the image it names."""
    target = config.load_target_file(
        path, environ=environ, image=str(image) if image is not None else None
    )
    if target.image is None:
        raise ConfigError(
            ["image: is not set; set it in the target or pass --image PATH"],
            source=str(path),
        )
    image_path = flake.locate_vhd(Path(target.image))
    return PublishInput(
        target=target,
        image_path=image_path,
        store_path=nix.store_path_of(image_path.resolve(), environ=environ),
    )


def destination(
    *,
    config_file: Path | None,
    flake_ref: str | None,
    target: str = "default",
    environ: Mapping[str, str] | None = None,
) -> PublishTarget:
    """Only the target (where its versions live), its image neither built nor required.

    What ``status``, ``gc`` and ``import`` need: exactly one of *config_file* and
    *flake_ref*.
    """
    if flake_ref is not None:
        return flake.load_flake_target(
            flake_ref, target, build=False, need_image=False, environ=environ
        ).target
    if config_file is None:  # pragma: no cover - the command line checks it
        raise InternalError("internal: neither a target file nor a flake")
    return config.load_target_file(config_file, environ=environ)

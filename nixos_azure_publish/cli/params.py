"""Parameter types shared by several commands, so that they accept the same arguments."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from nixos_azure_publish.errors import UsageError

if TYPE_CHECKING:
    _PathType = click.ParamType[Path]
else:  # click < 8.2 (nixos-24.11's) has no subscriptable ParamType at run time
    _PathType = click.ParamType


class ImagePath(_PathType):
    """An image: a file, or a directory (a Nix store path) holding exactly one ``*.vhd``.

    What ``publish --image``, ``inspect``, ``convert`` and ``upload`` all take. A path
    that does not exist is a usage error (exit 2), as every missing input is; it is
    raised as our own error so that ``--json`` renders it like any other.
    """

    name = "image"

    def convert(
        self,
        value: Any,  # noqa: ANN401 - click passes what the user typed
        param: click.Parameter | None,  # noqa: ARG002 - click's signature
        ctx: click.Context | None,  # noqa: ARG002
    ) -> Path:
        from nixos_azure_publish.flake import locate_vhd  # noqa: PLC0415 - lazy: nix helpers

        path = value if isinstance(value, Path) else Path(str(value))
        if not path.exists() and not path.is_symlink():
            raise UsageError(
                f"the image {path} does not exist",
                hint="Check the path (a .vhd file, or a store path holding one)",
            )
        return locate_vhd(path)


IMAGE = ImagePath()

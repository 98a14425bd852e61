"""`python -m nixos_azure_publish` and the installed `nixos-azure-publish` script."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from nixos_azure_publish.hooks import entry

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run a hook without loading the whole CLI (it must return fast); anything else in it."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in entry.HOOKS:
        command = entry.hydra_hook if args[0] == "hydra-hook" else entry.post_build_hook
        return entry.run(command, args[1:])
    from nixos_azure_publish.cli import main as cli_main  # noqa: PLC0415 - the slow import

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m nixos_azure_publish`."""

from __future__ import annotations

import sys

from nixos_azure_publish.cli import main

if __name__ == "__main__":
    sys.exit(main())

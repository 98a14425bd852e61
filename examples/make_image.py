"""Write a small fixed VHD to stand in for a NixOS Azure image when Nix is not installed.

Usage: ``python examples/make_image.py OUT.vhd``. The image is a 32 MiB sparse
raw disk with a few KiB of data, converted with the package's own converter,
so it passes the same checks a real image must pass.
"""
# ruff: noqa: INP001 - a script, not a package

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from nixos_azure_publish import vhd

SIZE = 32 * 1024 * 1024


def make_image(out: Path) -> Path:
    """Write the example image to *out* (replacing it); return *out*."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="example-image-") as work:
        raw = Path(work) / "disk.raw"
        with raw.open("wb") as handle:
            handle.write(b"NixOS example image (generated without Nix)\n")
            handle.seek(8 * 1024 * 1024)
            handle.write(b"\x2a" * 4096)
            handle.truncate(SIZE)
        vhd.convert(raw, out, overwrite=True)
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:  # noqa: PLR2004
        sys.exit("usage: make_image.py OUT.vhd")
    sys.stdout.write(f"{make_image(Path(sys.argv[1]))}\n")

"""Writing publish targets for tests: one complete target into the emulator's gallery."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.config import PublishTarget, load_target

if TYPE_CHECKING:
    from pathlib import Path

GROUP = "nixos-images"
GALLERY = "test_gallery"
DEFINITION = "nixos-test"
# A community gallery's sharing details (gallery.community), as the maintainers give them.
COMMUNITY = {
    "publicNamePrefix": "nixos",
    "publisherUri": "https://nixos.org",
    "publisherContact": "images@example.org",
    "eula": "https://nixos.org/eula",
}


def write_target(
    folder: Path, image: Path | None, *, filename: str = "target.json", **overrides: Any
) -> Path:
    """A complete target into the emulator's gallery as *folder*/*filename*; *overrides*
    replace its top-level keys. Without an *image* it names none (a flake or a job gives it)."""
    data: dict[str, Any] = {
        "name": "nixos-test",
        "resourceGroup": GROUP,
        "location": "westeurope",
        "hyperVGeneration": "V2",
        "nixos": {"release": "25.05", "label": "25.05.20250612.abc1234"},
        "gallery": {"name": GALLERY},
        "imageDefinition": {
            "name": DEFINITION,
            "publisher": "NixOS",
            "offer": "NixOS",
            "sku": "25.05-gen2",
        },
        "version": {"targetRegions": ["westeurope", {"name": "northeurope", "replicas": 2}]},
    }
    if image is not None:
        data["image"] = str(image)
    data.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / filename
    path.write_text(json.dumps(data))
    return path


# The fewest keys a valid target has.
MINIMAL: dict[str, Any] = {
    "name": "t",
    "resourceGroup": "rg",
    "location": "westeurope",
    "hyperVGeneration": "V2",
    "gallery": {"name": "g"},
    "imageDefinition": {"name": "d", "publisher": "p", "offer": "o", "sku": "s"},
}


def minimal_target(**overrides: Any) -> PublishTarget:
    """A loaded target with only the required keys; *overrides* replace top-level keys."""
    return load_target({**copy.deepcopy(MINIMAL), **overrides})

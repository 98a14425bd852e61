"""Writing publish targets for tests: one complete target into the emulator's gallery."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

GROUP = "nixos-images"
GALLERY = "test_gallery"
DEFINITION = "nixos-test"


def write_target(folder: Path, image: Path, **overrides: Any) -> Path:
    data: dict[str, Any] = {
        "name": "nixos-test",
        "image": str(image),
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
    data.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "target.json"
    path.write_text(json.dumps(data))
    return path

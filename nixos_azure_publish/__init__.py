"""Publish a NixOS configuration as a replicated Azure Compute Gallery image."""

from __future__ import annotations

__version__ = "0.1.0"

"""The numbers that bound an upload, each with its reason: Azure's limits and our defaults."""

from __future__ import annotations

from typing import Final

PAGE: Final = 512
"""A page blob is written in whole pages of this many bytes."""
MAX_PAGE_WRITE: Final = 4 * 1024 * 1024
"""Azure's limit for one Put Page request (Azurite accepts more; we never send more)."""
DEFAULT_CONCURRENCY: Final = 8
"""Parallel requests; see bench/RESULTS.md for the measurement behind it."""
MIN_CONCURRENCY: Final = 1
MAX_CONCURRENCY: Final = 64
"""The most parallel requests an upload may use (the configuration and the CLI say the same)."""

"""The emulator's own failure to start or run, with a hint on what to do.

The emulator imports nothing from the rest of the package, so it cannot raise
the tool's error types; the CLI turns :class:`EmulatorError` into its usage error.
"""

from __future__ import annotations


class EmulatorError(Exception):
    """The emulator (or its Azurite) cannot start or serve; *hint* says what to do."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

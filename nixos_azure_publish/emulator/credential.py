"""A credential for the emulator: it accepts any bearer token, so one fixed token does."""

from __future__ import annotations

import time
from typing import Any, Final

from azure.core.credentials import AccessToken

TOKEN: Final = "emulator-token"  # noqa: S105 - not a secret: the emulator accepts any token


class EmulatorCredential:
    """A ``TokenCredential`` that hands out a fixed token valid for an hour."""

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:  # noqa: ANN401 - SDK protocol
        del scopes, kwargs
        return AccessToken(TOKEN, int(time.time()) + 3600)

    def close(self) -> None:
        """Nothing to release."""

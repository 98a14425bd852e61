"""Removes secrets (SAS signatures, bearer tokens, account keys) from logged text.

The emulator's own copy of the tool's redaction patterns: the emulator imports
nothing from the rest of the package (it is an independent oracle for Azure),
and its request log and recorded traffic must never hold a secret either.
"""

from __future__ import annotations

import re
from typing import Final

REDACTED: Final = "REDACTED"

_SECRET_QUERY_KEYS: Final = ("sig", "signature", "code", "token", "access_token")
_QUERY_SECRET = re.compile(
    r"(?P<key>(?:[?&;]|%26|\b)(?:" + "|".join(_SECRET_QUERY_KEYS) + r")=)(?P<value>[^&\s\"'<>#]+)",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?P<key>\bBearer\s+)(?P<value>[A-Za-z0-9\-._~+/]+=*)", re.IGNORECASE)
_ACCOUNT_KEY = re.compile(
    r"(?P<key>\b(?:AccountKey|SharedAccessSignature|SharedAccessKey)=)(?P<value>[^;\s\"']+)",
    re.IGNORECASE,
)
_AUTH_HEADER = re.compile(
    r"(?P<key>['\"]?(?:Authorization|x-ms-encryption-key)['\"]?\s*[:=]\s*['\"]?)"
    r"(?P<value>(?!Bearer\b)(?:[A-Za-z]+\s+)?[^'\"\s,}]+)",
    re.IGNORECASE,
)
_PATTERNS: Final = (_QUERY_SECRET, _BEARER, _ACCOUNT_KEY, _AUTH_HEADER)


def _replace(match: re.Match[str]) -> str:
    return match.group("key") + REDACTED


def redact(text: str) -> str:
    """Return *text* with every secret we know the shape of replaced by ``REDACTED``."""
    for pattern in _PATTERNS:
        text = pattern.sub(_replace, text)
    return text

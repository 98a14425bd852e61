"""Removes secrets (SAS signatures, bearer tokens, account keys) from text.

Every string that may reach a log line, an error message or a report passes
through :func:`redact`; the logging filter installed by the CLI applies it to
every record. Keeping the patterns in one place is what makes "a SAS token
never appears in a log" testable.
"""

from __future__ import annotations

import logging
import re
from typing import Final

REDACTED: Final = "REDACTED"

# Query parameters that carry a secret in a SAS URL (the signature) or that
# would let someone replay it. Matching is case-insensitive, as Azure's is.
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


class RedactingFilter(logging.Filter):
    """A logging filter that redacts the fully formatted message of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg = cleaned
            record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks are rendered later from exc_info; render and redact them now.
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def protect_third_party_logs() -> None:
    """Redact at source what third-party loggers write: urllib3 and the SDK's HTTP logging
    policy log full request URLs (SAS signature included) at DEBUG. Idempotent; called
    before any storage request is made."""
    for name in (
        "urllib3.connectionpool",
        "urllib3.poolmanager",
        "azure.core.pipeline.policies.http_logging_policy",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())

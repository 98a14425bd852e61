"""Error classification and the retry policy: what is transient, what is fatal and why.

Every failed request passes through :func:`classify`: a transient failure is
retried with :class:`RetryPolicy`'s backoff; anything else becomes a
:class:`PublishError` that names the range and says what to do. SAS URLs are
shown only as :func:`display_url`.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import logging
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final, TypeVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import urllib3
from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from nixos_azure_publish.errors import (
    Interrupted,
    PublishError,
    SasExpiredError,
    SourceSasExpiredError,
    UploadError,
)
from nixos_azure_publish.redact import redact

if TYPE_CHECKING:
    import random
    import threading
    from collections.abc import Callable, Iterator, Mapping

_T = TypeVar("_T")

log = logging.getLogger(__name__)

_TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_CODES: Final = frozenset({"Md5Mismatch", "Crc64Mismatch", "ServerBusy"})


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with full jitter, per request."""

    attempts: int = 8
    """Tries per request, the first included."""
    initial: float = 0.5
    maximum: float = 30.0
    max_retry_after: float = 120.0
    """A server's Retry-After is honoured up to this many seconds."""

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number *retry* (1-based)."""
        backoff = min(self.maximum, self.initial * 2.0 ** (retry - 1))
        jittered = backoff / 2 + rng.uniform(0, backoff / 2)
        if retry_after is not None:
            return max(jittered, min(retry_after, self.max_retry_after))
        return jittered


@dataclass(frozen=True)
class Transient:
    reason: str
    retry_after: float | None = None


def with_retries(
    fn: Callable[[], _T],
    *,
    what: str,
    sas_url: str,
    policy: RetryPolicy,
    stop: threading.Event,
    rng: random.Random,
    hint: str,
    on_retry: Callable[[], None] | None = None,
    source_url: str | None = None,
) -> _T:
    """*fn* (one request), retried with *policy*'s backoff while it fails transiently.

    A :class:`PublishError` from *fn* passes unchanged; any other permanent failure is
    raised as :func:`classify` words it; the last transient one
    as an :class:`UploadError` with *hint*. *stop* set: :class:`Interrupted`.
    *on_retry* runs before each wait (to count the retry). *source_url*: the blob a
    server-side copy reads (its refusals are the source's, not the destination's).
    """
    attempt = 0
    while True:
        if stop.is_set():
            raise Interrupted("stopped")
        try:
            return fn()
        except PublishError:
            raise  # already worded for the user: not to be retried or reworded
        except Exception as error:  # noqa: BLE001 - classified right below
            verdict = classify(error, what=what, sas_url=sas_url, source_url=source_url)
        if not isinstance(verdict, Transient):
            raise verdict
        attempt += 1
        if attempt >= policy.attempts:
            raise UploadError(
                f"{what} failed {attempt} times; last: {verdict.reason}",
                hint=hint,
                rerun_helps=True,
            )
        if on_retry is not None:
            on_retry()
        delay = policy.delay(attempt, verdict.retry_after, rng)
        log.debug("%s: %s; retry %d in %.2fs", what, verdict.reason, attempt, delay)
        stop.wait(delay)


FEATURE_NOT_SUPPORTED = "FeatureNotSupported"
"""Azurite's answer (500) to a feature it lacks, e.g. a CRC64 header in strict mode."""


class PageWriteError(Exception):
    """A page write the service answered with an error status."""

    def __init__(self, status: int, code: str, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(
            f"HTTP {status} {code}: {message}" if code else f"HTTP {status}: {message}"
        )
        self.status_code = status
        self.error_code = code
        self.headers = headers


def _retry_after(headers: Mapping[str, str]) -> float | None:
    millis = headers.get("x-ms-retry-after-ms")
    if millis:
        with contextlib.suppress(ValueError):
            return float(millis) / 1000.0
    value = headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return redact(text[0] if text else type(error).__name__)


def sas_expiry(sas_url: str) -> datetime | None:
    """The SAS's signed expiry (``se``), or ``None`` when absent or unreadable."""
    values = parse_qs(urlsplit(sas_url).query).get("se")
    if not values:
        return None
    try:
        when = datetime.fromisoformat(values[0])
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def display_url(sas_url: str) -> str:
    """The blob URL without its query: safe to show."""
    parts = urlsplit(sas_url)
    return redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")))


SAS_HINT: Final = (
    "Grant write access to the disk again (a fresh SAS) and rerun; "
    "the upload resumes where it stopped"
)


COPY_SOURCE_REFUSED: Final = "CannotVerifyCopySource"
"""Azure's answer to a Put Page From URL whose source refused to be read (with the
source's status: 403 for an expired or revoked SAS, 404 for a missing blob)."""
SOURCE_SAS_HINT: Final = (
    "Ask for a new read SAS URL of the source (`az disk grant-access --access-level Read`,"
    " `az storage blob generate-sas`) and run the import again with it: the copy resumes"
)


def source_refused(source_url: str, *, status: int, detail: str) -> PublishError:
    """The error for the source of a server-side copy that refused to be read."""
    shown = display_url(source_url)
    if status == 404:  # noqa: PLR2004
        return UploadError(
            f"the source {shown} no longer exists ({detail})",
            hint="Check the source URL and run the import again",
            rerun_helps=False,
        )
    expiry = sas_expiry(source_url)
    if expiry is not None and expiry <= datetime.now(UTC):
        what = f"expired at {expiry:%Y-%m-%d %H:%M:%S} UTC"
    else:  # a disk's read SAS names its expiry in a stored policy, not in the URL
        what = "has expired or was revoked"
    return SourceSasExpiredError(
        f"the read SAS of the source {shown} {what} ({detail})", hint=SOURCE_SAS_HINT
    )


_CERTIFICATE_ERRORS: Final = (
    ssl.SSLCertVerificationError,
    urllib3.util.ssl_match_hostname.CertificateError,  # urllib3's own host name check
)
_PERMANENT_TLS: Final = re.compile(
    r"\[(?:X509|PEM): |\[SSL: (?:WRONG_VERSION_NUMBER|UNSUPPORTED_PROTOCOL|HTTP_REQUEST"
    r"|TLSV1_ALERT_PROTOCOL_VERSION|NO_PROTOCOLS_AVAILABLE)\]"
)
"""TLS errors that no retry can mend: plain HTTP where TLS was expected, no common
protocol version, a CA bundle that cannot be read."""
_TUNNEL_FAILED: Final = re.compile(r"Tunnel connection failed: (\d{3})[^'\"\n]*")
"""How http.client reports a CONNECT that the proxy refused (requests and urllib3 wrap it)."""
_NETWORK_ERRNOS: Final = frozenset(
    {errno.ENETDOWN, errno.ENETUNREACH, errno.ENETRESET, errno.EHOSTDOWN, errno.EHOSTUNREACH}
)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """*error* and the errors it wraps: Python's chain, azure-core's ``inner_exception``,
    urllib3's ``reason`` and exceptions passed as arguments (as requests does)."""
    seen: set[int] = set()
    todo = [error]
    while todo and len(seen) < 20:  # noqa: PLR2004 - a bound, not a tunable
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [
            current.__cause__,
            current.__context__,
            getattr(current, "inner_exception", None),
            getattr(current, "reason", None),
            *current.args,
        ]
        todo.extend(e for e in linked if isinstance(e, BaseException))


def classify(
    error: BaseException, *, what: str, sas_url: str, source_url: str | None = None
) -> Transient | PublishError:
    """Whether *error* from the storage service is worth retrying, or the error to report.

    *source_url*: the blob a server-side copy (Put Page From URL) reads from.
    """
    verdict = _classify_connection(error, what=what, sas_url=sas_url)
    if verdict is not None:
        return verdict
    if isinstance(error, HttpResponseError):
        headers: Mapping[str, str] = getattr(error.response, "headers", None) or {}
        status = error.status_code or 0
    elif isinstance(error, PageWriteError):
        headers, status = error.headers, error.status_code
    else:
        return UploadError(f"{what}: {_first_line(error)}")
    return _classify_response(
        error, status, headers, what=what, sas_url=sas_url, source_url=source_url
    )


def _classify_connection(
    error: BaseException, *, what: str, sas_url: str
) -> Transient | PublishError | None:
    """The verdict on an error of the connection (no response); None for other errors."""
    causes = list(_causes(error))
    tls = next((e for e in causes if isinstance(e, _CERTIFICATE_ERRORS)), None)
    if tls is not None:
        # Retrying cannot make a certificate trusted: stop at once. Other TLS errors (a
        # handshake cut short, say) are transient, below, unless retrying cannot help.
        return UploadError(
            f"{what}: TLS with {display_url(sas_url)} failed: {_first_line(tls)}",
            hint="Trust the endpoint's certificate (--ca-cert for a local emulator)",
        )
    lasting = next((e for e in causes if _PERMANENT_TLS.search(str(e))), None)
    if lasting is not None:
        return UploadError(
            f"{what}: TLS with {display_url(sas_url)} failed: {_first_line(lasting)}",
            hint="Check that the endpoint and HTTPS_PROXY speak TLS where their URLs say "
            "https, and that the CA bundle is PEM",
        )
    tunnel = next((m for e in causes if (m := _TUNNEL_FAILED.search(str(e)))), None)
    if tunnel is not None:
        # The forward proxy (HTTPS_PROXY) answered CONNECT with an error status.
        status = int(tunnel.group(1))
        if status in _TRANSIENT_STATUS:
            return Transient(tunnel.group(0))
        return UploadError(
            f"{what}: the proxy refused to connect to {display_url(sas_url)}: {tunnel.group(0)}",
            hint="Check HTTPS_PROXY (user and password as http://user:password@host:port)"
            if status == 407  # noqa: PLR2004
            else "Check HTTPS_PROXY and NO_PROXY",
        )
    if isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS:
        return Transient(_first_line(error))  # the network went away under an open socket
    if isinstance(
        error,
        ServiceRequestError
        | ServiceResponseError
        | DecodeError
        | urllib3.exceptions.HTTPError
        | http.client.HTTPException  # a broken response, from a connection used directly
        | ssl.SSLError  # a TLS connection cut mid-way (an untrusted certificate is above)
        | ConnectionError
        | TimeoutError,
    ):
        return Transient(_first_line(error))
    return None


def _classify_response(
    error: BaseException,
    status: int,
    headers: Mapping[str, str],
    *,
    what: str,
    sas_url: str,
    source_url: str | None = None,
) -> Transient | PublishError:
    """The verdict on an error status the service answered with."""
    raw_code = getattr(error, "error_code", None) or ""
    # The SDK gives a StorageErrorCode enum (whose hash is not its value's) or a string.
    code = str(getattr(raw_code, "value", raw_code))
    if code == FEATURE_NOT_SUPPORTED:
        # Permanent although 500: the endpoint cannot do what the request asks (Azurite in
        # its default strict mode answers so to a CRC64 header); retrying cannot help.
        return UploadError(
            f"{what}: {display_url(sas_url)} does not support the request "
            f"(HTTP {status} {code}: {_first_line(error)})",
            hint="Use --checksum md5 or none with this endpoint (or run Azurite with --loose)",
        )
    if status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
        return Transient(f"HTTP {status} {code}".strip(), _retry_after(headers))
    detail = f"HTTP {status} {code}".strip()
    if code == COPY_SOURCE_REFUSED and source_url is not None and status in {403, 404}:
        return source_refused(source_url, status=status, detail=detail)
    blob = display_url(sas_url)
    if status == 403:  # noqa: PLR2004
        expiry = sas_expiry(sas_url)
        message = str(error).lower()
        if (expiry is not None and expiry <= datetime.now(UTC)) or "expir" in message:
            when = f" at {expiry:%Y-%m-%d %H:%M:%S} UTC" if expiry else ""
            return SasExpiredError(
                f"{what}: the SAS for {blob} expired{when} ({detail})", hint=SAS_HINT
            )
        if code == "AuthorizationPermissionMismatch":
            return UploadError(
                f"{what}: the SAS for {blob} does not allow writing ({detail})",
                hint="Use a SAS with write permission (grant access with access=Write)",
            )
        return SasExpiredError(
            f"{what}: the SAS for {blob} was refused: revoked, expired or not valid ({detail})",
            hint=SAS_HINT,
        )
    if status == 404:  # noqa: PLR2004
        return UploadError(
            f"{what}: {blob} does not exist ({detail})",
            hint="Create the upload disk first (createOption Upload) and use its write SAS",
        )
    return UploadError(f"{what}: {blob} refused the request ({detail}: {_first_line(error)})")

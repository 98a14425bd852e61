"""The upload engine: writes a fixed VHD into an existing page blob through its SAS URL.

This is where a publish spends most of its time, so it sends only what must
be sent. It never creates, resizes or deletes the blob (a managed disk's
upload blob must only receive pages). The plan:

1. refuse unless the image is Azure-ready and the blob's size equals the file size;
2. list the blob's page ranges once, and load the local journal of ranges
   finished by an earlier run (one per blob, by URL and creation time, for
   the file it names: :class:`Journal`);
3. send every data extent of the image (the VHD module's: non-zero sectors,
   at most 4 MiB each) with a bounded pool of workers, except extents an
   earlier run finished and the blob still holds. The workers take the
   filesystem's data regions in pieces of 4 MiB and read each piece once,
   finding its extents and their checksums as they read (:mod:`.piece`);
4. clear the pages the blob holds where the image has no data (a reused disk);
5. verify: the blob's page ranges equal the expected ones, or (``full``)
   read every data range back and compare digests.

Transient failures retry per request with exponential backoff and jitter,
honouring ``Retry-After``; a fatal one (expired SAS, missing blob) stops every
worker and names the range. SAS URLs only ever appear in logs and errors as
their redacted form.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import hashlib
import http.client
import json
import logging
import os
import random
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

import requests
import urllib3
from azure.core.exceptions import (
    DecodeError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient

from nixos_azure_publish import __version__, piece, state, vhd
from nixos_azure_publish import checksum as checksums
from nixos_azure_publish.errors import (
    ImageError,
    Interrupted,
    PublishError,
    SasExpiredError,
    UploadError,
    UsageError,
)
from nixos_azure_publish.redact import RedactingFilter, redact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

log = logging.getLogger(__name__)

PAGE: Final = 512
MAX_PAGE_WRITE: Final = 4 * 1024 * 1024
"""Azure's limit for one Put Page request (Azurite accepts more; we never send more)."""
DEFAULT_CONCURRENCY: Final = 8
"""Parallel requests; see bench/RESULTS.md for the measurement behind it."""
BUFFER_BUDGET: Final = 32 * 1024 * 1024
"""Image bytes in flight at once, whatever the concurrency. With the idle buffers kept
for reuse, the image data in memory stays under twice this."""
PAGE_RANGE_WINDOW: Final = 64 * 1024**3
"""List page ranges in windows, so that a fragmented large disk never times out one call."""
JOURNAL_INTERVAL: Final = 1.0
JOURNAL_VERSION: Final = 1
JOURNAL_MAX_AGE: Final = 14 * 24 * 3600.0
"""Journals untouched this long (seconds) are deleted when another upload starts. The
upload they belong to is over: its disk deleted or its SAS long expired. Deleting one
by mistake costs only time."""
_JOURNAL_FILE: Final = re.compile(r"[0-9a-f]{32}\.json|\.[0-9a-f]{32}\.json\.[^/]+\.tmp")
"""A journal, or a temporary file that a killed run left while writing one."""

Verify = Literal["none", "ranges", "full"]
Checksum = checksums.Checksum
Span = tuple[int, int]
"""A byte range ``[start, end)``."""
Data = bytes | bytearray | memoryview

_T = TypeVar("_T")
_TRANSIENT_STATUS: Final = frozenset({408, 429, 500, 502, 503, 504})
_TRANSIENT_CODES: Final = frozenset({"Md5Mismatch", "Crc64Mismatch", "ServerBusy"})


# --------------------------------------------------------------------------- byte ranges


def merge_spans(spans: Iterable[Span]) -> list[Span]:
    """Sorted, with overlapping and adjacent spans joined; empty spans dropped."""
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            if end > merged[-1][1]:
                merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def clip_spans(spans: Sequence[Span], start: int, end: int) -> list[Span]:
    """The parts of the sorted, disjoint *spans* inside ``[start, end)``."""
    first = bisect.bisect_right(spans, (start, start)) - 1
    first = max(first, 0)
    clipped: list[Span] = []
    for s, e in spans[first:]:
        if s >= end:
            break
        lo, hi = max(s, start), min(e, end)
        if hi > lo:
            clipped.append((lo, hi))
    return clipped


def subtract_spans(spans: Sequence[Span], remove: Sequence[Span]) -> list[Span]:
    """*spans* minus *remove*; both sorted and disjoint."""
    result: list[Span] = []
    for start, end in spans:
        cursor = start
        for r_start, r_end in clip_spans(remove, start, end):
            if r_start > cursor:
                result.append((cursor, r_start))
            cursor = max(cursor, r_end)
        if cursor < end:
            result.append((cursor, end))
    return result


def split_span(span: Span, limit: int) -> list[Span]:
    """*span* cut into pieces of at most *limit* bytes."""
    start, end = span
    return [(pos, min(pos + limit, end)) for pos in range(start, end, limit)]


def _span_text(span: Span) -> str:
    return f"bytes {span[0]}-{span[1] - 1}"


# --------------------------------------------------------------------------- results, progress


@dataclass(frozen=True)
class UploadResult:
    """What an upload did. ``data_bytes`` is the image's non-zero data, in bytes."""

    bytes_sent: int
    data_bytes: int
    ranges_sent: int
    ranges_skipped: int
    ranges_retried: int
    seconds: float
    verified: bool
    ranges_cleared: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object printed by ``upload --json``."""
        return {
            "bytes_sent": self.bytes_sent,
            "data_bytes": self.data_bytes,
            "ranges_sent": self.ranges_sent,
            "ranges_skipped": self.ranges_skipped,
            "ranges_retried": self.ranges_retried,
            "seconds": round(self.seconds, 3),
            "verified": self.verified,
        }


class ProgressSink(Protocol):
    """Receives progress; calls are serialised by the engine."""

    def start(self, total: int) -> None:
        """*total*: the bytes of the image's data regions, which hold all its data."""

    def update(self, done: int, sent: int) -> None:
        """Cumulative bytes of data regions finished, and bytes actually sent."""

    def finish(self, done: int, sent: int) -> None:
        """The upload phase is over (successfully or not)."""


class LogProgress:
    """One log line every *interval* seconds: the progress sink when there is no terminal."""

    def __init__(self, *, interval: float = 5.0, logger: logging.Logger | None = None) -> None:
        self.interval = interval
        self.logger = logger or log
        self._total = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, total: int) -> None:
        self._total = total
        self._started = self._last = time.monotonic()

    def update(self, done: int, sent: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.logger.info("%s", progress_line(done, sent, self._total, now - self._started))

    def finish(self, done: int, sent: int) -> None:
        self.logger.info(
            "%s", progress_line(done, sent, self._total, time.monotonic() - self._started)
        )


def _mib(n: float) -> str:
    return f"{n / 1024**2:,.1f} MiB"


def progress_line(done: int, sent: int, total: int, elapsed: float) -> str:
    """``uploaded 12.0 MiB; 40.0 of 100.0 MiB done (40%), 9.9 MiB/s, ETA 0:06``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    pct = 100 * done // total if total else 100
    eta = "?"
    if rate > 0 and total >= done:
        left = int((total - done) / rate)
        eta = f"{left // 60}:{left % 60:02d}"
    return (
        f"uploaded {_mib(sent)}; {done / 1024**2:,.1f} of {_mib(total)} done ({pct}%), "
        f"{_mib(sent / elapsed if elapsed > 0 else 0)}/s, ETA {eta}"
    )


# --------------------------------------------------------------------------- retries


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
class _Transient:
    reason: str
    retry_after: float | None = None


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


_SAS_HINT: Final = (
    "Grant write access to the disk again (a fresh SAS) and rerun; "
    "the upload resumes where it stopped"
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


def classify(error: BaseException, *, what: str, sas_url: str) -> _Transient | PublishError:
    """Whether *error* from the storage service is worth retrying, or the error to report."""
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
    return _classify_response(error, status, headers, what=what, sas_url=sas_url)


def _classify_connection(
    error: BaseException, *, what: str, sas_url: str
) -> _Transient | PublishError | None:
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
            return _Transient(tunnel.group(0))
        return UploadError(
            f"{what}: the proxy refused to connect to {display_url(sas_url)}: {tunnel.group(0)}",
            hint="Check HTTPS_PROXY (user and password as http://user:password@host:port)"
            if status == 407  # noqa: PLR2004
            else "Check HTTPS_PROXY and NO_PROXY",
        )
    if isinstance(error, OSError) and error.errno in _NETWORK_ERRNOS:
        return _Transient(_first_line(error))  # the network went away under an open socket
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
        return _Transient(_first_line(error))
    return None


def _classify_response(
    error: BaseException, status: int, headers: Mapping[str, str], *, what: str, sas_url: str
) -> _Transient | PublishError:
    """The verdict on an error status the service answered with."""
    raw_code = getattr(error, "error_code", None) or ""
    # The SDK gives a StorageErrorCode enum (whose hash is not its value's) or a string.
    code = str(getattr(raw_code, "value", raw_code))
    if status in _TRANSIENT_STATUS or code in _TRANSIENT_CODES:
        return _Transient(f"HTTP {status} {code}".strip(), _retry_after(headers))
    detail = f"HTTP {status} {code}".strip()
    blob = display_url(sas_url)
    if status == 403:  # noqa: PLR2004
        expiry = sas_expiry(sas_url)
        message = str(error).lower()
        if (expiry is not None and expiry <= datetime.now(UTC)) or "expir" in message:
            when = f" at {expiry:%Y-%m-%d %H:%M:%S} UTC" if expiry else ""
            return SasExpiredError(
                f"{what}: the SAS for {blob} expired{when} ({detail})", hint=_SAS_HINT
            )
        if code == "AuthorizationPermissionMismatch":
            return UploadError(
                f"{what}: the SAS for {blob} does not allow writing ({detail})",
                hint="Use a SAS with write permission (grant access with access=Write)",
            )
        return SasExpiredError(
            f"{what}: the SAS for {blob} was refused: revoked, expired or not valid ({detail})",
            hint=_SAS_HINT,
        )
    if status == 404:  # noqa: PLR2004
        return UploadError(
            f"{what}: {blob} does not exist ({detail})",
            hint="Create the upload disk first (createOption Upload) and use its write SAS",
        )
    return UploadError(f"{what}: {blob} refused the request ({detail}: {_first_line(error)})")


# --------------------------------------------------------------------------- the storage protocol


@dataclass(frozen=True)
class BlobInfo:
    """What the engine needs to know about the destination blob."""

    size: int
    blob_type: str
    created: str


class PageBlobApi(Protocol):
    """The narrow storage protocol the engine depends on (one call = one request)."""

    def properties(self) -> BlobInfo: ...

    def page_ranges(self, start: int, end: int) -> list[Span]: ...

    @property
    def checksum_kind(self) -> checksums.Kind | None:
        """The checksum :meth:`put_pages` sends with each write, if any."""

    def put_pages(self, offset: int, data: Data, checksum: tuple[str, str] | None = None) -> None:
        """Write *data* at *offset*. *checksum* is the header carrying its checksum of
        :attr:`checksum_kind`, when the caller has computed it; else it is computed here."""

    def clear_pages(self, start: int, end: int) -> None: ...

    def read(self, start: int, end: int) -> bytes: ...


def _pooled_transport(*, pool_size: int, **kwargs: Any) -> Any:  # noqa: ANN401 - untyped requests
    """The SDK's requests transport with a connection pool as large as the worker pool.

    requests keeps 10 connections per host by default; more workers than that
    would open and drop a connection per request.
    """
    transport = RequestsTransport(**kwargs)
    transport.open()
    for prefix in ("http://", "https://"):
        transport.session.get_adapter(prefix).init_poolmanager(1, pool_size)
    return transport


_XML_MESSAGE = re.compile(rb"<Message>(.*?)</Message>", re.DOTALL)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy the environment asks for (``HTTPS_PROXY``, else ``ALL_PROXY``, minus
    ``NO_PROXY``), as requests chooses it for the SDK's own requests."""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(scheme) or proxies.get("all")


def _parse_proxy(proxy: str | None) -> urllib3.util.Url | None:
    if not proxy:
        return None
    try:
        url = urllib3.util.parse_url(proxy if "://" in proxy else f"http://{proxy}")
    except urllib3.exceptions.LocationParseError:
        url = None  # its message would show the proxy's password
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UsageError(
            "the proxy in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY is not an http(s) proxy URL",
            hint="Set it to http://host:port (or http://user:password@host:port)",
        )
    return url


def _trusted_certificates(*, connection_verify: bool | str) -> dict[str, str]:
    """The CA bundle options, as requests chooses them for the SDK's own requests: the
    file or directory asked for, else REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else
    requests' default bundle (certifi's)."""
    bundle = (
        connection_verify
        if isinstance(connection_verify, str)
        else os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or requests.utils.DEFAULT_CA_BUNDLE_PATH
    )
    return {"ca_cert_dir": bundle} if Path(bundle).is_dir() else {"ca_certs": bundle}


class _PageWriter:
    """Put Page and clear requests over keep-alive connections, one per worker at a time.

    The hot path of an upload, measured per request here: the SDK's pipeline
    costs about 1 ms of CPU, a urllib3 ``PoolManager`` 0.38 ms (most of it
    parsing and re-encoding the long SAS URL every time), a urllib3 connection
    used directly 0.22 ms. So the writer keeps its own small stack of urllib3
    connections (TLS, certificate checks and proxy tunnels stay urllib3's) and
    builds the request target once. The requests are exactly the SDK's: the
    same API version, headers and checksum.
    """

    def __init__(
        self,
        sas_url: str,
        *,
        api_version: str,
        connection_verify: bool | str,
        connection_timeout: float,
        read_timeout: float,
    ) -> None:
        parts = urlsplit(sas_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) blob URL: {display_url(sas_url)}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = urlunsplit(("", "", parts.path, "comp=page&" + parts.query, ""))
        self._headers = {
            "x-ms-version": api_version,
            "User-Agent": f"nixos-azure-publish/{__version__}",
        }
        self._connect_timeout = connection_timeout
        self._read_timeout = read_timeout
        self._tls: dict[str, Any] = {}
        if self._https:
            if connection_verify is False:
                self._tls["cert_reqs"] = "CERT_NONE"
            else:
                self._tls["cert_reqs"] = "CERT_REQUIRED"
                self._tls.update(_trusted_certificates(connection_verify=connection_verify))
        self._proxy = _parse_proxy(_proxy_for(parts.scheme, self._host))
        self._proxy_auth: dict[str, str] = {}
        if self._proxy is not None and self._proxy.auth:
            # Percent-decoded, as requests does for the SDK's own requests.
            user, _, password = self._proxy.auth.partition(":")
            try:
                self._proxy_auth = urllib3.util.make_headers(
                    proxy_basic_auth=f"{unquote(user)}:{unquote(password)}"
                )
            except UnicodeError:
                raise UsageError(
                    "the proxy's user name or password has characters HTTP basic "
                    "authentication cannot carry (only Latin-1)",
                    hint="Use a Latin-1 user name and password for the proxy",
                ) from None
        if self._proxy is not None and not self._https:
            # A plain-HTTP request through a proxy names the whole URL (RFC 9112, 3.2.2),
            # and carries the proxy's credentials itself.
            self._target = urlunsplit((parts.scheme, parts.netloc, *urlsplit(self._target)[2:]))
            self._headers.update(self._proxy_auth)
        self._idle: list[urllib3.connection.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def put(self, offset: int, data: Data, checksum: tuple[str, str] | None) -> None:
        headers = {
            **self._headers,
            "x-ms-page-write": "update",
            "x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
        }
        if checksum is not None:
            headers[checksum[0]] = checksum[1]
        self._send(headers, data)

    def clear(self, start: int, end: int) -> None:
        headers = {
            **self._headers,
            "x-ms-page-write": "clear",
            "x-ms-range": f"bytes={start}-{end - 1}",
        }
        self._send(headers, b"")

    def _connection(self) -> urllib3.connection.HTTPConnection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            if conn.sock is not None and conn.is_connected:
                return conn
            # Closed by the server while idle, or after its last response. A closed urllib3
            # connection forgets its proxy tunnel, so it is replaced, never reopened.
            conn.close()
        return self._new_connection()

    def _new_connection(self) -> urllib3.connection.HTTPConnection:
        host, port = self._host, self._port
        options: dict[str, Any] = {"timeout": self._connect_timeout}
        if self._proxy is not None:
            default = 443 if self._proxy.scheme == "https" else 80
            host, port = self._proxy.host or "", self._proxy.port or default
            options["proxy"] = self._proxy
            options["proxy_config"] = urllib3.connection.ProxyConfig(None, False, None, None)  # noqa: FBT003 - a named tuple
        if not self._https:
            return urllib3.connection.HTTPConnection(host, port, **options)
        conn = urllib3.connection.HTTPSConnection(host, port, **options, **self._tls)
        if self._proxy is not None:
            conn.set_tunnel(
                self._host,
                self._port,
                headers=self._proxy_auth or None,
                scheme=self._proxy.scheme or "http",
            )
        return conn

    def _send(self, headers: dict[str, str], body: Data) -> None:
        conn = self._connection()
        try:
            conn.timeout = self._connect_timeout
            # urllib3 sends any buffer as it is, in one piece (its annotation says bytes).
            conn.request("PUT", self._target, body=cast("bytes", body), headers=headers)
            conn.timeout = self._read_timeout
            response = conn.getresponse()
        except BaseException:
            conn.close()  # half a request may be on the wire: never reuse it
            raise
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)
        if 200 <= response.status < 300:  # noqa: PLR2004
            return
        match = _XML_MESSAGE.search(response.data or b"")
        message = match.group(1).decode(errors="replace").strip().splitlines()[0] if match else ""
        raise PageWriteError(
            response.status,
            response.headers.get("x-ms-error-code", ""),
            message or response.reason or "",
            response.headers,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class SdkPageBlob:
    """:class:`PageBlobApi` from a SAS URL only: azure-storage-blob's ``BlobClient``
    for properties, page ranges and reads, :class:`_PageWriter` for page writes.

    Retries are off in both: the engine retries per range, with its own
    accounting. Only page operations are used: nothing that creates, resizes
    or deletes the blob.
    """

    def __init__(
        self,
        sas_url: str,
        *,
        pool_size: int = DEFAULT_CONCURRENCY,
        connection_verify: bool | str = True,
        connection_timeout: float = 20.0,
        read_timeout: float = 60.0,
        checksum: Checksum = "auto",
    ) -> None:
        self._validate = checksums.resolve(checksum)
        transport = _pooled_transport(
            pool_size=pool_size + 2,
            connection_verify=connection_verify,
            connection_timeout=connection_timeout,
            read_timeout=read_timeout,
        )
        try:
            self.client = BlobClient.from_blob_url(sas_url, transport=transport, retry_total=0)
            self._writer = _PageWriter(
                sas_url,
                api_version=self.client.api_version,
                connection_verify=connection_verify,
                connection_timeout=connection_timeout,
                read_timeout=read_timeout,
            )
        except BaseException:
            transport.close()
            raise

    @property
    def checksum_kind(self) -> checksums.Kind | None:
        return self._validate

    def properties(self) -> BlobInfo:
        props = self.client.get_blob_properties()
        created = props.creation_time.isoformat() if props.creation_time else ""
        blob_type = getattr(props.blob_type, "value", props.blob_type)
        return BlobInfo(size=int(props.size or 0), blob_type=str(blob_type), created=created)

    def page_ranges(self, start: int, end: int) -> list[Span]:
        pages = self.client.list_page_ranges(offset=start, length=end - start)
        return [(r.start or 0, (r.end or 0) + 1) for r in pages if not r.cleared]

    def put_pages(self, offset: int, data: Data, checksum: tuple[str, str] | None = None) -> None:
        if checksum is None and self._validate is not None:
            checksum = checksums.header(self._validate, data)
        self._writer.put(offset, data, checksum)

    def clear_pages(self, start: int, end: int) -> None:
        self._writer.clear(start, end)

    def read(self, start: int, end: int) -> bytes:
        return self.client.download_blob(offset=start, length=end - start).readall()

    def close(self) -> None:
        self._writer.close()
        self.client.close()


def _protect_third_party_logs() -> None:
    """urllib3 logs full request URLs (SAS signature included) at DEBUG: redact them at source."""
    for name in (
        "urllib3.connectionpool",
        "urllib3.poolmanager",
        "azure.core.pipeline.policies.http_logging_policy",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


_protect_third_party_logs()


# --------------------------------------------------------------------------- the journal


def _file_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {
        "path": str(path.resolve()),
        "size": st.st_size,
        "mtimeNs": st.st_mtime_ns,
        "inode": st.st_ino,
        "device": st.st_dev,
    }


class Journal:
    """Extents finished by earlier runs.

    One per blob (its URL without SAS and its creation time), holding the identity
    of the file being written into it: an upload of another file into the same blob
    deletes it before writing a page, and a recreated disk or a changed file starts
    afresh. It is trusted only where the blob's page ranges agree with it, and
    forgotten when a full verification finds the blob differing from the file.
    Writes that bypass it (another tool, ``--no-journal``, another machine) are not
    seen: after those, ``--verify full`` finds and forgets a stale journal.
    """

    def __init__(self, path: Path | None, identity: dict[str, Any]) -> None:
        self.path = path
        self.identity = identity
        self._done: dict[int, int] = {}
        self._dirty = False
        self._lock = threading.Lock()
        if path is not None:
            self._load(path)

    @classmethod
    def for_upload(
        cls, journal_dir: Path | None, *, image: Path, blob_url: str, blob: BlobInfo
    ) -> Journal:
        """The journal of uploading *image* into this blob (in memory only without a directory)."""
        destination = {"blob": blob_url, "blobCreated": blob.created}
        identity = {"file": _file_identity(image), **destination}
        if journal_dir is None:
            return cls(None, identity)
        # Keyed by the blob alone, so that another file's upload into it replaces this
        # file's journal: its pages are then never skipped on the older journal's word.
        key = hashlib.sha256(json.dumps(destination, sort_keys=True).encode()).hexdigest()[:32]
        path = journal_dir / f"{key}.json"
        prune_journals(journal_dir, keep=path)
        return cls(path, identity)

    def _load(self, path: Path) -> None:
        data = state.read_json(path)
        if data is None:
            return
        if data.get("version") != JOURNAL_VERSION or data.get("identity") != self.identity:
            # Another file's upload into this blob (or an old format): deleted now, before
            # this upload writes a page, so that no rerun of that file trusts it again.
            log.debug("journal %s belongs to another upload; starting afresh", path)
            self.discard()
            return
        try:
            flat = data["done"]
            self._done = {int(flat[i]): int(flat[i + 1]) for i in range(0, len(flat), 2)}
        except (KeyError, TypeError, ValueError, IndexError):
            log.warning("ignoring malformed journal %s", path)
            self._done = {}

    def __len__(self) -> int:
        return len(self._done)

    def __contains__(self, span: object) -> bool:
        if not isinstance(span, tuple):
            return False
        start, end = span
        return bool(self._done.get(start) == end)

    def record(self, span: Span) -> None:
        """*span* is written and acknowledged."""
        with self._lock:
            self._done[span[0]] = span[1]
            self._dirty = True

    def discard(self) -> None:
        """Forget every finished extent, on disk too: the blob is not what it says."""
        with self._lock:
            self._done = {}
            self._dirty = False
        if self.path is not None:
            try:
                state.remove(self.path)
            except OSError as error:
                log.warning("could not delete the upload journal %s: %s", self.path, error)

    def flush(self) -> None:
        if self.path is None:
            return
        with self._lock:
            if not self._dirty:
                return
            done = [x for start in sorted(self._done) for x in (start, self._done[start])]
            self._dirty = False
        data = {"version": JOURNAL_VERSION, "identity": self.identity, "done": done}
        try:
            state.write_json_atomic(self.path, data)
        except OSError as error:
            # The journal only saves time; losing it must not fail the upload.
            log.warning("could not write the upload journal %s: %s", self.path, error)
            with self._lock:
                self._dirty = True  # the next flush tries again


def prune_journals(
    directory: Path, *, keep: Path, max_age: float = JOURNAL_MAX_AGE, now: float | None = None
) -> int:
    """Delete the journals in *directory* (and temporary files left by killed runs)
    that nothing touched for *max_age* seconds, except *keep*; the number deleted.

    Only names this module writes are considered; failures are logged and skipped,
    since a journal only saves time.
    """
    cutoff = (time.time() if now is None else now) - max_age
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    except OSError as error:
        log.debug("cannot list the upload journals in %s: %s", directory, error)
        return 0
    removed = 0
    for entry in entries:
        if entry.name == keep.name or not _JOURNAL_FILE.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                (directory / entry.name).unlink()
                removed += 1
        except OSError as error:
            log.debug("cannot delete the old upload journal %s: %s", entry.path, error)
    if removed:
        log.debug("deleted %d upload journals untouched for %.0f days", removed, max_age / 86400)
    return removed


# --------------------------------------------------------------------------- the engine


class _Stopped(Exception):  # noqa: N818 - control flow, never shown
    """Another worker failed; this one stops quietly."""


class _Budget:
    """A counting semaphore over bytes: bounds the image data held in memory."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._used = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, amount: int, stop: threading.Event) -> Iterator[None]:
        amount = min(amount, self._limit)
        with self._cond:
            while self._used + amount > self._limit:
                if stop.is_set():
                    raise _Stopped
                self._cond.wait(0.1)
            self._used += amount
        try:
            yield
        finally:
            with self._cond:
                self._used -= amount
                self._cond.notify_all()


@dataclass
class _Counters:
    bytes_sent: int = 0
    done: int = 0
    ranges_sent: int = 0
    ranges_skipped: int = 0
    ranges_cleared: int = 0
    retried: set[Span] = field(default_factory=set)


class _Engine:
    def __init__(
        self,
        *,
        api: PageBlobApi,
        fd: int,
        sas_url: str,
        concurrency: int,
        retry: RetryPolicy,
        progress: ProgressSink,
        journal: Journal,
    ) -> None:
        self.api = api
        self.fd = fd
        self.sas_url = sas_url
        self.concurrency = concurrency
        self.retry = retry
        self.progress = progress
        self.journal = journal
        self.stop = threading.Event()
        self.budget = _Budget(max(BUFFER_BUDGET, MAX_PAGE_WRITE))
        self.buffers: list[bytearray] = []
        """Idle piece buffers of MAX_PAGE_WRITE bytes, for reuse."""
        self.in_cache_checksum: checksums.Kind | None = (
            "crc64" if api.checksum_kind == "crc64" else None
        )
        """CRC64 is taken as each piece is read. MD5 costs 5 ms per 4 MiB wherever the
        bytes are, so it is left to ``put_pages``, outside the read lock: workers then
        hash in parallel (hashlib releases the GIL)."""
        self.read_lock = threading.Lock()
        """One worker reads a piece at a time. Reading is far faster than sending, and
        readers taking turns neither fight over the GIL between the chunks of their
        pieces nor break the disk's sequential read-ahead (see bench/RESULTS.md)."""
        self.counters = _Counters()
        self.runs: list[Span] = []
        """The image's data: the non-zero runs of the pieces read so far."""
        self.lock = threading.Lock()
        self.rng = random.Random()  # noqa: S311 - jitter, not cryptography

    # -- one request, with retries

    def call(self, what: str, span: Span | None, fn: Callable[[], _T]) -> _T:
        """*fn* (one request), retried while it fails transiently; *span* names its range."""
        if span is not None:
            what = f"{what} {_span_text(span)}"
        retry = 0
        while True:
            if self.stop.is_set():
                raise _Stopped
            try:
                return fn()
            except Exception as error:  # noqa: BLE001 - classified right below
                verdict = classify(error, what=what, sas_url=self.sas_url)
            if isinstance(verdict, PublishError):
                raise verdict
            retry += 1
            if retry >= self.retry.attempts:
                raise UploadError(
                    f"{what} failed {retry} times; last: {verdict.reason}",
                    hint="Check the network and the storage endpoint, then rerun to resume",
                )
            with self.lock:
                delay = self.retry.delay(retry, verdict.retry_after, self.rng)
                if span is not None:
                    self.counters.retried.add(span)
            log.debug("%s: %s; retry %d in %.2fs", what, verdict.reason, retry, delay)
            if self.stop.wait(delay):
                raise _Stopped

    # -- the pool

    def run_pool(self, items: Iterable[_T], work: Callable[[_T], None]) -> None:
        """Run *work* over *items* with the worker pool; the first failure stops all."""
        iterator = iter(items)
        take = threading.Lock()
        failures: list[BaseException] = []

        def worker() -> None:
            while not self.stop.is_set():
                with take:
                    item = next(iterator, None)
                if item is None:
                    return
                try:
                    work(item)
                except _Stopped:
                    return
                except BaseException as error:  # noqa: BLE001 - re-raised by the caller
                    with self.lock:
                        failures.append(error)
                    self.stop.set()
                    return

        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="upload") as pool:
            futures = [pool.submit(worker) for _ in range(self.concurrency)]
            try:
                for future in futures:
                    while not future.done():
                        with contextlib.suppress(TimeoutError):
                            future.result(timeout=0.2)
            except KeyboardInterrupt:
                self.stop.set()
                raise
        if failures:
            raise failures[0]

    # -- reading the image

    def pread(self, span: Span) -> bytes:
        start, end = span
        try:
            data = os.pread(self.fd, end - start, start)
        except OSError as error:
            raise ImageError(f"cannot read the image at {_span_text(span)}: {error}") from error
        if len(data) != end - start:
            raise ImageError(
                f"the image ended early at byte {start + len(data)}: it changed during the upload",
                hint="Do not modify the image while it uploads; rerun",
            )
        return data

    # -- the work items

    def clear(self, span: Span) -> None:
        self.call("clear", span, lambda: self.api.clear_pages(*span))
        with self.lock:
            self.counters.ranges_cleared += 1

    @contextlib.contextmanager
    def piece_buffer(self, length: int) -> Iterator[bytearray]:
        """A buffer for a piece of *length* bytes, within the memory budget.

        Pieces larger than a read chunk (most are a whole Put Page) reuse
        buffers of :data:`MAX_PAGE_WRITE` bytes: a fresh one per piece would be
        zeroed and faulted in again each time. Each holds its full size of the
        budget, so at most ``BUFFER_BUDGET / MAX_PAGE_WRITE`` are ever made.
        Smaller pieces get a buffer of their own size, so many can be in flight.
        """
        if length <= piece.CHUNK:
            with self.budget.hold(length, self.stop):
                yield bytearray(length)
            return
        with self.budget.hold(MAX_PAGE_WRITE, self.stop):
            with self.lock:
                buffer = self.buffers.pop() if self.buffers else bytearray(MAX_PAGE_WRITE)
            try:
                yield buffer
            finally:
                with self.lock:
                    self.buffers.append(buffer)

    def send_piece(self, span: Span, server: list[Span]) -> None:
        """Read one piece of a data region and send its non-zero runs, except runs an
        earlier run sent and the blob still holds. Each byte of the image is read once."""
        start, end = span
        with self.piece_buffer(end - start) as buffer:
            with self.read_lock:
                runs = piece.read_piece(self.fd, buffer, start, end - start, self.in_cache_checksum)
            view = memoryview(buffer)
            for run in runs:
                lo, hi = run.start, run.end
                sent = (start + lo, start + hi)
                with self.lock:
                    self.runs.append(sent)
                if sent in self.journal and clip_spans(server, *sent) == [sent]:
                    with self.lock:
                        self.counters.ranges_skipped += 1
                    continue
                self.call(
                    "put page",
                    sent,
                    partial(self.api.put_pages, sent[0], view[lo:hi], run.checksum),
                )
                with self.lock:
                    self.counters.ranges_sent += 1
                    self.counters.bytes_sent += hi - lo
                self.journal.record(sent)
        with self.lock:
            self.counters.done += end - start
            self.progress.update(self.counters.done, self.counters.bytes_sent)

    def check_range(self, span: Span) -> None:
        with self.budget.hold(2 * (span[1] - span[0]), self.stop):
            remote = self.call("read back", span, lambda: self.api.read(*span))
            local = self.pread(span)
        if hashlib.sha256(remote).digest() != hashlib.sha256(local).digest():
            self.journal.discard()  # so that the rerun this asks for rewrites everything
            raise UploadError(
                f"verification failed: the disk differs from the image at {_span_text(span)}",
                hint="Rerun the upload; it rewrites what differs",
            )


def _pieces(path: Path, size: int) -> list[Span]:
    """The image's data regions in pieces of at most one Put Page (no reads)."""
    pieces: list[Span] = []
    for extent in vhd.data_pieces(path, max_extent=MAX_PAGE_WRITE):
        start, end = extent.offset, extent.offset + extent.length
        # The 4 MiB Put Page limit is ours to enforce, whatever the VHD module says.
        if start % PAGE or end % PAGE or start < 0 or end > size or end - start > MAX_PAGE_WRITE:
            raise ImageError(
                f"internal: data piece {_span_text((start, end))} is not a page-aligned "
                f"Put Page within the {size}-byte image"
            )
        pieces.append((start, end))
    return pieces


def _list_ranges(engine: _Engine, size: int) -> list[Span]:
    found: list[Span] = []
    for window in split_span((0, size), PAGE_RANGE_WINDOW):
        found.extend(
            engine.call("list page ranges", window, partial(engine.api.page_ranges, *window))
        )
    return merge_spans(found)


def _check_destination(engine: _Engine, size: int, sas_url: str) -> BlobInfo:
    info = engine.call("read blob properties", None, engine.api.properties)
    blob = display_url(sas_url)
    if info.blob_type.lower() != "pageblob":
        raise UploadError(
            f"{blob} is a {info.blob_type}, not a page blob; nothing was written",
            hint="Use the write SAS of a managed disk created with createOption Upload",
        )
    if info.size != size:
        raise UploadError(
            f"{blob} holds {info.size} bytes but the image file has {size}; nothing was written",
            hint="Create the upload disk with uploadSizeBytes equal to the VHD file size",
        )
    return info


def upload_vhd(
    *,
    path: Path,
    sas_url: str,
    concurrency: int = DEFAULT_CONCURRENCY,
    verify: Verify = "ranges",
    journal_dir: Path | None = None,
    use_journal: bool = True,
    progress: ProgressSink | None = None,
    connection_verify: bool | str = True,
    connection_timeout: float = 20.0,
    read_timeout: float = 60.0,
    retry: RetryPolicy | None = None,
    checksum: Checksum = "auto",
    api: PageBlobApi | None = None,
) -> UploadResult:
    """Write the fixed VHD at *path* into the existing page blob behind *sas_url*.

    *journal_dir* defaults to ``<state dir>/uploads``; ``use_journal=False``
    disables it. *api* replaces the SDK client (it must behave like one).
    Raises :class:`ImageError`, :class:`UploadError` or :class:`SasExpiredError`.
    """
    if not 1 <= concurrency <= 64:  # noqa: PLR2004
        raise UsageError(f"concurrency must be 1..64, not {concurrency}")
    began = time.monotonic()
    size = _preflight(path, sas_url)
    client = api or SdkPageBlob(
        sas_url,
        pool_size=concurrency,
        connection_verify=connection_verify,
        connection_timeout=connection_timeout,
        read_timeout=read_timeout,
        checksum=checksum,
    )
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as error:
        if api is None and isinstance(client, SdkPageBlob):
            client.close()
        raise ImageError(f"cannot open {path}: {error.strerror or error}") from None
    engine = _Engine(
        api=client,
        fd=fd,
        sas_url=sas_url,
        concurrency=concurrency,
        retry=retry or RetryPolicy(),
        progress=progress or LogProgress(),
        journal=Journal(None, {}),
    )
    try:
        info = _check_destination(engine, size, sas_url)
        server = _list_ranges(engine, size)
        directory = (journal_dir or state.default_state_dir() / "uploads") if use_journal else None
        engine.journal = Journal.for_upload(
            directory, image=path, blob_url=display_url(sas_url), blob=info
        )
        expected = _transfer(engine, path=path, size=size, server=server)
        verified = _verify(engine, verify, size, expected)
        c = engine.counters
        result = UploadResult(
            bytes_sent=c.bytes_sent,
            data_bytes=sum(e - s for s, e in expected),
            ranges_sent=c.ranges_sent,
            ranges_skipped=c.ranges_skipped,
            ranges_retried=len(c.retried),
            seconds=time.monotonic() - began,
            verified=verified,
            ranges_cleared=c.ranges_cleared,
        )
    except KeyboardInterrupt:
        raise Interrupted(
            f"upload interrupted after sending {_mib(engine.counters.bytes_sent)}",
            hint="Run the same command again; it resumes where it stopped",
        ) from None
    finally:
        engine.stop.set()
        os.close(fd)
        if api is None and isinstance(client, SdkPageBlob):
            client.close()
    log.info("upload finished: %s", json.dumps(result.to_json()))
    return result


def _preflight(path: Path, sas_url: str) -> int:
    """Check what needs no network: the image, the SAS's expiry; the image's size."""
    vhd.require_azure_ready(path)
    size = path.stat().st_size
    expiry = sas_expiry(sas_url)
    if expiry is not None and expiry <= datetime.now(UTC):
        raise SasExpiredError(
            f"the SAS for {display_url(sas_url)} expired at {expiry:%Y-%m-%d %H:%M:%S} UTC; "
            "nothing was written",
            hint=_SAS_HINT,
        )
    return size


def _transfer(engine: _Engine, *, path: Path, size: int, server: list[Span]) -> list[Span]:
    """Send the image's data, then clear stale pages; the page ranges the blob must now hold.

    The work is the data regions the filesystem reports (no reads), in pieces of
    at most 4 MiB: each worker reads its piece once and sends the non-zero runs
    in it (the VHD module's data extents), so sending starts at once and the
    image is read once. The pages the blob holds where the image has no data are
    known when every piece has been read, and are cleared then.
    """
    pieces = _pieces(path, size)
    total = sum(e - s for s, e in pieces)
    log.info(
        "uploading %s (data regions of %s in %d pieces) to %s; the blob holds %s, "
        "%d ranges journalled",
        path,
        _mib(total),
        len(pieces),
        display_url(engine.sas_url),
        _mib(sum(e - s for s, e in server)),
        len(engine.journal),
    )
    stop_flusher = threading.Event()
    flusher = _start_flusher(engine.journal, stop_flusher)
    engine.progress.start(total)
    try:
        engine.run_pool(pieces, partial(engine.send_piece, server=server))
        expected = merge_spans(engine.runs)
        stale = subtract_spans(server, expected)
        if stale:
            log.info("clearing %d stale ranges the image has no data in", len(stale))
            engine.run_pool(stale, engine.clear)
    finally:
        engine.progress.finish(engine.counters.done, engine.counters.bytes_sent)
        stop_flusher.set()
        flusher.join()
        engine.journal.flush()
    return expected


def _verify(engine: _Engine, verify: Verify, size: int, expected: list[Span]) -> bool:
    if verify == "none":
        return False
    _verify_ranges(engine, size, expected)
    if verify == "full":
        engine.run_pool(
            [part for run in expected for part in split_span(run, MAX_PAGE_WRITE)],
            engine.check_range,
        )
    return True


def _start_flusher(journal: Journal, stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.wait(JOURNAL_INTERVAL):
            journal.flush()

    thread = threading.Thread(target=loop, name="upload-journal", daemon=True)
    thread.start()
    return thread


def _verify_ranges(engine: _Engine, size: int, expected: list[Span]) -> None:
    actual = _list_ranges(engine, size)
    if actual == expected:
        return
    missing = subtract_spans(expected, actual)
    extra = subtract_spans(actual, expected)
    problems = []
    if missing:
        problems.append(f"{len(missing)} data ranges missing, first {_span_text(missing[0])}")
    if extra:
        problems.append(f"{len(extra)} unexpected ranges, first {_span_text(extra[0])}")
    raise UploadError(
        "verification failed: the disk's page ranges differ from the image's data: "
        + "; ".join(problems),
        hint="Rerun the upload; it rewrites what differs",
    )


# --------------------------------------------------------------------------- azcopy


def upload_with_azcopy(
    *,
    path: Path,
    sas_url: str,
    azcopy: str | None = None,
    extra_args: Sequence[str] = (),
    environ: dict[str, str] | None = None,
) -> UploadResult:
    """Upload with ``azcopy copy FILE SAS --blob-type PageBlob`` (the optional backend).

    azcopy does its own retries and zero skipping; it resumes only whole
    files. No verification is done here (``verified`` is false).
    """
    vhd.require_azure_ready(path)
    executable = azcopy or shutil.which("azcopy")
    if executable is None:
        raise UsageError(
            "the azcopy backend was chosen but azcopy is not on PATH",
            hint='Install azcopy, or use the native backend (upload.backend = "native")',
        )
    argv = [executable, "copy", str(path), sas_url, "--blob-type", "PageBlob", *extra_args]
    log.info("running %s", redact(" ".join([*argv[:3], display_url(sas_url), *argv[4:]])))
    began = time.monotonic()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=environ)
    except OSError as error:
        raise UploadError(f"could not run azcopy: {error}") from error
    output = redact((proc.stdout or "") + (proc.stderr or ""))
    for line in output.splitlines():
        log.debug("azcopy: %s", line)
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in output.strip().splitlines()[-3:])
        raise UploadError(
            f"azcopy failed with status {proc.returncode}: {tail or 'no output'}",
            hint="See azcopy's log, or rerun with the native backend",
        )
    size = path.stat().st_size
    data = sum(e.length for e in vhd.data_extents(path, max_extent=MAX_PAGE_WRITE))
    return UploadResult(
        bytes_sent=size,
        data_bytes=data,
        ranges_sent=0,
        ranges_skipped=0,
        ranges_retried=0,
        seconds=time.monotonic() - began,
        verified=False,
    )

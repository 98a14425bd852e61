"""The emulator's blob front: Azurite behind a proxy that checks Put Page checksums as Azure does.

Azurite runs ``--loose`` (its strict mode refuses the ``x-ms-content-crc64``
header outright) and then verifies neither ``Content-MD5`` nor
``x-ms-content-crc64``. Azure verifies both on Put Page: a body that does not
match is refused with 400 ``Md5Mismatch`` / ``Crc64Mismatch``, and a request
carrying both headers is refused with 400. The SAS URLs the emulator hands out
(disk grants, boot diagnostics) point here, so a corrupted page cannot pass in
tests. Every other request is forwarded unchanged.

Standard library only, plus awscrt's CRC-64/NVME (Azure Storage's CRC64) where it has
one (0.23 on); a plain-Python CRC64 otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import logging
import re
import threading
import urllib.error
import urllib.request
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qs, urlsplit

from nixos_azure_publish.emulator.httpbase import Handler, serve_in_background

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nixos_azure_publish.emulator.azurite import Azurite

log = logging.getLogger(__name__)

_HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}
)
MD5_HEADER: Final = "content-md5"
CRC64_HEADER: Final = "x-ms-content-crc64"


_POLY: Final = 0x9A6C9329AC4BC9B5  # CRC-64/NVME, reflected
_MASK: Final = 0xFFFFFFFFFFFFFFFF


def _table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _POLY if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE: Final = _table()


def _crc64_python(data: bytes) -> int:
    """CRC-64/NVME in plain Python: slow, for an awscrt without crc64nvme (before 0.23)."""
    crc = _MASK
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ _MASK


def _crc64_value(data: bytes) -> int:
    try:
        from awscrt import checksums  # type: ignore[import-untyped] # noqa: PLC0415

        value: int = checksums.crc64nvme(data, 0)
    except (ImportError, AttributeError):
        return _crc64_python(data)
    return value


def crc64(data: bytes) -> str:
    """Azure Storage's CRC64 header value of *data*: CRC-64/NVME, 8 bytes little-endian, base64."""
    return base64.b64encode(_crc64_value(data).to_bytes(8, "little")).decode()


def md5(data: bytes) -> str:
    """The Content-MD5 header value of *data*."""
    return base64.b64encode(hashlib.md5(data).digest()).decode()  # noqa: S324 - Azure's header


def checksum_problem(headers: dict[str, str], body: bytes) -> tuple[str, str] | None:
    """Azure's (code, message) for a Put Page whose checksum headers are wrong, if any."""
    sent_md5, sent_crc = headers.get(MD5_HEADER), headers.get(CRC64_HEADER)
    if sent_md5 is not None and sent_crc is not None:
        return (
            "InvalidHeaderValue",
            "Content-MD5 and x-ms-content-crc64 cannot both be specified.",
        )
    if sent_md5 is not None and sent_md5.strip() != md5(body):
        return (
            "Md5Mismatch",
            (
                "The MD5 value specified in the request did not match with the MD5 value "
                "calculated by the server."
            ),
        )
    if sent_crc is not None and sent_crc.strip() != crc64(body):
        return (
            "Crc64Mismatch",
            (
                "The CRC64 value specified in the request did not match with the CRC64 value "
                "calculated by the server."
            ),
        )
    return None


COPY_SOURCE: Final = "x-ms-copy-source"
SOURCE_RANGE: Final = "x-ms-source-range"
MAX_FROM_URL: Final = 4 * 1024 * 1024
_RANGE = re.compile(r"^bytes=(\d+)-(\d+)$")


def _byte_range(value: str | None) -> tuple[int, int] | None:
    match = _RANGE.match((value or "").strip())
    return (int(match[1]), int(match[2])) if match else None


Failure = tuple[int, str, str]


def page_from_url(headers: dict[str, str], body: bytes) -> tuple[Failure | None, bytes]:
    """Put Page From URL: the source's bytes to write, or Azure's (status, code, message).

    Azure reads ``x-ms-source-range`` of the blob ``x-ms-copy-source`` names (a SAS
    or public URL) and writes it at ``x-ms-range``: the request has no body, both
    ranges are whole 512-byte pages of the same length, at most 4 MiB.
    """
    target = _byte_range(headers.get("x-ms-range") or headers.get("range"))
    source = _byte_range(headers.get(SOURCE_RANGE))
    if body:
        return (400, "InvalidHeaderValue", "Put Page From URL takes no request body."), b""
    if target is None or source is None:
        missing = "x-ms-range" if target is None else SOURCE_RANGE
        message = f"An HTTP header that's mandatory for this request is not specified: {missing}"
        return (400, "MissingRequiredHeader", message), b""
    length = target[1] - target[0] + 1
    if target[0] % 512 or length % 512 or source[0] % 512 or source[1] - source[0] + 1 != length:
        message = (
            "The page range specified is invalid: the source and destination ranges must be"
            " whole pages of the same length."
        )
        return (400, "InvalidPageRange", message), b""
    if length > MAX_FROM_URL:
        return (
            400,
            "InvalidHeaderValue",
            f"The range of a Put Page From URL is at most {MAX_FROM_URL} bytes, not {length}.",
        ), b""
    request = urllib.request.Request(  # noqa: S310 - the caller's URL, as Azure reads it
        headers[COPY_SOURCE], headers={"Range": f"bytes={source[0]}-{source[1]}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            data = answer.read()
    except urllib.error.HTTPError as error:
        return (
            error.code if error.code in {403, 404} else 400,
            "CannotVerifyCopySource",
            f"The source of the copy answered {error.code} {error.reason}.",
        ), b""
    except (OSError, ValueError) as error:
        return (400, "CannotVerifyCopySource", f"The source cannot be read: {error}."), b""
    if len(data) != length:
        return (
            400,
            "InvalidSourceBlobRange",
            "The source range is not within the source blob.",
        ), b""
    return None, data


def _is_page_update(method: str, path: str, headers: dict[str, str]) -> bool:
    query = parse_qs(urlsplit(path).query)
    return (
        method == "PUT"
        and query.get("comp") == ["page"]
        and headers.get("x-ms-page-write", "").lower() == "update"
    )


class _FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.local = threading.local()


class _Handler(Handler):
    server: _FrontServer
    timeout = 120

    def _upstream(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.server.local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(*self.server.upstream, timeout=120)
            self.server.local.conn = conn
        return conn

    def answer(self, method: str) -> None:
        """Forward the request to Azurite, after the checks Azure makes and Azurite does not."""
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        if _is_page_update(method, self.path, headers) and COPY_SOURCE in headers:
            # Put Page From URL: Azurite answers 501, so the front reads the source itself
            # and writes its bytes as a plain Put Page.
            failure, body = page_from_url(headers, body)
            if failure is not None:
                self._error(*failure)
                return
            for key in (
                COPY_SOURCE,
                SOURCE_RANGE,
                "x-ms-source-content-md5",
                "x-ms-source-content-crc64",
                "x-ms-copy-source-authorization",
            ):
                headers.pop(key, None)
            headers["content-length"] = str(len(body))
        elif _is_page_update(method, self.path, headers):
            problem = checksum_problem(headers, body)
            if problem is not None:
                self._error(400, *problem)
                return
            # Checked here; Azurite (loose) would ignore it, a strict one refuse it.
            headers.pop(CRC64_HEADER, None)
        forwarded = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
        forwarded["host"] = "{}:{}".format(*self.server.upstream)
        status, reason, answer_headers, payload = self._send_upstream(method, forwarded, body)
        self.send_response(status, reason)
        for key, value in answer_headers:
            # A HEAD answer's Content-Length is the blob's size (clients read it), not 0.
            if key.lower() not in _HOP_BY_HOP and (
                key.lower() != "content-length" or method == "HEAD"
            ):
                self.send_header(key, value)
        if method != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)

    def _send_upstream(
        self, method: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        for attempt in (1, 2):
            conn = self._upstream()
            try:
                conn.request(method, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self.server.local.conn = None
                if attempt == 2:  # noqa: PLR2004
                    raise
                continue
            return response.status, response.reason, response.getheaders(), payload
        raise AssertionError  # pragma: no cover - the loop returns or raises

    def _error(self, status: int, code: str, message: str) -> None:
        payload = (
            '<?xml version="1.0" encoding="utf-8"?>'
            f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
        ).encode()
        self.send_response(status)
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def run_blob_front(azurite: Azurite) -> Iterator[str]:
    """Serve the front of *azurite* until the block exits; yields its blob endpoint."""
    server = _FrontServer((azurite.host, azurite.port))
    thread = serve_in_background(server, "azure-emulator-blobs")
    port = int(server.server_address[1])
    try:
        yield f"http://127.0.0.1:{port}/{azurite.blob_endpoint.rsplit('/', 1)[-1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

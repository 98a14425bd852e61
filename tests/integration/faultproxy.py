"""A fault-injecting HTTP proxy for the upload tests (loopback only).

It sits between a client and Azurite, parses each HTTP/1.1 request, and
either forwards it (over its own keep-alive connection upstream) or injects
a fault chosen by a seeded random generator: a connection reset before or
after forwarding, an injected 500 or 503, a 429 with ``Retry-After``, a
stall longer than the client's timeout, or a corrupted body. Like Azure (and
unlike Azurite) it checks a page write's ``Content-MD5`` or
``x-ms-content-crc64`` (with the Azure SDK's own CRC64, not the one the
uploader uses) and answers a mismatch with 400 ``Md5Mismatch`` /
``Crc64Mismatch``, and both headers at once with 400. ``hold_after`` lets a number of page
writes through and then holds every later request until released, which
freezes an upload mid-way so that a test can kill it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import random
import socket
import socketserver
import struct
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from azure.storage.extensions import checksums as azure_checksums

if TYPE_CHECKING:
    from collections.abc import Iterator


azure_crc64 = azure_checksums.crc64

_Request = tuple[str, str, list[tuple[str, str]], bytes]
"""method, target, headers, body"""


@dataclass
class Faults:
    """Per-request fault probabilities (applied to page writes unless ``all_requests``)."""

    seed: int = 0
    reset_before: float = 0.0
    reset_after: float = 0.0
    error_500: float = 0.0
    error_503: float = 0.0
    throttle_429: float = 0.0
    retry_after: int = 1
    stall: float = 0.0
    corrupt: float = 0.0
    """Flip a byte of a page write's body, as a faulty network would."""
    truncate: float = 0.0
    """Cut a body short and drop the connection: half of a request's body reaches the
    server (which must discard it), or half of a response's body reaches the client."""
    stall_seconds: float = 3.0
    delay_seconds: float = 0.0
    """Every forwarded request waits this long first (slows an upload down)."""
    all_requests: bool = False
    hold_after: int | None = None
    """Forward this many page writes, then hold every request until :meth:`FaultProxy.release`."""
    idle_timeout: float | None = None
    """Close a client connection that sends no request for this long, as servers close
    idle keep-alive connections (without telling the client first)."""


@dataclass
class Stats:
    injected: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    page_writes: int = 0
    """Page writes forwarded and acknowledged by the server."""
    page_bytes: int = 0
    max_page_write: int = 0
    admitted: int = 0
    held: int = 0
    checked: Counter[str] = field(default_factory=Counter)
    """Page writes whose checksum was checked, by kind (``md5``, ``crc64``)."""
    mismatches: int = 0
    connections: int = 0
    proxied: int = 0
    """Requests that named a whole URL, as clients do through a forward proxy."""
    tunnels: int = 0
    """CONNECT tunnels relayed (HTTPS through a forward proxy)."""
    not_http: int = 0
    """Connections that began with something other than an HTTP request line."""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: FaultProxy


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=60)
        proxy.track(self.connection)
        try:
            while not proxy.stopping.is_set():
                self.connection.settimeout(proxy.faults.idle_timeout)
                try:
                    line = self.rfile.readline(65537)
                except TimeoutError:
                    return
                self.connection.settimeout(None)
                request = self._read_request(line)
                if request is None:
                    return
                if request[0] == "CONNECT":
                    self._tunnel(request[1])
                    return
                if not proxy.serve(self, upstream, request):
                    return
        except OSError:
            return
        finally:
            upstream.close()
            proxy.untrack(self.connection)

    def _read_request(self, line: bytes) -> _Request | None:
        if not line:
            return None
        parts = line.decode("latin-1").split(" ", 2)
        if len(parts) != 3:  # method, target, version
            # Not HTTP: TLS sent to a forward proxy without CONNECT first, for one.
            with self.server.proxy.lock:
                self.server.proxy.stats.not_http += 1
            return None
        method, target, _ = parts
        if target.startswith("http://"):  # absolute form: we are the client's forward proxy
            with self.server.proxy.lock:
                self.server.proxy.stats.proxied += 1
            target = urlunsplit(urlsplit(target)._replace(scheme="", netloc=""))
        headers: list[tuple[str, str]] = []
        length = 0
        while True:
            raw = self.rfile.readline(65537).decode("latin-1")
            if raw in {"\r\n", "\n", ""}:
                break
            name, _, value = raw.partition(":")
            headers.append((name.strip(), value.strip()))
            if name.strip().lower() == "content-length":
                length = int(value)
        body = self.rfile.read(length) if length else b""
        return method, target, headers, body

    def _tunnel(self, authority: str) -> None:
        """Answer CONNECT as a forward proxy does for HTTPS: relay bytes both ways."""
        host, _, port = authority.rpartition(":")
        with self.server.proxy.lock:
            self.server.proxy.stats.tunnels += 1
        upstream = socket.create_connection((host, int(port)), timeout=60)
        self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self.wfile.flush()
        # A tunnel the client leaves idle is closed too (idle_timeout), as proxies do.
        self.connection.settimeout(self.server.proxy.faults.idle_timeout)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            with contextlib.suppress(OSError):
                while data := source.recv(65536):
                    sink.sendall(data)
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        back = threading.Thread(target=pump, args=(upstream, self.connection), daemon=True)
        back.start()
        pump(self.connection, upstream)
        back.join(timeout=60)
        upstream.close()

    def reset(self) -> None:
        """Abort the connection with a TCP RST, as a dying load balancer would."""
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.close()

    def reply(self, status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> None:
        head = [f"HTTP/1.1 {status} {reason}"]
        head += [f"{name}: {value}" for name, value in headers]
        self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        self.wfile.flush()


_ERRORS = {
    "error_500": (500, "Internal Server Error", "InternalError"),
    "error_503": (503, "Service Unavailable", "ServerBusy"),
    "throttle_429": (429, "Too Many Requests", "TooManyRequests"),
    "md5": (400, "Bad Request", "Md5Mismatch"),
    "crc64": (400, "Bad Request", "Crc64Mismatch"),
    "both": (400, "Bad Request", "InvalidHeaderValue"),
}


def _error_body(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code>'
        f"<Message>{message}</Message></Error>"
    ).encode()


class FaultProxy:
    """The proxy; use :func:`run_fault_proxy` to run one."""

    def __init__(self, upstream_host: str, upstream_port: int, faults: Faults) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.faults = faults
        self.stats = Stats()
        self.stopping = threading.Event()
        self.released = threading.Event()
        self._rng = random.Random(faults.seed)  # noqa: S311 - test faults, not cryptography
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, upstream_url: str) -> str:
        """*upstream_url* (e.g. a SAS URL into Azurite) rewritten to go through the proxy."""
        parts = urlsplit(upstream_url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.port}"))

    def release(self) -> None:
        """Let held requests continue and stop holding."""
        self.faults.hold_after = None
        self.released.set()

    @property
    def lock(self) -> threading.Lock:
        return self._lock

    def track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)
            self.stats.connections += 1

    def untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _choose(self, *, is_page_write: bool) -> str | None:
        f = self.faults
        if not (is_page_write or f.all_requests):
            return None
        with self._lock:
            roll = self._rng.random()
        for name, chance in (
            ("reset_before", f.reset_before),
            ("reset_after", f.reset_after),
            ("error_500", f.error_500),
            ("error_503", f.error_503),
            ("throttle_429", f.throttle_429),
            ("stall", f.stall),
            ("corrupt", f.corrupt),
            ("truncate", f.truncate),
        ):
            if roll < chance:
                return name
            roll -= chance
        return None

    def _hold(self, *, is_page_write: bool) -> None:
        limit = self.faults.hold_after
        if limit is None:
            return
        with self._lock:
            if self.stats.admitted < limit:
                if is_page_write:
                    self.stats.admitted += 1
                return
            self.stats.held += 1
        while not (self.released.is_set() or self.stopping.is_set()):
            self.released.wait(0.05)

    def serve(
        self, handler: _Handler, upstream: http.client.HTTPConnection, request: _Request
    ) -> bool:
        """Handle one request; False when the client connection is gone."""
        method, target, headers, body = request
        is_page_write = method == "PUT" and "comp=page" in target
        with self._lock:
            self.stats.requests += 1
        self._hold(is_page_write=is_page_write)
        if self.stopping.is_set():
            handler.reset()
            return False
        fault = self._choose(is_page_write=is_page_write)
        if fault is not None:
            with self._lock:
                self.stats.injected[fault] += 1
        if fault in {"reset_before", "stall"}:
            # A stall outlasts the client's timeout; then the connection dies.
            self.stopping.wait(self.faults.stall_seconds if fault == "stall" else 0)
            handler.reset()
            return False
        if fault in _ERRORS:
            self._reply_error(handler, fault, head_only=method == "HEAD")
            return True
        if fault == "corrupt" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        if fault == "truncate" and body:
            self._send_truncated(upstream, method, target, headers, body)
            handler.reset()
            return False
        refusal = self._check_checksum(headers, body) if is_page_write else None
        if refusal is not None:
            self._reply_error(handler, refusal, head_only=False)
            return True
        if self.faults.delay_seconds:
            self.stopping.wait(self.faults.delay_seconds)
        status, reason, reply_headers, payload = self._forward(
            upstream, method, target, headers, body
        )
        if is_page_write and 200 <= status < 300:
            with self._lock:
                self.stats.page_writes += 1
                self.stats.page_bytes += len(body)
                self.stats.max_page_write = max(self.stats.max_page_write, len(body))
        return self._answer(handler, fault, (status, reason, reply_headers, payload))

    @staticmethod
    def _answer(
        handler: _Handler,
        fault: str | None,
        answer: tuple[int, str, list[tuple[str, str]], bytes],
    ) -> bool:
        """Pass the server's answer on, or the fault in it; False when the connection dies."""
        status, reason, reply_headers, payload = answer
        if fault == "reset_after":
            handler.reset()
            return False
        if fault == "truncate" and len(payload) > 1:
            # The client is promised the whole body and gets half of it.
            handler.reply(status, reason, reply_headers, payload[: len(payload) // 2])
            handler.reset()
            return False
        handler.reply(status, reason, reply_headers, payload)
        return True

    @staticmethod
    def _send_truncated(
        upstream: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        """Half of the request reaches the server, then the connection is gone."""
        with contextlib.suppress(OSError):
            upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in headers:
                upstream.putheader(name, value)
            upstream.endheaders()
            upstream.send(body[: len(body) // 2])
        upstream.close()

    def _reply_error(self, handler: _Handler, kind: str, *, head_only: bool) -> None:
        status, reason, code = _ERRORS[kind]
        payload = _error_body(code, "injected by the test proxy")
        headers = [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(payload))),
            ("x-ms-error-code", code),
        ]
        if kind == "throttle_429":
            headers.append(("Retry-After", str(self.faults.retry_after)))
        # A response to HEAD has headers only, or the next response on the connection breaks.
        handler.reply(status, reason, headers, b"" if head_only else payload)

    def _check_checksum(self, headers: list[tuple[str, str]], body: bytes) -> str | None:
        """The error to answer when the body does not match its checksum header, else None."""
        sent = {k.lower(): v for k, v in headers}
        md5, crc64 = sent.get("content-md5"), sent.get("x-ms-content-crc64")
        if md5 is not None and crc64 is not None:
            return "both"
        if md5 is not None:
            kind, match = "md5", base64.b64encode(hashlib.md5(body).digest()).decode() == md5  # noqa: S324
        elif crc64 is not None:
            value = azure_crc64.compute(body, 0).to_bytes(8, "little")
            kind, match = "crc64", base64.b64encode(value).decode() == crc64
        else:
            return None
        with self._lock:
            self.stats.checked[kind] += 1
            self.stats.mismatches += not match
        return None if match else kind

    def _forward(
        self,
        upstream: http.client.HTTPConnection,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes,
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        upstream.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
        for name, value in headers:
            upstream.putheader(name, value)
        upstream.endheaders(body or None)
        response = upstream.getresponse()
        payload = response.read()
        reply_headers = [
            (name, value)
            for name, value in response.getheaders()
            if name.lower()
            not in {"transfer-encoding", "connection", "content-length", "keep-alive"}
        ]
        if method == "HEAD":
            length = response.getheader("Content-Length")
            if length is not None:
                reply_headers.append(("Content-Length", length))
        else:
            reply_headers.append(("Content-Length", str(len(payload))))
        return response.status, response.reason, reply_headers, payload

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.released.set()
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            live = list(self._connections)
        for conn in live:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=5)


@contextlib.contextmanager
def run_fault_proxy(upstream_host: str, upstream_port: int, faults: Faults) -> Iterator[FaultProxy]:
    """Run a :class:`FaultProxy` on a free loopback port until the block exits."""
    proxy = FaultProxy(upstream_host, upstream_port, faults)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()

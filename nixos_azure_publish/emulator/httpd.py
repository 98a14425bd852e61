"""The HTTPS layer: parse a request, authenticate, inject faults, route, answer, log.

Standard library only (``ThreadingHTTPServer`` + ``ssl``). Handlers run under
the store's lock, one at a time, which keeps the state consistent without
making handlers thread-aware. TLS handshakes happen in the connection's own
thread, so one slow client cannot stall the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
import uuid
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from nixos_azure_publish.emulator.armerror import ArmError
from nixos_azure_publish.emulator.context import Request, Response
from nixos_azure_publish.emulator.httpbase import Handler
from nixos_azure_publish.emulator.redact import redact
from nixos_azure_publish.emulator.requestlog import RequestRecord
from nixos_azure_publish.emulator.router import check_api_version, resource_type_of

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.core import ArmApp

log = logging.getLogger(__name__)

MAX_BODY = 4 * 1024 * 1024


class ArmHttpServer(ThreadingHTTPServer):
    """A threading HTTPS server bound to one :class:`ArmApp`."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], app: ArmApp, *, cert: Path, key: Path) -> None:
        super().__init__(address, _Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(
            self.socket, server_side=True, do_handshake_on_connect=False
        )
        self.app = app
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def track(self, sock: socket.socket, *, add: bool) -> None:
        with self._open_lock:
            if add:
                self._open.add(sock)
            else:
                self._open.discard(sock)

    def close_connections(self) -> None:
        """Cut every open keep-alive connection (at shutdown, or by the kill switch)."""
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(Handler):
    server: ArmHttpServer
    timeout = 30

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError, ssl.SSLError):
            super().finish()

    def handle(self) -> None:
        with contextlib.suppress(OSError, ssl.SSLError):
            super().handle()

    def do_PATCH(self) -> None:  # noqa: N802 - http.server dispatches PATCH here
        self.answer("PATCH")

    def answer(self, method: str) -> None:
        app = self.server.app
        started = time.time()
        url = urlsplit(self.path)
        query = {
            k.lower() if k.lower() == "api-version" else k: v
            for k, v in parse_qsl(url.query, keep_blank_values=True)
        }
        api_version = query.get("api-version")
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            # The rest of the body is never read, so the connection cannot be reused.
            self.close_connection = True
            payload, headers = self._encode(
                Response(
                    413, ArmError(413, "RequestEntityTooLarge", "The request is too large.").body()
                )
            )
            self._write(413, {**headers, "Connection": "close"}, payload)
            return
        raw = self.rfile.read(length) if length else b""
        action: str | None = None
        fault: str | None = None
        if app.faults.drop_connections:
            self._drop(method, url.path, api_version, started)
            return
        try:
            match = app.router.resolve(method, url.path)
            action = match.route.action
            self._authenticate()
            decision = app.faults.decide(action)
            if decision == "drop":
                self._drop(method, url.path, api_version, started)
                return
            if app.faults.delay:
                time.sleep(app.faults.delay)
            fault = decision
            _inject(decision, app)
            check_api_version(match.route, api_version, resource_type_of(action))
            body = _parse_body(raw)
            app.schemas.check_request(method, match.route.operation_id, body)
            app.store.tick()
            request = Request(
                method=method,
                path=url.path,
                raw=self.path,
                query=query,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
                params=match.params,
                api_version=api_version or "",
                action=action,
                app=app,
            )
            with app.store.lock:
                response = match.route.handler(request)
            if method != "GET":
                app.store.save()
        except ArmError as error:
            response = Response(error.status, error.body(), dict(error.headers))
        except Exception:
            log.exception("emulator handler failed for %s %s", method, redact(url.path))
            response = Response(
                500,
                {"error": {"code": "InternalServerError", "message": "The emulator failed."}},
            )
        payload, headers = self._encode(response)
        # Log before answering: a client's retry must not be logged before this answer.
        error_code = None
        if isinstance(response.body, dict) and isinstance(response.body.get("error"), dict):
            error_code = response.body["error"].get("code")
        app.requests.record(
            RequestRecord(
                method=method,
                path=self.path,
                api_version=api_version,
                status=response.status,
                action=action,
                time=started,
                error_code=error_code,
                fault=fault,
            )
        )
        if app.traffic is not None:
            app.traffic.record(
                method=method,
                url=app.base_url + self.path,
                request_headers=dict(self.headers.items()),
                request_body=raw,
                status=response.status,
                response_headers=headers,
                response_body=response.body if payload else None,
            )
        self._write(response.status, headers, payload if method != "HEAD" else b"")

    def _authenticate(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ArmError(
                401,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing."
                if not header
                else "Authentication failed. The 'Authorization' header is not a bearer token.",
                headers={
                    "WWW-Authenticate": 'Bearer authorization_uri="https://login.microsoftonline.com/'
                    f'{self.server.app.settings.tenant_id}", error="invalid_token", '
                    'error_description="The authentication failed because of missing '
                    "'Authorization' header.\""
                },
            )

    def _drop(self, method: str, path: str, api_version: str | None, started: float) -> None:
        # Log first: the client may look at the log as soon as it sees the connection go.
        self.server.app.requests.record(
            RequestRecord(
                method=method,
                path=path,
                api_version=api_version,
                status=0,
                action=None,
                time=started,
                fault="drop",
            )
        )
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _encode(self, response: Response) -> tuple[bytes, dict[str, str]]:
        payload = b""
        if response.body is not None and response.status != 204:  # noqa: PLR2004
            payload = json.dumps(response.body).encode("utf-8")
        request_id = str(uuid.uuid4())
        headers = {
            "x-ms-request-id": request_id,
            "x-ms-correlation-request-id": self.headers.get("x-ms-client-request-id", request_id),
            "x-ms-ratelimit-remaining-subscription-reads": "11999",
            "Cache-Control": "no-cache",
            **response.headers,
        }
        if payload:
            headers["Content-Type"] = "application/json; charset=utf-8"
        headers["Content-Length"] = str(len(payload))
        return payload, headers

    def _write(self, status: int, headers: dict[str, str], payload: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if payload:
            self.wfile.write(payload)


def _parse_body(raw: bytes) -> Any:  # noqa: ANN401 - JSON
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as error:
        raise ArmError(
            400,
            "InvalidRequestContent",
            f"The request content was invalid and could not be deserialized: {error}.",
        ) from None


def _inject(decision: str | None, app: ArmApp) -> None:
    if decision == "throttle":
        raise _throttled(app.faults.retry_after)
    if decision == "error":
        raise _server_error(app.faults.error_status, app.faults.retry_after)


def _seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _throttled(retry_after: float) -> ArmError:
    return ArmError(
        429,
        "TooManyRequests",
        "The request is being throttled as the limit has been reached for operation type - "
        "Read_30Min. Retry after the interval in the Retry-After header.",
        headers={"Retry-After": _seconds(retry_after)},
    )


def _server_error(status: int, retry_after: float) -> ArmError:
    if status == 503:  # noqa: PLR2004
        return ArmError(
            503,
            "ServerBusy",
            "The server is currently unable to receive requests. Please retry your request.",
            headers={"Retry-After": _seconds(retry_after)},
        )
    return ArmError(
        status,
        "InternalServerError",
        "The server encountered an internal error. Please retry the request.",
    )

"""What the emulator's two HTTP servers (Resource Manager, blob front) have in common.

One entry point for every method a handler answers, request logs at debug
level with secrets redacted, and a daemon thread that serves until shut down.
Standard library only.
"""

from __future__ import annotations

import logging
import threading
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator.redact import redact

if TYPE_CHECKING:
    import socketserver

log = logging.getLogger(__name__)


class Handler(BaseHTTPRequestHandler):
    """Sends GET, HEAD, PUT, POST and DELETE to :meth:`answer`; HTTP/1.1 keep-alive."""

    protocol_version = "HTTP/1.1"
    # Headers and body are separate writes: without this, Nagle + delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def answer(self, method: str) -> None:
        raise NotImplementedError

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002, ANN401 - stdlib signature
        log.debug("%s", redact(format % args))

    def do_GET(self) -> None:
        self.answer("GET")

    def do_HEAD(self) -> None:
        self.answer("HEAD")

    def do_PUT(self) -> None:
        self.answer("PUT")

    def do_POST(self) -> None:
        self.answer("POST")

    def do_DELETE(self) -> None:
        self.answer("DELETE")


def serve_in_background(server: socketserver.BaseServer, name: str) -> threading.Thread:
    """Serve *server* in a daemon thread (stop it with ``server.shutdown()``); the thread."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name=name, daemon=True
    )
    thread.start()
    return thread

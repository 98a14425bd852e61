"""Record SDK <-> Resource Manager traffic in the format of Azure's spec validator (oav).

Two recorders: :class:`ServerTraffic` is kept by the emulator itself
(``app.record_traffic()``) and sees every client, the tool's own commands
included; :class:`TrafficRecorder` sits in one SDK client's pipeline.

:class:`TrafficRecorder` is an azure-core pipeline policy: add it to a client
(``per_retry_policies=[recorder]``) and every HTTP exchange is kept as
``{"liveRequest": {url, method, headers, body}, "liveResponse": {statusCode,
headers, body}}`` with secrets redacted (bearer tokens, SAS signatures).
:meth:`TrafficRecorder.write` saves one JSON file per exchange for
``oav validate-traffic``.
"""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

from azure.core.pipeline.policies import SansIOHTTPPolicy

from nixos_azure_publish.emulator.redact import REDACTED, redact

if TYPE_CHECKING:
    from pathlib import Path

    from azure.core.pipeline import PipelineRequest, PipelineResponse

_SECRET_HEADERS = frozenset({"authorization", "x-ms-encryption-key"})


def _headers(raw: Any) -> dict[str, str]:  # noqa: ANN401 - azure-core's header mappings
    out: dict[str, str] = {}
    for key, value in raw.items():
        out[key] = REDACTED if key.lower() in _SECRET_HEADERS else redact(str(value))
    return out


def _json(content: bytes | str | None) -> Any:  # noqa: ANN401 - JSON
    if not content:
        return None
    try:
        text = content.decode("utf-8") if isinstance(content, bytes) else content
        return json.loads(redact(text))
    except (UnicodeDecodeError, ValueError):
        return None


def write_exchanges(exchanges: list[dict[str, Any]], folder: Path) -> list[Path]:
    """One ``NNNN.json`` file per exchange in *folder*; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, exchange in enumerate(exchanges):
        path = folder / f"{index:04d}.json"
        path.write_text(json.dumps(exchange, indent=1), encoding="utf-8")
        paths.append(path)
    return paths


class ServerTraffic:
    """The emulator's own record of every exchange, whoever the client was."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def record(
        self,
        *,
        method: str,
        url: str,
        request_headers: dict[str, str],
        request_body: bytes,
        status: int,
        response_headers: dict[str, str],
        response_body: Any,  # noqa: ANN401 - JSON
    ) -> None:
        exchange = {
            "liveRequest": {
                "url": redact(url),
                "method": method,
                "headers": _headers(request_headers),
                "body": _json(request_body),
            },
            "liveResponse": {
                "statusCode": str(status),
                "headers": _headers(response_headers),
                "body": _json(json.dumps(response_body)) if response_body is not None else None,
            },
        }
        with self._lock:
            self.exchanges.append(exchange)


class TrafficRecorder(SansIOHTTPPolicy[Any, Any]):
    """Keeps every request/response pair that passes through a client's pipeline."""

    def __init__(self) -> None:
        self.exchanges: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def on_response(
        self, request: PipelineRequest[Any], response: PipelineResponse[Any, Any]
    ) -> None:
        http_request = request.http_request
        http_response = response.http_response
        try:
            body = http_response.body()
        except Exception:  # noqa: BLE001 - a streamed body is not recorded
            body = None
        exchange = {
            "liveRequest": {
                "url": redact(http_request.url),
                "method": http_request.method,
                "headers": _headers(http_request.headers),
                "body": _json(http_request.body if hasattr(http_request, "body") else None),
            },
            "liveResponse": {
                "statusCode": str(http_response.status_code),
                "headers": _headers(http_response.headers),
                "body": _json(body),
            },
        }
        with self._lock:
            self.exchanges.append(exchange)

    def write(self, folder: Path) -> list[Path]:
        """One ``NNNN.json`` file per exchange in *folder*; their paths."""
        with self._lock:
            return write_exchanges(list(self.exchanges), folder)

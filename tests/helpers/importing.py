"""Importing from tests: a maintainers' release to import from, the user's own target,
and a file served over HTTPS as a web server or a blob serves it."""

from __future__ import annotations

import contextlib
import http.server
import json
import shutil
import ssl
import threading
from typing import TYPE_CHECKING, Any

from tests.helpers.publishing import publish_seed
from tests.helpers.targets import COMMUNITY, GALLERY

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    import pytest

    from nixos_azure_publish.emulator.server import Emulator

MINE = "my-images"
MY_GALLERY = "my_gallery"
MY_DEFINITION = "nixos"


def release(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seed: int,
    **version: Any,
) -> dict[str, Any]:
    """The maintainers publish a version into their community gallery; its report.

    The image is *tmp_path*/p<seed>/img/disk.vhd."""
    _, report = publish_seed(
        emulator,
        tmp_path,
        monkeypatch,
        capsys,
        seed,
        version=version,
        gallery={"name": GALLERY, "community": COMMUNITY},
    )
    return report


def my_target(tmp_path: Path, **overrides: Any) -> Path:
    """The user's target: their own group, gallery and definition; no image."""
    data: dict[str, Any] = {
        "name": "imported",
        "resourceGroup": MINE,
        "location": "northeurope",
        "hyperVGeneration": "V2",
        "gallery": {"name": MY_GALLERY},
        "imageDefinition": {
            "name": MY_DEFINITION,
            "publisher": "me",
            "offer": "NixOS",
            "sku": "25.05",
        },
        "version": {"targetRegions": ["northeurope"]},
    }
    data.update(overrides)
    path = tmp_path / "mine" / "target.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def community_image(report: dict[str, Any]) -> str:
    """The community image of a release, without its version."""
    return str(report["communityImageId"]).rsplit("/Versions/", 1)[0]


class VhdHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with HEAD, GET and single byte ranges, as a web server or blob does."""

    path_served: Path
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        del format, args

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"v1"')
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self) -> None:
        self.requests.append(f"HEAD {self.path}")
        self._headers(200, self.path_served.stat().st_size, {})

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path} {self.headers.get('Range', '')}")
        size = self.path_served.stat().st_size
        wanted = self.headers.get("Range")
        with self.path_served.open("rb") as handle:
            if wanted:
                lo, hi = (int(x) for x in wanted.removeprefix("bytes=").split("-"))
                handle.seek(lo)
                self._headers(206, hi - lo + 1, {"Content-Range": f"bytes {lo}-{hi}/{size}"})
                self.wfile.write(handle.read(hi - lo + 1))
                return
            self._headers(200, size, {})
            shutil.copyfileobj(handle, self.wfile)


@contextlib.contextmanager
def https_file(
    emulator: Emulator, path: Path, handler: type[VhdHandler] = VhdHandler
) -> Iterator[tuple[str, list[str]]]:
    """*path* served over HTTPS with the emulator's certificate (which the tool trusts),
    by *handler*; the requests it saw are listed as they come."""
    seen: list[str] = []
    serving = type("Handler", (handler,), {"path_served": path, "requests": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), serving)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(emulator.ca_cert, emulator.ca_cert.parent / "emulator-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/nixos.vhd?token=SECRET", seen
    finally:
        server.shutdown()
        server.server_close()

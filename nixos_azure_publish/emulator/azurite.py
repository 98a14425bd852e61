"""Starts and stops Azurite's blob service (the npm package ``azurite``).

Used by the emulator (disk uploads land in a real page blob) and by tests of
the upload engine. Azurite is found on PATH or in a ``node_modules/.bin``
of the current directory or any parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from nixos_azure_publish.emulator.errors import EmulatorError

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

ACCOUNT: Final = "devstoreaccount1"
# Azurite's well-known development key, public in Azurite's own documentation.
ACCOUNT_KEY: Final = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def find_azurite_blob(start: Path | None = None) -> str:
    """The ``azurite-blob`` executable, or a :class:`EmulatorError` saying how to install it."""
    found = shutil.which("azurite-blob")
    if found:
        return found
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "node_modules" / ".bin" / "azurite-blob"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    package_root = Path(__file__).resolve().parents[2]
    candidate = package_root / "node_modules" / ".bin" / "azurite-blob"
    if candidate.is_file():
        return str(candidate)
    raise EmulatorError(
        "Azurite (the Azure Storage emulator) is not installed",
        hint=(
            "Put nixpkgs' azurite on PATH (the Nix package of this tool brings it),"
            " or install it with `npm install azurite@3` (or `npm ci` in this repository)"
        ),
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on *host* that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class Azurite:
    """A running Azurite blob service."""

    host: str
    port: int
    location: Path
    scheme: str = "http"

    @property
    def blob_endpoint(self) -> str:
        """``http://127.0.0.1:PORT/devstoreaccount1``."""
        return f"{self.scheme}://{self.host}:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """A connection string for the well-known development account."""
        return (
            f"DefaultEndpointsProtocol={self.scheme};AccountName={ACCOUNT};"
            f"AccountKey={ACCOUNT_KEY};BlobEndpoint={self.blob_endpoint};"
        )


def _wait_listening(host: str, port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorError(f"Azurite exited with status {proc.returncode} while starting")
        with contextlib.suppress(OSError), socket.create_connection((host, port), 0.2):
            return
        time.sleep(0.05)
    raise EmulatorError(f"Azurite did not listen on {host}:{port} within {timeout:.0f}s")


@contextlib.contextmanager
def run_azurite(
    *,
    location: Path | None = None,
    port: int | None = None,
    host: str = "127.0.0.1",
    cert: Path | None = None,
    key: Path | None = None,
    log_file: Path | None = None,
    timeout: float = 15.0,
    loose: bool = True,
) -> Iterator[Azurite]:
    """Run Azurite's blob service until the block exits; always stop it.

    *loose* (Azurite's ``--loose``) ignores headers Azurite does not implement, such as
    ``x-ms-content-crc64``; without it, Azurite answers them 500 ``FeatureNotSupported``.

    Without *location* a fresh temporary directory is used and deleted after
    (Azurite never reclaims deleted extents, so sharing one grows forever).
    """
    executable = find_azurite_blob()
    port = port or free_port(host)
    with contextlib.ExitStack() as stack:
        if location is None:
            location = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="azurite-")))
        argv = [
            executable,
            "--blobHost",
            host,
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]
        if loose:
            argv.append("--loose")
        if cert is not None and key is not None:
            argv += ["--cert", str(cert), "--key", str(key)]
        out = stack.enter_context(log_file.open("ab")) if log_file else subprocess.DEVNULL
        log.debug("starting Azurite: %s", " ".join(argv))
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_listening(host, port, proc, timeout)
            yield Azurite(
                host=host,
                port=port,
                location=location,
                scheme="https" if cert is not None else "http",
            )
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

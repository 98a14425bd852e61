"""Run the emulator as a service: in the foreground until a signal, or detached.

``serve`` blocks until SIGINT/SIGTERM and stops Azurite on the way out.
``start_detached`` starts ``serve`` in its own session and returns once it is
ready, with its environment (plus ``NIXOS_AZURE_PUBLISH_EMULATOR_PID``), so that
``eval "$(nixos-azure-publish emulator serve --detach)"`` works in a CI shell.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from nixos_azure_publish.emulator.errors import EmulatorError
from nixos_azure_publish.emulator.server import run_emulator

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.emulator.server import Emulator
    from nixos_azure_publish.emulator.settings import EmulatorSettings

log = logging.getLogger(__name__)

ENV_PID: Final = "NIXOS_AZURE_PUBLISH_EMULATOR_PID"


def serve(
    *,
    state_dir: Path | None,
    port: int | None,
    settings: EmulatorSettings | None,
    on_ready: Callable[[Emulator], None],
    remove_state_dir: bool = False,
) -> None:
    """Run until SIGINT or SIGTERM; *on_ready* gets the running emulator first.

    *remove_state_dir*: the state directory is a throwaway made for this run (a detached
    emulator without ``--state-dir``): delete it once the emulator has stopped.
    """
    stop = threading.Event()
    handlers = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with run_emulator(state_dir=state_dir, port=port, settings=settings) as emulator:
            on_ready(emulator)
            while not stop.wait(0.5):
                pass
            log.info("emulator stopping")
    finally:
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
        if remove_state_dir and state_dir is not None:
            shutil.rmtree(state_dir, ignore_errors=True)


def write_ready_file(path: Path, environ: dict[str, str]) -> None:
    """Write the environment atomically, so a waiting parent never reads half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({**environ, ENV_PID: str(os.getpid())}), encoding="utf-8")
    tmp.replace(path)


def start_detached(
    *,
    state_dir: Path | None,
    port: int | None,
    replication_seconds: float | None,
    timeout: float = 30.0,
) -> dict[str, str]:
    """Start ``emulator serve`` in the background; its environment once it is ready.

    Without *state_dir* the state lives in a temporary directory that the emulator
    deletes when it stops (SIGTERM, SIGINT), so a CI job's `kill` leaves nothing behind.
    """
    throwaway = state_dir is None
    work = state_dir or Path(tempfile.mkdtemp(prefix="azure-emulator-"))
    work.mkdir(parents=True, exist_ok=True)
    ready = work / "ready.json"
    ready.unlink(missing_ok=True)
    argv = [
        sys.executable,
        "-m",
        "nixos_azure_publish",
        "emulator",
        "serve",
        "--ready-file",
        str(ready),
    ]
    argv += ["--state-dir", str(work)]
    if throwaway:
        argv.append("--remove-state-dir")
    if port:
        argv += ["--port", str(port)]
    if replication_seconds is not None:
        argv += ["--replication-seconds", str(replication_seconds)]
    with (work / "emulator.log").open("ab") as log_file:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready.exists():
            environ: dict[str, str] = json.loads(ready.read_text(encoding="utf-8"))
            return environ
        if proc.poll() is not None:
            raise EmulatorError(
                f"the emulator exited with status {proc.returncode} while starting",
                hint=f"See {work / 'emulator.log'}",
            )
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    raise EmulatorError(
        f"the emulator did not become ready within {timeout:.0f}s",
        hint=f"See {work / 'emulator.log'}",
    )

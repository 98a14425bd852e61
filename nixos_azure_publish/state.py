"""Local state: atomic JSON journals under one state directory.

A journal is only a cache that saves time on a rerun; the cloud is the
truth. So a journal that is missing, truncated or not JSON reads as "no
journal" (with a warning), never as an error, and every write replaces the
whole file atomically: a crash leaves either the old or the new version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

APP_NAME: Final = "nixos-azure-publish"


def default_state_dir(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME/nixos-azure-publish``, else ``~/.local/state/nixos-azure-publish``."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_STATE_HOME", "")
    # The XDG spec says relative paths are invalid and must be ignored.
    if base and Path(base).is_absolute():
        return Path(base) / APP_NAME
    home = env.get("HOME")
    root = Path(home) if home else Path.home()
    return root / ".local" / "state" / APP_NAME


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object stored at *path*, or ``None`` when it is missing or unusable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("ignoring unreadable state file %s: %s", path, error.strerror or error)
        return None
    try:
        data = json.loads(text)
    except ValueError:
        log.warning("ignoring corrupt state file %s", path)
        return None
    if not isinstance(data, dict):
        log.warning("ignoring state file %s: not a JSON object", path)
        return None
    return data


def write_json_atomic(path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
    """Replace *path* with *data* as JSON, atomically (temp file + rename).

    With *durable* the file is fsynced before the rename, so a power loss
    cannot leave an empty file under the final name.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def remove(path: Path) -> None:
    """Delete the state file at *path* if it exists."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()

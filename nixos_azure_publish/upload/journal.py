"""The upload journal: extents finished by earlier runs, so that a rerun resumes."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish import state

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.upload.transport import BlobInfo
    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)

JOURNAL_INTERVAL: Final = 1.0
"""Seconds between writes of the journal while an upload runs."""
JOURNAL_VERSION: Final = 1
JOURNAL_MAX_AGE: Final = 14 * 24 * 3600.0
"""Journals untouched this long (seconds) are deleted when another upload starts. The
upload they belong to is over: its disk deleted or its SAS long expired. Deleting one
by mistake costs only time."""
_JOURNAL_FILE: Final = re.compile(r"[0-9a-f]{32}\.json|\.[0-9a-f]{32}\.json\.[^/]+\.tmp")
"""A journal, or a temporary file that a killed run left while writing one."""


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

"""What an upload reports: its result, the progress protocol, and progress as log lines."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadResult:
    """What an upload did. ``data_bytes`` is the image's non-zero data, in bytes."""

    bytes_sent: int
    data_bytes: int
    ranges_sent: int
    ranges_skipped: int
    ranges_retried: int
    seconds: float
    verified: bool
    ranges_cleared: int = 0

    def to_json(self) -> dict[str, Any]:
        """The JSON object printed by ``upload --json``."""
        return {
            "bytes_sent": self.bytes_sent,
            "data_bytes": self.data_bytes,
            "ranges_sent": self.ranges_sent,
            "ranges_skipped": self.ranges_skipped,
            "ranges_retried": self.ranges_retried,
            "seconds": round(self.seconds, 3),
            "verified": self.verified,
        }


class ProgressSink(Protocol):
    """Receives progress; calls are serialised by the engine."""

    def start(self, total: int) -> None:
        """*total*: the bytes of the image's data regions, which hold all its data."""

    def update(self, done: int, sent: int) -> None:
        """Cumulative bytes of data regions finished, and bytes actually sent."""

    def finish(self, done: int, sent: int) -> None:
        """The upload phase is over (successfully or not)."""


class LogProgress:
    """One log line every *interval* seconds: the progress sink when there is no terminal."""

    def __init__(self, *, interval: float = 5.0, logger: logging.Logger | None = None) -> None:
        self.interval = interval
        self.logger = logger or log
        self._total = 0
        self._started = 0.0
        self._last = 0.0

    def start(self, total: int) -> None:
        self._total = total
        self._started = self._last = time.monotonic()

    def update(self, done: int, sent: int) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.logger.info("%s", progress_line(done, sent, self._total, now - self._started))

    def finish(self, done: int, sent: int) -> None:
        self.logger.info(
            "%s", progress_line(done, sent, self._total, time.monotonic() - self._started)
        )


def mib(n: float) -> str:
    return f"{n / 1024**2:,.1f} MiB"


def progress_line(done: int, sent: int, total: int, elapsed: float) -> str:
    """``uploaded 12.0 MiB; 40.0 of 100.0 MiB done (40%), 9.9 MiB/s, ETA 0:06``."""
    rate = done / elapsed if elapsed > 0 else 0.0
    pct = 100 * done // total if total else 100
    eta = "?"
    if rate > 0 and total >= done:
        left = int((total - done) / rate)
        eta = f"{left // 60}:{left % 60:02d}"
    return (
        f"uploaded {mib(sent)}; {done / 1024**2:,.1f} of {mib(total)} done ({pct}%), "
        f"{mib(sent / elapsed if elapsed > 0 else 0)}/s, ETA {eta}"
    )

"""The emulator's request log: every call, the RBAC action it needs, its status.

Tests query it to assert which calls a command made (and, from the actions,
which role permissions a real principal would need). Paths are redacted.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any

from nixos_azure_publish.emulator.redact import redact


@dataclass(frozen=True)
class RequestRecord:
    """One request to the emulator and how it was answered."""

    method: str
    path: str
    api_version: str | None
    status: int
    action: str | None
    time: float
    error_code: str | None = None
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog(list[RequestRecord]):
    """A thread-safe, append-only list of :class:`RequestRecord`."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def record(self, record: RequestRecord) -> None:
        cleaned = RequestRecord(
            method=record.method,
            path=redact(record.path),
            api_version=record.api_version,
            status=record.status,
            action=record.action,
            time=record.time,
            error_code=record.error_code,
            fault=record.fault,
        )
        with self._lock:
            self.append(cleaned)

    def actions(self) -> list[str]:
        """The RBAC actions of every request, in order, without duplicates."""
        with self._lock:
            seen: dict[str, None] = {}
            for rec in self:
                if rec.action:
                    seen.setdefault(rec.action, None)
            return list(seen)

    def matching(
        self, *, method: str | None = None, action: str | None = None, status: int | None = None
    ) -> list[RequestRecord]:
        """The records that match every given criterion."""
        with self._lock:
            return [
                rec
                for rec in self
                if (method is None or rec.method == method)
                and (action is None or rec.action == action)
                and (status is None or rec.status == status)
            ]

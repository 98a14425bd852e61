"""Fault injection: throttling, transient errors, failing LROs, slowness, dropped connections.

A :class:`Faults` object belongs to a running emulator and can be changed
while it runs (tests set fields between calls). Counters (``*_next``) make
faults deterministic; rates add randomness from a seeded generator.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Literal

Decision = Literal["throttle", "error", "drop"]


@dataclass
class Faults:
    """What goes wrong, and how often. Every field may be changed at any time."""

    throttle_rate: float = 0.0
    """Fraction of matching calls answered 429 TooManyRequests."""
    throttle_next: int = 0
    """The next N matching calls are answered 429."""
    retry_after: float = 1.0
    """Seconds sent in Retry-After with a 429 or 503."""
    error_rate: float = 0.0
    """Fraction of matching calls answered with ``error_status``."""
    error_next: int = 0
    """The next N matching calls are answered with ``error_status``."""
    error_status: int = 503
    """500 (InternalServerError) or 503 (ServerBusy)."""
    fail_lro: dict[str, str] = field(default_factory=dict)
    """RBAC action -> error code: long-running operations of that action end Failed."""
    fail_replication: dict[str, str] = field(default_factory=dict)
    """Region -> details: replication of image versions created from then on fails there
    (``regionalReplicationState`` Failed with the details, ``aggregatedState`` Failed)."""
    delay: float = 0.0
    """Seconds added before every response (a slow Resource Manager)."""
    lro_delay: float = 0.0
    """Seconds added to the duration of every long-running operation."""
    drop_connections: bool = False
    """Kill switch: close every connection without an answer."""
    match: str | None = None
    """Only calls whose RBAC action contains this text are affected (None: all)."""
    seed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    _random: random.Random | None = field(default=None, repr=False, compare=False)

    def reset(self) -> None:
        """Back to no faults at all."""
        with self._lock:
            self.throttle_rate = self.error_rate = 0.0
            self.throttle_next = self.error_next = 0
            self.fail_lro = {}
            self.fail_replication = {}
            self.delay = self.lro_delay = 0.0
            self.drop_connections = False
            self.match = None

    def decide(self, action: str | None) -> Decision | None:
        """The fault for one incoming call, if any (consumes counters)."""
        with self._lock:
            if self.drop_connections:
                return "drop"
            if self.match is not None and (action is None or self.match not in action):
                return None
            if self.throttle_next > 0:
                self.throttle_next -= 1
                return "throttle"
            if self.error_next > 0:
                self.error_next -= 1
                return "error"
            if self._random is None:
                self._random = random.Random(self.seed)  # noqa: S311 - not for security
            if self.throttle_rate and self._random.random() < self.throttle_rate:
                return "throttle"
            if self.error_rate and self._random.random() < self.error_rate:
                return "error"
            return None

    def replication_failure(self, region: str) -> str | None:
        """The details of an injected replication failure in *region*, if any."""
        with self._lock:
            wanted = region.replace(" ", "").lower()
            for name, details in self.fail_replication.items():
                if name.replace(" ", "").lower() == wanted:
                    return details or f"Replication to region '{region}' failed."
            return None

    def lro_failure(self, action: str) -> str | None:
        """The error code an LRO of *action* must end with, if any."""
        with self._lock:
            return self.fail_lro.get(action)

"""The emulator's state: resources by ARM id, long-running operations, persistence.

Everything lives in memory behind one lock. With a state directory, every
change is written to ``state.json`` atomically, so a restarted emulator
continues where it stopped. Time-driven changes (operations finishing,
replication progress) are computed from wall-clock timestamps when state is
read, so they survive a restart too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.emulator.armerror import ArmError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

log = logging.getLogger(__name__)

STATE_FILE = "state.json"


@dataclass
class Resource:
    """One ARM resource: the JSON Azure returns for it, plus private bookkeeping."""

    id: str
    type: str
    body: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.id.rsplit("/", 1)[-1]

    @property
    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = self.body.setdefault("properties", {})
        return props


@dataclass
class Operation:
    """A long-running operation, polled through Azure-AsyncOperation and Location URLs."""

    id: str
    namespace: str
    location: str
    subscription: str
    api_version: str
    kind: str
    resource_id: str
    start: float
    ready_at: float
    status: str = "InProgress"
    end: float | None = None
    output: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    fail_code: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status != "InProgress"


class Store:
    """Resources, operations and their persistence. Use ``with store.lock:`` to change them."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.lock = threading.RLock()
        self.resources: dict[str, Resource] = {}
        self.operations: dict[str, Operation] = {}
        # kind -> completion: runs once when the operation is due; returns the output
        # (or None), or raises ArmError to fail the operation with that error.
        self.completions: dict[str, Callable[[Store, Operation], dict[str, Any] | None]] = {}
        self.state_dir = state_dir
        self.extra: dict[str, Any] = {}
        if state_dir is not None:
            self._load(state_dir / STATE_FILE)

    # -- resources -------------------------------------------------------------------------

    def get(self, resource_id: str) -> Resource | None:
        return self.resources.get(resource_id.lower())

    def put(self, resource: Resource) -> Resource:
        self.resources[resource.id.lower()] = resource
        return resource

    def delete(self, resource_id: str) -> Resource | None:
        return self.resources.pop(resource_id.lower(), None)

    def children(self, parent_id: str, type_name: str) -> Iterator[Resource]:
        """Resources of *type_name* directly under *parent_id* (by id prefix)."""
        prefix = parent_id.lower().rstrip("/") + "/"
        for key, res in list(self.resources.items()):
            if key.startswith(prefix) and res.type.lower() == type_name.lower():
                yield res

    def under(self, parent_id: str) -> list[Resource]:
        """Every resource whose id starts below *parent_id*."""
        prefix = parent_id.lower().rstrip("/") + "/"
        return [res for key, res in self.resources.items() if key.startswith(prefix)]

    # -- operations ------------------------------------------------------------------------

    def add_operation(self, op: Operation) -> Operation:
        """Keep *op* until it is due; :meth:`tick` finishes it then."""
        self.operations[op.id] = op
        return op

    def tick(self, now: float | None = None) -> bool:
        """Finish every operation that is due, oldest first. True when something changed."""
        now = time.time() if now is None else now
        changed = False
        with self.lock:
            due = sorted(
                (op for op in self.operations.values() if not op.done and op.ready_at <= now),
                key=lambda op: op.ready_at,
            )
            for op in due:
                changed = True
                op.end = now
                if op.fail_code:
                    op.status = "Failed"
                    op.error = {
                        "code": op.fail_code,
                        "message": f"The operation failed ({op.fail_code}), as injected.",
                    }
                    self._mark_failed(op)
                    continue
                completion = self.completions.get(op.kind)
                try:
                    op.output = completion(self, op) if completion else None
                except ArmError as error:
                    op.status = "Failed"
                    op.error = error.body()["error"]
                    self._mark_failed(op)
                else:
                    op.status = "Succeeded"
        if changed:
            self.save()
        return changed

    def _mark_failed(self, op: Operation) -> None:
        res = self.get(op.resource_id)
        if res is not None and op.args.get("marks_resource", True):
            res.properties["provisioningState"] = "Failed"

    # -- persistence -----------------------------------------------------------------------

    def save(self) -> None:
        if self.state_dir is None:
            return
        with self.lock:
            data = {
                "resources": [asdict(r) for r in self.resources.values()],
                "operations": [asdict(o) for o in self.operations.values()],
                "extra": self.extra,
            }
            text = json.dumps(data, indent=1)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.state_dir, prefix=".state-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            Path(tmp).replace(self.state_dir / STATE_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                Path(tmp).unlink()
            raise

    def _load(self, path: Path) -> None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as error:
            log.warning("ignoring unreadable emulator state %s: %s", path, error)
            return
        for raw in data.get("resources", []):
            self.put(Resource(**raw))
        for raw in data.get("operations", []):
            op = Operation(**raw)
            self.operations[op.id] = op
        self.extra = dict(data.get("extra", {}))
        log.debug("loaded %d resources from %s", len(self.resources), path)

"""The spool: a directory of job files, one per store path and target, moved between states.

Layout under the spool root::

    lock              flock held for a moment around every change of state
    tmp/              job files being written (fsynced, then renamed: atomic)
    queue/<id>.json   waiting jobs (``notBefore`` delays a retry)
    running/<id>.json jobs a worker holds; ``locks/<id>`` is flocked while it works
    done/<id>.json    published (or nothing to publish), with the report
    failed/<id>.json  gave up after the retry limit, or a failure no retry can fix
    locks/<id>        the per-job lock; the publish subprocess inherits it

A job's id is a digest of its store path and target, so enqueuing the same
pair twice (hooks are delivered at least once) finds the first and adds
nothing. A job in ``running/`` whose lock nobody holds belonged to a worker
that died: the next claim puts it back in the queue, where it runs again; a
publish is idempotent, so the rerun finishes the work and nothing is done
twice. Standard library only: the hooks import this module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from nixos_azure_publish import typedload
from nixos_azure_publish.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

SPOOL_ENV: Final = "NIXOS_AZURE_PUBLISH_SPOOL"
STATES: Final = ("queue", "running", "done", "failed")
FORMAT: Final = 1
# Writing a job file takes milliseconds; one this old in tmp/ belongs to a writer that died.
STALE_TMP_SECONDS: Final = 3600.0

State = Literal["queue", "running", "done", "failed"]
Source = Literal["hydra", "post-build", "cli", "worker"]


class SpoolError(UsageError):
    """The spool directory cannot be created, read or written."""

    kind = "spool"


@dataclass(frozen=True)
class Job:
    """What to publish: a store path, for one target (or for the worker to match, if None)."""

    store_path: str
    target: str | None = None
    source: Source = "cli"
    drv_path: str | None = None
    # project:jobset:job and the build number, for a job from Hydra.
    hydra_job: str | None = None
    hydra_build: int | None = None

    @property
    def id(self) -> str:
        """The same store path and target always give the same id (the dedup key)."""
        key = f"{self.store_path}\0{self.target or ''}".encode()
        return hashlib.sha256(key).hexdigest()[:32]

    def to_json(self) -> dict[str, Any]:
        """The job as JSON (camelCase, like the rest of the tool's output)."""
        out: dict[str, Any] = typedload.dump(self)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """The job stored as :meth:`to_json` gave it."""
        build = data.get("hydraBuild")
        return cls(
            store_path=str(data["storePath"]),
            target=str(data["target"]) if data.get("target") is not None else None,
            source=data.get("source") or "cli",
            drv_path=data.get("drvPath"),
            hydra_job=data.get("hydraJob"),
            hydra_build=int(build) if isinstance(build, int) else None,
        )


@dataclass
class Record:
    """A job file: the job, its attempts so far and what each one gave."""

    job: Job
    enqueued_at: float
    attempts: int = 0
    not_before: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    worker: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": FORMAT,
            "id": self.job.id,
            "job": self.job.to_json(),
            "enqueuedAt": self.enqueued_at,
            "attempts": self.attempts,
            "notBefore": self.not_before,
            "worker": self.worker,
            "history": self.history,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Record:
        """A record read back from its file."""
        return cls(
            job=Job.from_json(data["job"]),
            enqueued_at=float(data.get("enqueuedAt", 0.0)),
            attempts=int(data.get("attempts", 0)),
            not_before=float(data.get("notBefore", 0.0)),
            history=list(data.get("history", [])),
            worker=data.get("worker"),
        )


@dataclass
class Claim:
    """A job a worker holds: its record and the open, flocked per-job lock."""

    record: Record
    lock_fd: int

    @property
    def job(self) -> Job:
        """The job held."""
        return self.record.job


class Spool:
    """A spool directory. Every method is safe with several processes on one spool."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, state: State, job_id: str) -> Path:
        """Where the job file of *job_id* lives in *state*."""
        return self.root / state / f"{job_id}.json"

    def ensure(self) -> None:
        """Create the spool's directories (the root too) if they are missing."""
        try:
            for name in (*STATES, "tmp", "locks"):
                (self.root / name).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise self._error("create", error) from None

    def _error(self, what: str, error: OSError) -> SpoolError:
        return SpoolError(
            f"cannot {what} the spool {self.root}: {error.strerror or error}",
            hint="Check that the directory exists and this user may write to it"
            " (the NixOS module creates it with the right owner)",
        )

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.ensure()
        try:
            # Read-only is enough for flock, and works on a lock file another user made.
            fd = os.open(self.root / "lock", os.O_RDONLY | os.O_CREAT, 0o666)
        except OSError as error:
            raise self._error("lock", error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _write(self, state: State, record: Record) -> None:
        """Write *record* into *state* atomically and durably (fsync file and directory)."""
        job_id = record.job.id
        payload = json.dumps(record.to_json(), indent=1, sort_keys=True).encode()
        tmp = self.root / "tmp" / f"{job_id}.{os.getpid()}.{time.monotonic_ns()}"
        final = self.path(state, job_id)
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o664)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            tmp.replace(final)
            _fsync_dir(final.parent)
        except OSError as error:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error("write to", error) from None

    def _read(self, path: Path) -> Record | None:
        try:
            return Record.from_json(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            # A job file is only ever renamed into place complete; a broken one was
            # edited by hand. Leave it where it is for a person to look at.
            return None

    def state_of(self, job_id: str) -> State | None:
        """Which state the job *job_id* is in, if it is in the spool at all."""
        for state in STATES:
            if self.path(state, job_id).exists():
                return state
        return None

    def read(self, state: State, job_id: str) -> Record | None:
        """The record of *job_id* in *state*, or None."""
        return self._read(self.path(state, job_id))

    def records(self, state: State) -> list[Record]:
        """Every readable record in *state*, oldest first."""
        folder = self.root / state
        if not folder.is_dir():
            return []
        found = [r for p in sorted(folder.glob("*.json")) if (r := self._read(p)) is not None]
        return sorted(found, key=lambda r: (r.enqueued_at, r.job.id))

    def enqueue(self, job: Job, *, now: float | None = None) -> State | None:
        """Queue *job*; None if it was new, else the state the same job is already in."""
        with self._locked():
            return self._enqueue_locked(job, now=time.time() if now is None else now)

    def _enqueue_locked(self, job: Job, *, now: float) -> State | None:
        existing = self.state_of(job.id)
        if existing is not None:
            return existing
        self._write("queue", Record(job=job, enqueued_at=now))
        return None

    # --- the worker's side -------------------------------------------------------------------

    def _try_lock(self, job_id: str) -> int | None:
        """The flocked per-job lock of *job_id*, or None when someone holds it."""
        fd = os.open(self.root / "locks" / job_id, os.O_RDONLY | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    def _recover_locked(self, now: float) -> None:
        """Requeue the jobs of dead workers (their lock is free); drop stale temp files."""
        for path in (self.root / "tmp").iterdir():
            # A writer that died between creating and renaming its file; nothing refers to it.
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < now - STALE_TMP_SECONDS:
                    path.unlink()
        for path in sorted((self.root / "running").glob("*.json")):
            job_id = path.stem
            fd = self._try_lock(job_id)
            if fd is None:
                continue  # a worker, or the publish it started, still holds it
            try:
                record = self._read(path)
                if record is None or self.state_of_final(job_id) is not None:
                    # Died after recording the outcome but before removing this file.
                    path.unlink(missing_ok=True)
                    continue
                record.history.append(
                    {"status": "interrupted", "worker": record.worker, "finishedAt": now}
                )
                record.worker = None
                self._write("queue", record)
                path.unlink(missing_ok=True)
            finally:
                os.close(fd)

    def state_of_final(self, job_id: str) -> State | None:
        """``done`` or ``failed`` when the job has an outcome, else None."""
        final: tuple[State, ...] = ("done", "failed")
        for state in final:
            if self.path(state, job_id).exists():
                return state
        return None

    def claim(self, *, worker: str, now: float | None = None) -> Claim | None:
        """Take the oldest job that is due, or None when none is.

        The job moves to ``running/`` and its lock is held by the returned
        claim until :meth:`finish`; a worker that dies releases it implicitly.
        """
        moment = time.time() if now is None else now
        with self._locked():
            self._recover_locked(moment)
            for record in self.records("queue"):
                if record.not_before > moment:
                    continue
                fd = self._try_lock(record.job.id)
                if fd is None:  # pragma: no cover - queue files are only touched under the lock
                    continue
                record.worker = worker
                self._write("running", record)
                self.path("queue", record.job.id).unlink(missing_ok=True)
                return Claim(record=record, lock_fd=fd)
        return None

    def next_due(self) -> float | None:
        """When the next queued job is due (epoch seconds), or None if the queue is empty."""
        due = [r.not_before for r in self.records("queue")]
        return min(due) if due else None

    def finish(
        self,
        claim: Claim,
        *,
        state: State,
        entry: dict[str, Any],
        not_before: float = 0.0,
        enqueue: list[Job] | None = None,
    ) -> None:
        """Record the outcome of a claimed job and release it.

        *state* is ``done``, ``failed`` or ``queue`` (a retry, due at *not_before*);
        *enqueue* adds jobs in the same step (a job expanded into one per target).
        """
        record = claim.record
        record.history.append(entry)
        record.not_before = not_before
        record.worker = None
        try:
            with self._locked():
                for job in enqueue or []:
                    self._enqueue_locked(job, now=time.time())
                self._write(state, record)
                self.path("running", record.job.id).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    (self.root / "locks" / record.job.id).unlink()
        finally:
            os.close(claim.lock_fd)

    def counts(self) -> dict[str, int]:
        """How many job files each state holds."""
        return {
            state: len(list((self.root / state).glob("*.json")))
            if (self.root / state).is_dir()
            else 0
            for state in STATES
        }


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def default_spool(environ: Mapping[str, str] | None = None) -> Path | None:
    """The spool named by ``$NIXOS_AZURE_PUBLISH_SPOOL``, if set."""
    env = os.environ if environ is None else environ
    value = env.get(SPOOL_ENV)
    return Path(value) if value else None

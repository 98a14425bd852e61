"""Several targets in one run: loaded, then published (or planned) concurrently.

Each target is its own :class:`~.runner.Pipeline` with its own report, journal and
clients; at most ``jobs`` of them run at once. Targets that publish the same image
share one upload (:mod:`.shared`). One target's failure does not stop the others:
the :class:`~nixos_azure_publish.report.RunReport` holds every target's report and
the run's exit code is the worst of theirs (:func:`~nixos_azure_publish.errors.worst_exit_code`).

Ctrl-C (or SIGTERM, which the CLI turns into it) reaches only the main thread: it
passes the interruption on to every target's thread, whose cleanup (revoking write
access above all) then runs as in a single publish, and waits for them to finish.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeVar

from nixos_azure_publish.errors import ExitCode, InternalError, Interrupted, PublishError
from nixos_azure_publish.pipeline.runner import STEPS, Pipeline
from nixos_azure_publish.pipeline.shared import SharedUploads, finish_cleanups, shared_steps
from nixos_azure_publish.report import PublishReport, RunReport
from nixos_azure_publish.selection import check_distinct

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from concurrent.futures import Future
    from pathlib import Path

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.pipeline.context import PublishInput, PublishOptions
    from nixos_azure_publish.selection import TargetSource

log = logging.getLogger(__name__)

_POLL: Final = 0.2
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class _Outcome:
    """One target's result: its report and exit code, and its pipeline once it had one."""

    report: PublishReport
    code: ExitCode = ExitCode.OK
    pipeline: Pipeline | None = None


@dataclass
class _Threads:
    """The threads working on targets now, so that an interruption can reach them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[int, str] = field(default_factory=dict)
    interrupted: threading.Event = field(default_factory=threading.Event)

    @contextlib.contextmanager
    def working_on(self, name: str) -> Iterator[None]:
        ident = threading.get_ident()
        _current.name = name
        with self.lock:
            self.running[ident] = name
        try:
            if self.interrupted.is_set():
                raise KeyboardInterrupt
            yield
        finally:
            with self.lock:
                self.running.pop(ident, None)
            _current.name = None

    def interrupt(self) -> None:
        """Raise KeyboardInterrupt in every target's thread (at its next Python instruction)."""
        self.interrupted.set()
        # Under the lock: a thread that left working_on() gets no interruption meant for
        # the target it finished.
        with self.lock:
            for ident in self.running:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt)
                )


_current = threading.local()


class _TargetPrefix(logging.Filter):
    """Log lines from a target's thread start with ``[<target>]``."""

    def filter(self, record: logging.LogRecord) -> bool:
        name = getattr(_current, "name", None)
        if name and not getattr(record, "_target_prefixed", False):
            record.msg = f"[{name}] {record.msg}"
            record._target_prefixed = True  # noqa: SLF001
        return True


@contextlib.contextmanager
def _prefixed_logs() -> Iterator[None]:
    handlers = list(logging.getLogger().handlers)
    prefix = _TargetPrefix()
    for handler in handlers:
        handler.addFilter(prefix)
    try:
        yield
    finally:
        for handler in handlers:
            handler.removeFilter(prefix)


def publish_many(
    sources: list[TargetSource],
    *,
    image: Path | None,
    environ: Mapping[str, str],
    clients_for: Callable[[PublishInput], AzureClients],
    options_for: Callable[[PublishInput], PublishOptions],
    jobs: int,
    dry_run: bool = False,
) -> RunReport:
    """Load every target, then publish (or, with *dry_run*, plan) them, *jobs* at a time."""
    began = time.monotonic()
    threads = _Threads()
    with _prefixed_logs(), ThreadPoolExecutor(jobs, thread_name_prefix="target") as pool:
        loaded = _each(
            pool, threads, sources, lambda s: _load(s, image=image, environ=environ), _label
        )
        inputs = [o for o in loaded if isinstance(o, _Loaded)]
        check_distinct([o.input for o in inputs])
        uploads = SharedUploads()
        steps = shared_steps(STEPS, uploads)

        def publish(item: _Loaded | _Outcome) -> _Outcome:
            if isinstance(item, _Outcome):
                return item
            return _publish(
                item.input,
                clients_for=clients_for,
                options_for=options_for,
                steps=steps,
                dry_run=dry_run,
            )

        outcomes: list[_Outcome] = []
        try:
            outcomes = _each(pool, threads, loaded, publish, _label_of_loaded)
        finally:
            contexts = [o.pipeline.ctx for o in outcomes if o.pipeline is not None]
            if not dry_run and contexts:
                with contextlib.suppress(KeyboardInterrupt):
                    finish_cleanups(contexts, uploads, jobs=jobs)
    return RunReport(
        targets=[o.report for o in outcomes],
        codes=[o.code for o in outcomes],
        dry_run=dry_run,
        seconds=time.monotonic() - began,
    )


@dataclass
class _Loaded:
    input: PublishInput


def _label(source: TargetSource) -> str:
    return source.label


def _label_of_loaded(item: _Loaded | _Outcome) -> str:
    return item.input.target.name if isinstance(item, _Loaded) else item.report.target


def _load(source: TargetSource, *, image: Path | None, environ: Mapping[str, str]) -> _Loaded:
    return _Loaded(source.load(image=image, environ=environ))


def _publish(
    publish: PublishInput,
    *,
    clients_for: Callable[[PublishInput], AzureClients],
    options_for: Callable[[PublishInput], PublishOptions],
    steps: tuple[type, ...],
    dry_run: bool,
) -> _Outcome:
    pipeline = Pipeline(
        publish, clients=clients_for(publish), options=options_for(publish), steps=steps
    )
    outcome = _Outcome(report=pipeline.report, pipeline=pipeline)
    try:
        if dry_run:
            pipeline.plan()
        else:
            pipeline.run()
    except PublishError as error:
        _record_error(pipeline.report, error)
        outcome.code = error.exit_code
    return outcome


def _record_error(report: PublishReport, error: PublishError) -> None:
    if isinstance(error, Interrupted):
        report.status = "interrupted"
    else:
        report.status = "failed"
    report.error = error.one_line()


def _each(
    pool: ThreadPoolExecutor,
    threads: _Threads,
    items: list[T],
    work: Callable[[T], R],
    label: Callable[[T], str],
) -> list[R | _Outcome]:
    """``work`` on every item in *pool*; a failure becomes that item's failed outcome."""
    futures = [pool.submit(_task, threads, item, work, label) for item in items]
    try:
        for future in futures:
            while not future.done():
                with contextlib.suppress(TimeoutError):
                    future.result(timeout=_POLL)
    except KeyboardInterrupt:
        threads.interrupt()
        for future in futures:
            future.cancel()
        _wait_out(list(futures), threads)
    results: list[R | _Outcome] = []
    for item, future in zip(items, futures, strict=True):
        if future.cancelled():
            results.append(_failed(label(item), Interrupted("interrupted before it started")))
        else:
            results.append(future.result())
    return results


def _task(
    threads: _Threads, item: T, work: Callable[[T], R], label: Callable[[T], str]
) -> R | _Outcome:
    try:
        with threads.working_on(label(item)):
            return work(item)
    except PublishError as error:
        return _failed(label(item), error)
    except KeyboardInterrupt:
        return _failed(label(item), Interrupted("interrupted before it started"))
    except Exception as error:
        # One target's bug must not hide the other targets' results.
        log.exception("target %s", label(item))
        return _failed(label(item), InternalError(f"internal error: {error!r}"))


def _wait_out(futures: list[Future[Any]], threads: _Threads) -> None:
    """Wait for the interrupted targets' cleanup; a second Ctrl-C cannot skip it."""
    while not all(f.done() for f in futures):
        try:
            time.sleep(_POLL)
        except KeyboardInterrupt:
            log.warning("still cleaning up (revoking access); please wait")
            threads.interrupt()


def _failed(label: str, error: PublishError) -> _Outcome:
    report = PublishReport(target=label)
    _record_error(report, error)
    return _Outcome(report=report, code=error.exit_code)

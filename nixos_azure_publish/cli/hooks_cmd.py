"""``hydra-hook``, ``post-build-hook``, ``enqueue`` and ``worker``: publishing from a spool."""

from __future__ import annotations

import contextlib
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import click

from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import flag, shown, state_dir_option
from nixos_azure_publish.errors import UsageError
from nixos_azure_publish.hooks.entry import hydra_hook, post_build_hook, spool_from
from nixos_azure_publish.hooks.spool import SPOOL_ENV, Job
from nixos_azure_publish.hooks.targets import TARGETS_ENV, default_targets_file, load_targets
from nixos_azure_publish.hooks.worker import Worker, WorkerOptions

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger(__name__)

__all__ = ["enqueue_command", "hydra_hook", "post_build_hook", "worker_command"]

_spool_option = click.option(
    "--spool",
    type=click.Path(path_type=Path, file_okay=False),
    help=f"The spool directory (default ${SPOOL_ENV}).",
)
_targets_option = click.option(
    "--targets",
    "targets_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help=f"The targets file: which targets to publish, fed by which Hydra jobs"
    f" (default ${TARGETS_ENV}).",
)


@click.command("enqueue")
@_spool_option
@click.option(
    "--target",
    "target_name",
    help="The target to publish it for (default: every target whose image it is).",
)
@click.argument("store_path", type=click.Path(path_type=Path))
def enqueue_command(*, spool: Path | None, target_name: str | None, store_path: Path) -> None:
    """Queue a store path for the worker by hand (what the hooks do).

    \b
    Example:
      nixos-azure-publish enqueue ./result --target gen2 --spool ./spool
    """
    job = Job(store_path=str(store_path.absolute()), target=target_name, source="cli")
    state = spool_from(spool).enqueue(job)
    app_context().emit(
        {"id": job.id, "job": job.to_json(), "alreadyIn": state},
        f"queued job {job.id}" if state is None else f"already in the spool ({state}): {job.id}",
    )


@click.command("worker")
@_spool_option
@_targets_option
@flag("--once", help="Handle every job that is due, then exit.")
@shown(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=5,
    help="Attempts before a job is recorded as failed.",
)
@shown(
    "--backoff",
    type=click.FloatRange(min=0),
    default=60.0,
    help="Seconds before the first retry; doubles with each attempt, up to an hour.",
)
@shown(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=5.0,
    help="Seconds between looks at an empty queue.",
)
@state_dir_option
def worker_command(
    *,
    spool: Path | None,
    targets_file: Path | None,
    once: bool,
    max_attempts: int,
    backoff: float,
    poll: float,
    state_dir: Path | None,
) -> None:
    """Publish the spool's jobs, one at a time, each in its own process.

    Records each job as done or failed with its report, retries failures with
    backoff, and picks up where it stopped after a restart. Several workers may
    share a spool, or publish the same images from several machines: Azure is
    the coordination (content-addressed names, look before create).

    \b
    Example:
      nixos-azure-publish worker --spool ./spool --targets targets.json --once
    """
    path = targets_file if targets_file is not None else default_targets_file()
    if path is None:
        raise UsageError(
            "no targets file",
            hint=f"Pass --targets FILE or set ${TARGETS_ENV} (the NixOS module sets it)",
        )
    worker = Worker(
        spool=spool_from(spool),
        targets=load_targets(path),
        options=WorkerOptions(
            max_attempts=max_attempts, backoff=backoff, poll=poll, state_dir=state_dir
        ),
    )
    worker.spool.ensure()
    with _stop_on_sigterm(worker):
        handled = worker.run(until_idle=once)
    counts = worker.spool.counts()
    app_context().emit(
        {"handled": handled, "spool": counts},
        f"handled {handled} job(s); spool: "
        + ", ".join(f"{state} {n}" for state, n in counts.items()),
    )


@contextlib.contextmanager
def _stop_on_sigterm(worker: Worker) -> Iterator[None]:
    """SIGTERM and SIGINT stop the worker: the running publish cleans up and is requeued."""

    def _stop(signum: int, frame: object) -> None:  # noqa: ARG001
        log.info("stopping: the current job is interrupted and requeued")
        worker.terminate()

    try:
        previous = [(s, signal.signal(s, _stop)) for s in (signal.SIGTERM, signal.SIGINT)]
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous:
            signal.signal(sig, handler)

"""The worker: takes spool jobs one at a time and publishes each in a subprocess.

Each publish is ``nixos-azure-publish --json publish ... --image <store path>``
in a child process: a crash of one publish cannot take the worker down, and
the worker needs nothing of the pipeline but its command line and its JSON
report. The child inherits the job's lock, so a job stays claimed as long as
its publish runs, even when the worker itself died.

Outcomes: exit 0 is done (published, or already published); a usage or image
error (exit 2 or 3) cannot be fixed by retrying and fails at once; anything
else is retried with exponential backoff up to a limit, then fails. A job
whose target is not yet known (from the post-build hook) is expanded into one
job per target whose image is that store path, or done with nothing to do.
Azure itself is the coordination between workers on several machines: a
version's name and tags come from the image's content, and a publish looks
before it creates.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.errors import ExitCode, PublishError
from nixos_azure_publish.hooks.spool import Claim, Job, Spool, State
from nixos_azure_publish.redact import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    from nixos_azure_publish.hooks.targets import WorkerTarget

log = logging.getLogger(__name__)

# Exit codes of `publish` that a retry cannot fix: the input is wrong.
PERMANENT: Final = frozenset({int(ExitCode.USAGE), int(ExitCode.INVALID_IMAGE)})
STDERR_TAIL: Final = 40


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker publishes and retries."""

    max_attempts: int = 5
    backoff: float = 60.0
    max_backoff: float = 3600.0
    poll: float = 5.0
    state_dir: Path | None = None
    # The command that publishes; the job's arguments are appended.
    command: tuple[str, ...] = (sys.executable, "-m", "nixos_azure_publish", "--json", "publish")
    environ: Mapping[str, str] | None = None

    def delay(self, attempts: int) -> float:
        """Seconds before retry number *attempts* (1, 2, ...): doubling, capped."""
        return float(min(self.backoff * 2 ** max(attempts - 1, 0), self.max_backoff))


@dataclass
class Worker:
    """One worker process on one spool."""

    spool: Spool
    targets: list[WorkerTarget]
    options: WorkerOptions = field(default_factory=WorkerOptions)
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    # Which store path a target's image is: found with Nix for flake targets.
    image_of: Callable[[WorkerTarget], str | None] | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    _child: subprocess.Popen[bytes] | None = None

    def run(self, *, until_idle: bool = False) -> int:
        """Work until stopped (or, with *until_idle*, until no job is due); jobs handled."""
        handled = 0
        while not self.stop.is_set():
            if self.run_one():
                handled += 1
                continue
            if until_idle:
                break
            due = self.spool.next_due()
            wait = self.options.poll if due is None else min(self.options.poll, due - time.time())
            self.stop.wait(max(wait, 0.05))
        return handled

    def run_one(self) -> bool:
        """Claim and handle one due job; False when none is due."""
        claim = self.spool.claim(worker=self.name)
        if claim is None:
            return False
        job = claim.job
        log.info("job %s: %s for %s", job.id, job.store_path, job.target or "(to match)")
        # Should this raise, the lock closes with the process and the next claim
        # puts the job back in the queue.
        if job.target is None:
            self._expand(claim)
        else:
            self._publish(claim)
        return True

    # --- a job without a target: match the store path against the targets --------------------

    def _expand(self, claim: Claim) -> None:
        job = claim.job
        names = [t.name for t in self.targets if self._image_is(t, job.store_path)]
        entry: dict[str, Any] = {
            "status": "expanded" if names else "no-target",
            "targets": names,
            "worker": self.name,
            "finishedAt": time.time(),
        }
        jobs = [
            Job(
                store_path=job.store_path,
                target=name,
                source="worker",
                drv_path=job.drv_path,
            )
            for name in names
        ]
        if names:
            log.info("job %s: %s is the image of %s", job.id, job.store_path, ", ".join(names))
        else:
            log.info("job %s: %s is the image of no target; nothing to do", job.id, job.store_path)
        self.spool.finish(claim, state="done", entry=entry, enqueue=jobs)

    def _image_is(self, target: WorkerTarget, store_path: str) -> bool:
        finder = self.image_of or image_store_path
        try:
            image = finder(target)
        except PublishError as error:
            log.warning("target %s: cannot tell its image: %s", target.name, error.one_line())
            return False
        return image is not None and image.rstrip("/") == store_path.rstrip("/")

    # --- a job for one target: publish in a child process ------------------------------------

    def target_args(self, target: WorkerTarget) -> list[str]:
        """The publish command's arguments that name *target*."""
        if target.config is not None:
            return ["--config", str(target.config)]
        return ["--flake", str(target.flake), "--target", target.flake_target]

    def _publish(self, claim: Claim) -> None:
        record = claim.record
        job = claim.job
        target = next((t for t in self.targets if t.name == job.target), None)
        started = time.time()
        attempt = record.attempts + 1
        entry: dict[str, Any] = {"attempt": attempt, "worker": self.name, "startedAt": started}
        if target is None:
            entry |= {
                "status": "failed",
                "error": f"target {job.target!r} is not in this worker's targets file",
                "finishedAt": time.time(),
            }
            self.spool.finish(claim, state="failed", entry=entry)
            return
        argv = [*self.options.command, *self.target_args(target), "--image", job.store_path]
        if self.options.state_dir is not None:
            argv += ["--state-dir", str(self.options.state_dir)]
        env = dict(os.environ if self.options.environ is None else self.options.environ)
        env.pop("GITHUB_STEP_SUMMARY", None)
        # The child finds the package where this process found it: a Nix-wrapped script
        # sets its import path inside the interpreter, not in the environment.
        env["PYTHONPATH"] = os.pathsep.join(
            [p for p in sys.path if p] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
        )
        log.info("job %s: publishing %s (attempt %d)", job.id, target.name, attempt)
        code, stdout, stderr = self._run_child(argv, env, claim.lock_fd)
        entry |= {
            "exitCode": code,
            "finishedAt": time.time(),
            "seconds": round(time.time() - started, 3),
        }
        entry |= _result_of(stdout)
        tail = redact(stderr.decode(errors="replace")).splitlines()[-STDERR_TAIL:]
        if code != 0:
            entry["stderr"] = tail
        if self.stop.is_set() and code in {int(ExitCode.INTERRUPTED), -signal.SIGTERM}:
            # Stopped, not failed: the job goes back as it was, without using an attempt.
            entry["status"] = "interrupted"
            self.spool.finish(claim, state="queue", entry=entry)
            return
        self._record(claim, code, entry)

    def _record(self, claim: Claim, code: int, entry: dict[str, Any]) -> None:
        record = claim.record
        job = claim.job
        state: State
        not_before = 0.0
        if code == 0:
            state = "done"
            entry.setdefault("status", "published")
        else:
            record.attempts += 1
            entry["status"] = "failed"
            if code in PERMANENT or record.attempts >= self.options.max_attempts:
                state = "failed"
            else:
                state = "queue"
                not_before = time.time() + self.options.delay(record.attempts)
        log.info(
            "job %s: %s (exit %d)%s",
            job.id,
            entry.get("status"),
            code,
            f", retry in {not_before - time.time():.0f} s" if state == "queue" else "",
        )
        self.spool.finish(claim, state=state, entry=entry, not_before=not_before)

    def _run_child(
        self, argv: list[str], env: dict[str, str], lock_fd: int
    ) -> tuple[int, bytes, bytes]:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(lock_fd,),
        )
        self._child = proc
        try:
            stdout, stderr = proc.communicate()
        finally:
            self._child = None
        return proc.returncode, stdout, stderr

    def terminate(self) -> None:
        """Stop after the current job; its publish is interrupted (it cleans up) and requeued."""
        self.stop.set()
        child = self._child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGTERM)


def _result_of(stdout: bytes) -> dict[str, Any]:
    """The publish command's JSON: its report, or its error."""
    try:
        data = json.loads(stdout.decode(errors="replace") or "null")
    except ValueError:
        return {"output": redact(stdout.decode(errors="replace"))[-2000:]}
    if isinstance(data, dict) and "error" in data and len(data) == 1:
        return {"error": data["error"]}
    if isinstance(data, dict):
        result: dict[str, Any] = {"report": data}
        if isinstance(data.get("status"), str):
            result["status"] = data["status"]
        return result
    return {}


def image_store_path(target: WorkerTarget) -> str | None:
    """The store path of *target*'s image: its target file's ``image``, or Nix's for a flake."""
    from nixos_azure_publish import config, flake, nix  # noqa: PLC0415 - heavy, worker only

    if target.config is not None:
        data = config.read_config_file(target.config)
        image = data.get("image") if isinstance(data, dict) else None
        if not isinstance(image, str):
            return None
        return nix.store_path_of(image) or image
    value = nix.eval_json(
        flake.installable(str(target.flake), flake.ATTRIBUTE, target.flake_target, "image")
    )
    return nix.store_path_of(value) if isinstance(value, str) else None

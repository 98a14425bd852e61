"""The spool and the worker's bookkeeping: dedup, claims, recovery, retries, records.

Real processes race for the spool here (enqueue from many processes, a claimer
killed with SIGKILL). The worker's bookkeeping tests replace the publish
command with a small script that answers like ``publish --json`` would (exit
code, JSON report, stderr): the worker only ever sees a command's exit code and
output. Real publishes against the emulator are in
tests/integration/test_worker.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nixos_azure_publish.hooks.spool import Job, Spool
from nixos_azure_publish.hooks.targets import WorkerTarget
from nixos_azure_publish.hooks.worker import Worker, WorkerOptions

ROOT = str(Path(__file__).resolve().parents[2])


def job(n: int = 1, target: str | None = "gen2") -> Job:
    return Job(store_path=f"/nix/store/{n:032d}-nixos-image", target=target, source="cli")


def python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )


# --- the spool --------------------------------------------------------------------------------


def test_the_same_job_from_many_processes_at_once_is_one_file(tmp_path):
    code = """
        import sys
        from pathlib import Path
        from nixos_azure_publish.hooks.spool import Job, Spool
        spool = Spool(Path(sys.argv[1]))
        for n in range(20):
            spool.enqueue(Job(store_path=f"/nix/store/{n:032d}-img", target="t"))
        print("ok")
    """
    procs = [python(code, str(tmp_path / "spool")) for _ in range(8)]
    assert all(p.communicate()[0].strip() == "ok" for p in procs)
    spool = Spool(tmp_path / "spool")
    assert spool.counts() == {"queue": 20, "running": 0, "done": 0, "failed": 0}
    assert list((tmp_path / "spool" / "tmp").iterdir()) == []


def test_a_claim_is_exclusive_and_leaves_the_queue(tmp_path):
    spool = Spool(tmp_path)
    spool.enqueue(job())
    first = spool.claim(worker="a")
    assert first is not None
    assert spool.claim(worker="b") is None
    assert spool.state_of(job().id) == "running"
    spool.finish(first, state="done", entry={"status": "published"})
    assert spool.state_of(job().id) == "done"
    assert spool.enqueue(job()) == "done"
    assert spool.claim(worker="b") is None


def test_the_job_of_a_killed_claimer_goes_back_to_the_queue(tmp_path):
    spool = Spool(tmp_path)
    spool.enqueue(job())
    code = """
        import sys, time
        from pathlib import Path
        from nixos_azure_publish.hooks.spool import Spool
        claim = Spool(Path(sys.argv[1])).claim(worker="doomed")
        print("claimed" if claim else "none", flush=True)
        time.sleep(60)
    """
    proc = python(code, str(tmp_path))
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "claimed"
    # Alive, it holds the job: nobody else may take it.
    assert spool.claim(worker="other") is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    claim = spool.claim(worker="other")
    assert claim is not None
    assert claim.job == job()
    assert [h["status"] for h in claim.record.history] == ["interrupted"]
    assert claim.record.history[0]["worker"] == "doomed"
    assert claim.record.attempts == 0  # an interruption is not a failed attempt


def test_a_worker_that_died_after_recording_is_not_repeated(tmp_path):
    spool = Spool(tmp_path)
    spool.enqueue(job())
    claim = spool.claim(worker="a")
    assert claim is not None
    running = spool.path("running", job().id).read_bytes()
    spool.finish(claim, state="done", entry={"status": "published"})
    # As if it died between writing done/ and removing running/.
    spool.path("running", job().id).write_bytes(running)
    assert spool.claim(worker="b") is None
    assert spool.counts() == {"queue": 0, "running": 0, "done": 1, "failed": 0}


def test_a_retry_waits_for_its_time(tmp_path):
    spool = Spool(tmp_path)
    spool.enqueue(job())
    claim = spool.claim(worker="a")
    assert claim is not None
    later = time.time() + 100
    spool.finish(claim, state="queue", entry={"status": "failed"}, not_before=later)
    assert spool.claim(worker="a") is None
    assert spool.next_due() == pytest.approx(later)
    again = spool.claim(worker="a", now=later + 1)
    assert again is not None
    assert again.record.history == [{"status": "failed"}]


def test_a_dead_writer_s_temp_file_is_dropped_in_time(tmp_path):
    spool = Spool(tmp_path)
    spool.ensure()
    old, fresh = tmp_path / "tmp" / "old.1.2", tmp_path / "tmp" / "fresh.1.3"
    old.write_text("{")
    fresh.write_text("{")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert spool.claim(worker="a") is None
    assert sorted(p.name for p in (tmp_path / "tmp").iterdir()) == ["fresh.1.3"]


def test_unreadable_job_files_are_left_alone(tmp_path):
    spool = Spool(tmp_path)
    spool.ensure()
    (tmp_path / "queue" / "broken.json").write_text("{")
    spool.enqueue(job())
    claim = spool.claim(worker="a")
    assert claim is not None
    assert claim.job == job()
    assert (tmp_path / "queue" / "broken.json").exists()


# --- the worker's bookkeeping -----------------------------------------------------------------

FAKE_PUBLISH = """
import json, os, sys, time
from pathlib import Path
state = Path(os.environ["FAKE_STATE"])
calls = state / "calls"
with calls.open("a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
codes = json.loads((state / "codes").read_text())
n = len(calls.read_text().splitlines())
code = codes[min(n, len(codes)) - 1]
if (state / "sleep").exists():
    print("sleeping", file=sys.stderr, flush=True)
    (state / "started").write_text("")
    try:
        time.sleep(float((state / "sleep").read_text()))
    except KeyboardInterrupt:
        sys.exit(130)
if code == 0:
    print(json.dumps({"target": "t", "status": "published", "version": "1.2.3"}))
else:
    print(json.dumps({"error": {"kind": "azure", "message": "boom", "exitCode": code}}))
    print("error: boom https://x.blob.core.windows.net/d/abcd?sv=1&sig=SECRETSIG", file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    state = tmp_path / "fake"
    state.mkdir()
    script = state / "publish.py"
    script.write_text(FAKE_PUBLISH)
    monkeypatch.setenv("FAKE_STATE", str(state))

    def make(codes: list[int], **options) -> Worker:
        (state / "codes").write_text(json.dumps(codes))
        opts = WorkerOptions(command=(sys.executable, str(script)), **options)
        targets = [
            WorkerTarget(name="gen2", config=tmp_path / "gen2.json"),
            WorkerTarget(name="flaky", flake="github:example/images", flake_target="azure"),
        ]
        return Worker(spool=Spool(tmp_path / "spool"), targets=targets, options=opts, name="w1")

    make.state = state  # type: ignore[attr-defined]
    return make


def calls(state: Path) -> list[list[str]]:
    path = state / "calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_published_job_is_done_with_its_report(fake, tmp_path):
    worker = fake([0])
    worker.spool.enqueue(job())
    assert worker.run(until_idle=True) == 1
    record = worker.spool.read("done", job().id)
    assert record is not None
    [entry] = record.history
    assert entry["status"] == "published"
    assert entry["exitCode"] == 0
    assert entry["report"]["version"] == "1.2.3"
    assert entry["worker"] == "w1"
    assert calls(fake.state) == [
        ["--config", str(tmp_path / "gen2.json"), "--image", job().store_path]
    ]


def test_the_publish_finds_the_package_where_the_worker_did(fake, tmp_path, monkeypatch):
    # As in a Nix-wrapped script: the import path is set inside the interpreter only.
    extra = tmp_path / "site"
    extra.mkdir()
    (extra / "only_in_the_worker_s_path.py").write_text("")
    monkeypatch.syspath_prepend(str(extra))
    monkeypatch.delenv("PYTHONPATH", raising=False)
    script = fake.state / "publish.py"
    script.write_text("import only_in_the_worker_s_path\n" + script.read_text())
    worker = fake([0])
    worker.spool.enqueue(job())
    worker.run(until_idle=True)
    assert worker.spool.state_of(job().id) == "done"


def test_a_flake_target_is_published_by_reference(fake):
    worker = fake([0], state_dir=Path("/var/lib/nixos-azure-publish"))
    worker.spool.enqueue(job(target="flaky"))
    worker.run(until_idle=True)
    assert calls(fake.state) == [
        [
            "--flake",
            "github:example/images",
            "--target",
            "azure",
            "--image",
            job().store_path,
            "--state-dir",
            "/var/lib/nixos-azure-publish",
        ]
    ]


def test_failures_are_retried_with_backoff_then_recorded(fake):
    worker = fake([4, 4, 4], max_attempts=3, backoff=0.0)
    worker.spool.enqueue(job())
    assert worker.run(until_idle=True) == 3
    record = worker.spool.read("failed", job().id)
    assert record is not None
    assert record.attempts == 3
    assert [h["attempt"] for h in record.history] == [1, 2, 3]
    assert record.history[-1]["error"]["message"] == "boom"
    stderr = "\n".join(record.history[-1]["stderr"])
    assert "boom" in stderr
    assert "SECRETSIG" not in stderr
    assert "SECRETSIG" not in worker.spool.path("failed", job().id).read_text()


def test_a_failure_waits_for_its_backoff(fake):
    worker = fake([4, 0], backoff=30.0)
    worker.spool.enqueue(job())
    before = time.time()
    assert worker.run(until_idle=True) == 1
    record = worker.spool.read("queue", job().id)
    assert record is not None
    assert record.attempts == 1
    assert before + 30 <= record.not_before <= time.time() + 30
    assert WorkerOptions(backoff=30.0).delay(3) == 120.0
    assert WorkerOptions(backoff=30.0, max_backoff=100.0).delay(3) == 100.0


def test_a_usage_error_is_not_retried(fake):
    worker = fake([2, 0], backoff=0.0)
    worker.spool.enqueue(job())
    worker.run(until_idle=True)
    assert worker.spool.state_of(job().id) == "failed"
    assert len(calls(fake.state)) == 1


def test_a_target_the_worker_does_not_know_fails_without_publishing(fake):
    worker = fake([0])
    worker.spool.enqueue(job(target="gone"))
    worker.run(until_idle=True)
    record = worker.spool.read("failed", job(target="gone").id)
    assert record is not None
    assert "not in this worker's targets file" in record.history[0]["error"]
    assert calls(fake.state) == []


def test_a_job_without_target_becomes_one_per_target_whose_image_it_is(fake):
    worker = fake([0])
    worker.image_of = lambda t: job().store_path if t.name == "flaky" else "/nix/store/other"
    worker.spool.enqueue(job(target=None))
    assert worker.run(until_idle=True) == 2
    parent = worker.spool.read("done", job(target=None).id)
    assert parent is not None
    assert parent.history[0]["status"] == "expanded"
    assert parent.history[0]["targets"] == ["flaky"]
    assert worker.spool.state_of(job(target="flaky").id) == "done"
    assert len(calls(fake.state)) == 1


def test_a_job_whose_image_no_target_has_is_done_with_nothing_to_do(fake):
    worker = fake([0])
    worker.image_of = lambda _target: None
    worker.spool.enqueue(job(target=None))
    worker.run(until_idle=True)
    parent = worker.spool.read("done", job(target=None).id)
    assert parent is not None
    assert parent.history[0]["status"] == "no-target"
    assert calls(fake.state) == []


def test_a_stopped_worker_requeues_its_job_without_using_an_attempt(fake):
    worker = fake([0])
    (fake.state / "sleep").write_text("30")
    worker.spool.enqueue(job())
    thread = threading.Thread(target=worker.run)
    thread.start()
    deadline = time.monotonic() + 20
    while not (fake.state / "started").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    worker.terminate()
    thread.join(20)
    assert not thread.is_alive()
    record = worker.spool.read("queue", job().id)
    assert record is not None
    assert record.attempts == 0
    assert record.history[-1]["status"] == "interrupted"

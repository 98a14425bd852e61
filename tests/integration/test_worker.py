"""The hooks and the worker end to end: real hook commands, real worker processes, the emulator.

Jobs come in through ``hydra-hook`` and ``post-build-hook`` as Hydra and Nix run
them (subprocesses of the installed command); ``worker`` runs as its own process
and publishes each job in a child ``publish``. What got published is read from
the emulator: its gallery through the real SDK client, and its request log.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.hooks.spool import Spool
from tests.conftest import require_tool
from tests.helpers import publishing
from tests.helpers.images import MiB, qemu_vhd
from tests.helpers.targets import write_target

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator

HYDRA_JOB = "nixos:release-25.05:azure.x86_64-linux"


def store_image(tmp_path: Path, seed: int, *, data_mib: int = 0) -> Path:
    """A store-like output directory holding one fixed VHD made by qemu-img (as nixpkgs does)."""
    qemu_img = require_tool("qemu-img")
    rng = random.Random(seed)  # noqa: S311 - test data
    name = "".join(rng.choice("0123456789abcdfghijklmnpqrsvwxyz") for _ in range(32))
    out = tmp_path / "store" / f"{name}-nixos-image-azure-25.05-x86_64-linux"
    out.mkdir(parents=True)
    raw = out.parent / f"{name}.raw"
    with raw.open("wb") as handle:
        handle.truncate((24 + data_mib) * MiB)
        handle.write(bytes([seed % 251 + 1]) * 70_000)
        handle.seek(10 * MiB)
        handle.write(random.Random(seed).randbytes(data_mib * MiB))  # noqa: S311 - test data
    qemu_vhd(qemu_img, raw, out / "nixos.vhd")
    raw.unlink()
    return out


def write_targets(tmp_path: Path, image: Path | None = None) -> Path:
    # With an image, the worker can match a post-build job to this target.
    config = write_target(
        tmp_path, image, filename="gen2.json", version={"targetRegions": ["westeurope"]}
    )
    path = tmp_path / "targets.json"
    path.write_text(
        json.dumps({"targets": {"gen2": {"config": str(config), "hydraJobs": [HYDRA_JOB]}}})
    )
    return path


def env_for(emulator: Emulator, tmp_path: Path) -> dict[str, str]:
    env = publishing.env_for(emulator)
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg-state")
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "nixos_azure_publish", *args]


def hydra_hook(tmp_path: Path, env: dict[str, str], image: Path, *, build: int = 1) -> None:
    record = {
        "event": "buildFinished",
        "build": build,
        "finished": True,
        "project": "nixos",
        "jobset": "release-25.05",
        "job": "azure.x86_64-linux",
        "drvPath": f"/nix/store/{'d' * 32}-image.drv",
        "buildStatus": 0,
        "system": "x86_64-linux",
        "outputs": [{"name": "out", "path": str(image)}],
        "products": [],
        "metrics": [],
    }
    path = tmp_path / f"hydra-{build}.json"
    path.write_text(json.dumps(record))
    subprocess.run(
        command(
            "hydra-hook",
            "--spool",
            str(tmp_path / "spool"),
            "--targets",
            str(tmp_path / "targets.json"),
        ),
        env={**env, "HYDRA_JSON": str(path)},
        check=True,
        capture_output=True,
    )


def worker(tmp_path: Path, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command(
            "worker",
            "--spool",
            str(tmp_path / "spool"),
            "--targets",
            str(tmp_path / "targets.json"),
            "--state-dir",
            str(tmp_path / "state"),
            "--backoff",
            "0",
            *extra,
        ),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen[bytes], timeout: float = 240) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()
    return out.decode()


def versions(emulator: Emulator) -> list[Any]:
    return publishing.versions(publishing.compute(emulator))


def version_creations(emulator: Emulator) -> list[str]:
    """Every version PUT the emulator accepted (a rerun that finds its version makes none)."""
    return [
        r.path
        for r in emulator.requests.matching(method="PUT")
        if "/versions/" in r.path and r.status in {200, 201}
    ]


def done(tmp_path: Path) -> list[Any]:
    return Spool(tmp_path / "spool").records("done")


def test_a_hydra_build_is_published_end_to_end(fast, tmp_path):
    env = env_for(fast, tmp_path)
    write_targets(tmp_path)
    image = store_image(tmp_path, seed=1)
    hydra_hook(tmp_path, env, image)
    out = finish(worker(tmp_path, env, "--once"))
    assert "handled 1 job(s)" in out
    (version,) = versions(fast)
    (record,) = done(tmp_path)
    (entry,) = record.history
    assert entry["status"] == "published"
    assert entry["report"]["version"] == version.name
    assert entry["report"]["imageFile"] == "nixos.vhd"
    assert record.job.hydra_job == HYDRA_JOB
    assert len(version_creations(fast)) == 1


def test_duplicate_enqueues_publish_once(fast, tmp_path):
    env = env_for(fast, tmp_path)
    image = store_image(tmp_path, seed=2)
    write_targets(tmp_path, image)
    hydra_hook(tmp_path, env, image, build=1)
    hydra_hook(tmp_path, env, image, build=1)  # Hydra delivers at least once
    hydra_hook(tmp_path, env, image, build=2)  # the same output from a rebuild
    # And the post-build hook saw the build too: its job becomes the same (path, target).
    subprocess.run(
        command("post-build-hook", "--spool", str(tmp_path / "spool")),
        env={**env, "OUT_PATHS": str(image), "DRV_PATH": "/nix/store/x.drv"},
        check=True,
        capture_output=True,
    )
    finish(worker(tmp_path, env, "--once"))
    assert len(versions(fast)) == 1
    assert len(version_creations(fast)) == 1
    statuses = sorted(h["status"] for r in done(tmp_path) for h in r.history)
    assert statuses == ["expanded", "published"]
    # A later delivery of the same build finds it done.
    hydra_hook(tmp_path, env, image, build=1)
    assert Spool(tmp_path / "spool").counts()["queue"] == 0


def test_two_workers_never_publish_twice(fast, tmp_path):
    env = env_for(fast, tmp_path)
    write_targets(tmp_path)
    images = [store_image(tmp_path, seed=10 + n) for n in range(4)]
    for n, image in enumerate(images):
        hydra_hook(tmp_path, env, image, build=n)
    first, second = worker(tmp_path, env, "--once"), worker(tmp_path, env, "--once")
    finish(first)
    finish(second)
    assert len(versions(fast)) == 4
    creations = version_creations(fast)
    assert len(creations) == len(set(creations)) == 4
    records = done(tmp_path)
    assert sorted(str(r.job.store_path) for r in records) == sorted(map(str, images))
    for record in records:
        # Published by exactly one attempt. Two publishes of one target in the same second
        # race for the same time-based version name; the loser fails ("already exists with
        # other content") and its retry takes the next name.
        published = [h for h in record.history if h["status"] == "published"]
        assert published == [record.history[-1]], record.history
        # One worker at a time: the attempts of a job never overlap.
        spans = sorted((h["startedAt"], h["finishedAt"]) for h in record.history)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), record.history
    hashes = {v.tags["nixos-azure-publish.store-hash"] for v in versions(fast)}
    assert len(hashes) == 4


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_worker_killed_mid_job_completes_it_once_after_a_restart(fast, tmp_path):
    env = env_for(fast, tmp_path)
    write_targets(tmp_path)
    image = store_image(tmp_path, seed=3)
    hydra_hook(tmp_path, env, image)
    fast.settings.replication_seconds = 5.0  # a publish that is still replicating when killed
    proc = worker(tmp_path, env)
    wait_for(lambda: len(version_creations(fast)) == 1)
    # The machine goes down: the worker and its publish die at once.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    spool = Spool(tmp_path / "spool")
    assert spool.counts()["running"] == 1
    fast.settings.replication_seconds = 0.2
    finish(worker(tmp_path, env, "--once"))
    (record,) = done(tmp_path)
    assert [h["status"] for h in record.history] == ["interrupted", "published"]
    assert record.attempts == 0
    assert len(versions(fast)) == 1
    assert len(version_creations(fast)) == 1


def test_a_publish_outliving_its_killed_worker_is_not_started_again(fast, tmp_path):
    env = env_for(fast, tmp_path)
    write_targets(tmp_path)
    image = store_image(tmp_path, seed=4)
    hydra_hook(tmp_path, env, image)
    fast.settings.replication_seconds = 4.0
    proc = worker(tmp_path, env)
    wait_for(lambda: len(version_creations(fast)) == 1)
    # Only the worker dies; its publish runs on and still holds the job's lock.
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert "handled 0 job(s)" in finish(worker(tmp_path, env, "--once"))
    assert Spool(tmp_path / "spool").counts()["running"] == 1
    # Once that publish is over, the job is taken again and found already published.
    wait_for(lambda: _publishes_running(proc.pid) == 0)
    finish(worker(tmp_path, env, "--once"))
    (record,) = done(tmp_path)
    assert record.history[-1]["status"] == "already-published"
    assert len(version_creations(fast)) == 1
    assert len(versions(fast)) == 1


def _publishes_running(session: int) -> int:
    """How many processes of the killed worker's session are still alive."""
    count = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.getsid(int(entry.name)) == session:
                count += 1
        except OSError:
            continue
    return count

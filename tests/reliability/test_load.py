"""Load: a 64 GiB sparse image, and 8 concurrent publishes of different images into one emulator.

Each publisher is its own process; its peak resident set (``VmHWM`` of that
process, read while it runs) is reported and bounded: memory must not
grow with the image's size or with the number of publishers. Every publish
must succeed and produce its own version (concurrent publishers of different
images may pick the same time-based version name; the later one moves on).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish import vhd
from tests.conftest import REPO
from tests.helpers.images import make_image
from tests.helpers.publishing import compute, disks, env_for, versions
from tests.helpers.targets import write_target
from tests.reliability import figures

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

MIB = 1024 * 1024
GIB = 1024 * MIB
RSS_BOUND_MIB = 256
"""A publisher's peak resident set must stay below this (the SDKs alone take ~120 MiB)."""


def spawn(emulator: Emulator, target: Path, folder: Path) -> subprocess.Popen[bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "out.json").open("wb") as out, (folder / "err.log").open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "nixos_azure_publish", "-v", "--json", "publish",
             "--config", str(target), "--state-dir", str(folder / "state")],
            env=env_for(emulator),
            cwd=REPO,
            stdout=out,
            stderr=err,
        )  # fmt: skip


def high_water_kib(pid: int) -> int:
    """The process's peak resident set so far (VmHWM), 0 once it is gone.

    Not ``ru_maxrss`` from wait4: Linux carries the parent's high-water mark into a
    child across fork and exec, so every child would report pytest's own.
    """
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:  # noqa: PTH123
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def reap(proc: subprocess.Popen[bytes], folder: Path, timeout: float) -> dict[str, Any]:
    """Wait for *proc*; its exit code, its own peak RSS (MiB), its report."""
    deadline = time.monotonic() + timeout
    peak_kib = 0
    while True:
        peak_kib = max(peak_kib, high_water_kib(proc.pid))
        pid, status, _usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(
                f"a publisher ran over {timeout}s: {(folder / 'err.log').read_text()[-2000:]}"
            )
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    text = (folder / "out.json").read_text()
    return {
        "code": proc.returncode,
        "rss_mib": peak_kib / 1024,
        "report": json.loads(text) if text.strip() else {},
        "err": (folder / "err.log").read_text()[-3000:],
    }


def concurrent_publishes(emulator: Emulator, tmp_path: Path, count: int) -> dict[str, Any]:
    emulator.settings.replication_seconds = 0.5
    started = time.monotonic()
    procs = []
    for i in range(count):
        image = make_image(tmp_path / f"img{i}", seed=200 + i, data_mib=2)
        target = write_target(tmp_path / f"t{i}", image)
        procs.append((spawn(emulator, target, tmp_path / f"run{i}"), tmp_path / f"run{i}"))
    results = [reap(proc, folder, timeout=600) for proc, folder in procs]
    published = versions(compute(emulator))
    return {
        "runs": count,
        "failures": sum(r["code"] != 0 for r in results),
        "versions": len(published),
        "distinct_versions": len({v.name for v in published}),
        "peak_rss_mib": round(max(r["rss_mib"] for r in results), 1),
        "seconds": round(time.monotonic() - started, 1),
        "errors": [r["err"] for r in results if r["code"] != 0],
        "left_disks": len(disks(compute(emulator))),
    }


@pytest.mark.parametrize(
    ("count", "variant"), [(8, "fast"), pytest.param(16, "campaign", marks=pytest.mark.campaign)]
)
def test_concurrent_publishes_of_different_images(emulator, tmp_path, count, variant):
    result = concurrent_publishes(emulator, tmp_path, count)
    figures.record(
        "load: concurrent publishes into one emulator",
        method=f"{variant}: {count} publishers, 24 MiB images",
        **{k: v for k, v in result.items() if k != "errors"},
    )
    assert result["failures"] == 0, result["errors"]
    assert result["versions"] == result["distinct_versions"] == count, result
    assert result["left_disks"] == 0, result
    assert result["peak_rss_mib"] < RSS_BOUND_MIB, result


def sparse_image(folder: Path, size: int, data_regions: int) -> Path:
    """A fixed VHD of *size* bytes, holes but for *data_regions* MiB spread over it."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(size)
        step = size // data_regions
        for i in range(data_regions):
            handle.seek(i * step)
            handle.write(bytes([i % 251 + 1]) * MIB)
    out = folder / "disk.vhd"
    vhd.convert(raw, out, overwrite=True)
    raw.unlink()
    return out


@pytest.mark.campaign
def test_campaign_a_64_gib_sparse_image(emulator, tmp_path):
    emulator.settings.replication_seconds = 0.5
    image = sparse_image(tmp_path / "img", 64 * GIB, 64)
    target = write_target(tmp_path, image)
    started = time.monotonic()
    result = reap(spawn(emulator, target, tmp_path / "run"), tmp_path / "run", timeout=1800)
    upload = result["report"].get("upload") or {}
    figures.record(
        "load: 64 GiB sparse image",
        method="campaign: 64 MiB of data in 64 places",
        runs=1,
        failures=int(result["code"] != 0),
        peak_rss_mib=round(result["rss_mib"], 1),
        seconds=round(time.monotonic() - started, 1),
        bytes_sent=upload.get("bytesSent"),
        data_bytes=upload.get("dataBytes"),
    )
    assert result["code"] == 0, result["err"]
    assert upload["bytesSent"] == upload["dataBytes"] == 64 * MIB + 512  # holes are not sent
    assert result["rss_mib"] < RSS_BOUND_MIB

"""Benchmark whole publishes against the bundled emulator (HTTPS ARM + Azurite on loopback).

Measures, in one run and against one emulator:

- a fresh publish of a sparse image (disk, upload, gallery, definition,
  version, replication to the target regions, cleanup);
- a rerun of the same publish (the baseline it is compared with is the fresh
  publish): it must write nothing and send no bytes;
- a resume: a publish killed (SIGKILL) during its upload, then rerun.

Each publish is the real command in a child process (`python -m
nixos_azure_publish --json publish ...`). Usage:

    .venv/bin/python bench/bench_publish.py --size-mib 1024 --data-mib 256
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the publisher helpers of the test suite

from nixos_azure_publish import vhd  # noqa: E402
from nixos_azure_publish.emulator.server import Emulator, run_emulator  # noqa: E402
from tests.helpers.publishing import run_publisher, wait_for_line, writes  # noqa: E402

MiB = 1024 * 1024


def make_image(folder: Path, *, size_mib: int, data_mib: int, seed: int) -> Path:
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    raw = folder / "disk.raw"
    with raw.open("wb") as handle:
        handle.truncate(size_mib * MiB)
        slots = rng.sample(range(size_mib), data_mib)
        for slot in slots:
            handle.seek(slot * MiB)
            handle.write(rng.randbytes(MiB))
    out = folder / "disk.vhd"
    vhd.convert(raw, out, overwrite=True)
    raw.unlink()
    return out


def write_target(folder: Path, image: Path) -> Path:
    target = {
        "name": "bench",
        "image": str(image),
        "resourceGroup": "bench-images",
        "location": "westeurope",
        "hyperVGeneration": "V2",
        "gallery": {"name": "bench_gallery"},
        "imageDefinition": {"name": "bench", "publisher": "b", "offer": "b", "sku": "b"},
        "version": {"targetRegions": ["westeurope", {"name": "northeurope", "replicas": 2}]},
    }
    path = folder / "target.json"
    path.write_text(json.dumps(target))
    return path


def timed_publish(
    emulator: Emulator, target: Path, state: Path
) -> tuple[float, dict[str, Any], int]:
    before = len(emulator.requests)
    began = time.monotonic()
    proc = run_publisher(emulator, target, state)
    out, err = proc.communicate()
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        sys.exit(f"publish failed ({proc.returncode}):\n{err[-3000:]}")
    return seconds, json.loads(out), len(writes(emulator, before))


def killed_during_upload(emulator: Emulator, target: Path, state: Path, *, after: float) -> None:
    proc = run_publisher(emulator, target, state)
    wait_for_line(proc, "upload.engine: uploading")
    time.sleep(after)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def print_table(rows: list[tuple[str, str]]) -> None:
    """The measurements as a Markdown table (bench/RESULTS.md keeps them)."""
    print("| measurement | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument(
        "--kill-after", type=float, default=1.5, help="seconds into the upload to SIGKILL"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as work_dir:
        work = Path(work_dir)
        rows: list[tuple[str, str]] = []
        with run_emulator() as emulator:
            folder = work / "a"
            folder.mkdir()
            image = make_image(folder, size_mib=args.size_mib, data_mib=args.data_mib, seed=1)
            target = write_target(folder, image)
            fresh, report, fresh_writes = timed_publish(emulator, target, work / "state-a")
            rerun, again, rerun_writes = timed_publish(emulator, target, work / "state-a")
            assert again["status"] == "already-published", again
            upload = report["upload"]
            steps = {s["name"]: s["seconds"] for s in report["steps"]}
            rows += [
                ("image", f"{args.size_mib} MiB fixed VHD, {args.data_mib} MiB data"),
                ("fresh publish (wall, incl. interpreter start)", f"{fresh:.2f} s"),
                ("  of which upload step", f"{steps['upload']:.2f} s"),
                ("  of which replication wait", f"{steps['replicate']:.2f} s"),
                ("  bytes sent / data bytes", f"{upload['bytesSent']:,} / {upload['dataBytes']:,}"),
                ("  ARM write requests", str(fresh_writes)),
                ("rerun (already published)", f"{rerun:.2f} s"),
                ("  ARM write requests / bytes sent", f"{rerun_writes} / 0"),
                ("rerun / fresh", f"{rerun / fresh:.2f}"),
            ]
            folder = work / "b"
            folder.mkdir()
            image_b = make_image(folder, size_mib=args.size_mib, data_mib=args.data_mib, seed=2)
            target_b = write_target(folder, image_b)
            # The upload engine flushes its journal every second: a kill later than
            # that leaves a journal, and the rerun resumes instead of restarting.
            after = args.kill_after
            killed_during_upload(emulator, target_b, work / "state-b", after=after)
            resumed, report_b, _ = timed_publish(emulator, target_b, work / "state-b")
            sent = report_b["upload"]["bytesSent"] if report_b["upload"] else 0
            total = report_b["upload"]["dataBytes"] if report_b["upload"] else 0
            rows += [
                (f"resume after SIGKILL {after:.1f} s into the upload", f"{resumed:.2f} s"),
                ("  bytes sent by the resumed run / data bytes", f"{sent:,} / {total:,}"),
                ("resume / fresh", f"{resumed / fresh:.2f}"),
            ]
        print_table(rows)


if __name__ == "__main__":
    main()

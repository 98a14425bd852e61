"""Benchmark a publish of several targets against publishing each alone (bundled emulator).

Four targets over two distinct images (a and b share one, c and d the other), in
one run and against one emulator:

- each target published alone, one after the other (fresh resource groups);
- the four in one ``publish`` (fresh resource groups again, ``--jobs 4``).

Reported: the wall time of each, the number of uploads (write grants to upload
disks, from the emulator's request log) and the ratio of the four-target run to
the slowest single publish. Budget (issue "several targets in one run"): 2 uploads
and at most 1.3x. Each publish is the real command in a child process. Usage:

    .venv/bin/python bench/bench_several.py --size-mib 1024 --data-mib 128
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_publish import make_image, print_table

from nixos_azure_publish.emulator.server import Emulator, run_emulator
from tests.helpers.publishing import env_for, grants

TARGETS = (("a", 1), ("b", 1), ("c", 2), ("d", 2))


def write_target(folder: Path, image: Path, name: str, group: str) -> Path:
    target = {
        "name": name,
        "image": str(image),
        "resourceGroup": group,
        "location": "westeurope",
        "hyperVGeneration": "V2",
        "gallery": {"name": "bench_gallery"},
        "imageDefinition": {"name": name, "publisher": "b", "offer": "b", "sku": name},
        "version": {"targetRegions": ["westeurope", {"name": "northeurope", "replicas": 2}]},
    }
    path = folder / f"{group}-{name}.json"
    path.write_text(json.dumps(target))
    return path


def timed(emulator: Emulator, args: list[str], state: Path) -> tuple[float, dict[str, Any], int]:
    env = env_for(emulator)
    command = [
        sys.executable, "-m", "nixos_azure_publish", "--json", "publish", *args,
        "--state-dir", str(state),
    ]  # fmt: skip
    before = len(emulator.requests)
    began = time.monotonic()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - began
    if proc.returncode != 0:
        sys.exit(f"publish failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, json.loads(proc.stdout), len(grants(emulator, before))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-several-") as work_dir:
        work = Path(work_dir)
        images = {}
        for seed in (1, 2):
            folder = work / f"img{seed}"
            folder.mkdir()
            images[seed] = make_image(
                folder, size_mib=args.size_mib, data_mib=args.data_mib, seed=seed
            )
        rows: list[tuple[str, str]] = [
            ("images", f"2 x {args.size_mib} MiB fixed VHD, {args.data_mib} MiB data each"),
        ]
        with run_emulator() as emulator:
            single: dict[str, float] = {}
            single_uploads = 0
            for name, seed in TARGETS:
                path = write_target(work, images[seed], name, f"single-{name}")
                seconds, _, uploads = timed(emulator, ["--config", str(path)], work / "state-1")
                single[name] = seconds
                single_uploads += uploads
                rows.append((f"target {name} alone (wall)", f"{seconds:.2f} s"))
            paths = [write_target(work, images[s], n, "several") for n, s in TARGETS]
            config_args = [a for p in paths for a in ("--config", str(p))]
            several, report, uploads = timed(
                emulator, [*config_args, "--jobs", str(args.jobs)], work / "state-2"
            )
            assert report["status"] == "published", report["status"]
        slowest = max(single.values())
        in_run = max(t["seconds"] for t in report["targets"])
        rows += [
            ("uploads, the four alone", str(single_uploads)),
            (f"the four in one run, --jobs {args.jobs} (wall)", f"{several:.2f} s"),
            ("  uploads", f"{uploads} (report: {report['uploads']})"),
            ("  slowest target's own time in that run", f"{in_run:.2f} s"),
            ("one run / slowest single publish", f"{several / slowest:.2f}x"),
            ("one run / sum of the single publishes", f"{several / sum(single.values()):.2f}x"),
        ]
    print_table(rows)


if __name__ == "__main__":
    main()

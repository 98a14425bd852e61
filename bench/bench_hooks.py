"""How long Hydra and Nix wait for the hooks: wall time of a whole process, interpreter included.

Run from the repository root:

    .venv/bin/python bench/bench_hooks.py --runs 20

Each command runs as its callers run it, a fresh process, --runs times,
interleaved; the median and the slowest are reported. Every run enqueues into a
fresh spool, so each pays for creating the spool's directories and for the
fsyncs of a new job (the slowest path a hook has).

  python -c pass          the interpreter alone (the floor)
  hydra-hook              the installed script with a Hydra build record that matches a target
  post-build-hook         the installed script with OUT_PATHS holding one image
  --help (whole CLI)      what a hook would cost if it loaded the whole CLI and the Azure SDK

Exits 1 when a hook's median reaches the budget (0.5 s).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET = 0.5


def script() -> str:
    """The installed `nixos-azure-publish` next to this interpreter."""
    path = Path(sys.executable).parent / "nixos-azure-publish"
    if not path.exists():
        sys.exit(f"{path} is missing: install the package first (bash scripts/test does)")
    return str(path)


def setup(work: Path) -> tuple[Path, Path, Path]:
    image = work / "store" / ("a" * 32 + "-nixos-image-azure")
    image.mkdir(parents=True)
    (image / "nixos.vhd").write_bytes(b"\0" * 512)
    targets = work / "targets.json"
    targets.write_text(
        json.dumps(
            {
                "targets": {
                    "gen2": {
                        "config": str(work / "gen2.json"),
                        "hydraJobs": ["nixos:release-25.05:azure.x86_64-linux"],
                    }
                }
            }
        )
    )
    record = work / "hydra.json"
    record.write_text(
        json.dumps(
            {
                "event": "buildFinished",
                "build": 1,
                "finished": True,
                "project": "nixos",
                "jobset": "release-25.05",
                "job": "azure.x86_64-linux",
                "drvPath": "/nix/store/" + "d" * 32 + "-nixos-image-azure.drv",
                "buildStatus": 0,
                "outputs": [{"name": "out", "path": str(image)}],
                "products": [],
                "metrics": [],
            }
        )
    )
    return image, targets, record


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    exe = script()
    env = dict(os.environ)
    with tempfile.TemporaryDirectory(prefix="bench-hooks-") as tmp:
        work = Path(tmp)
        image, targets, record = setup(work)
        commands = {
            "python -c pass": lambda _: [sys.executable, "-c", "pass"],
            "hydra-hook": lambda spool: [
                exe,
                "hydra-hook",
                "--hydra-json",
                str(record),
                "--spool",
                spool,
                "--targets",
                str(targets),
            ],
            "post-build-hook": lambda spool: [exe, "post-build-hook", "--spool", spool],
            "--help (whole CLI)": lambda _: [exe, "--help"],
        }
        env["OUT_PATHS"] = str(image)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for run in range(args.runs):
            for name, make in commands.items():
                spool = str(work / f"spool-{run}-{name.split()[0]}")
                times[name].append(timed(make(spool), env))
                if "hook" in name:
                    assert any((Path(spool) / "queue").iterdir()), f"{name} queued nothing"
    print(f"| command | median s | slowest s |  (runs: {args.runs})")
    print("|---|---|---|")
    failed = False
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.3f} | {max(values):.3f} |")
        failed |= "hook" in name and median >= BUDGET
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

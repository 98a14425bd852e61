"""Benchmark: inspect + extents of a large sparse image, and conversion against qemu-img.

Builds a sparse raw disk (default 64 GiB with 1 GiB of data in 1 MiB pieces
at seeded random offsets, a tenth of their 4 KiB blocks zero), then measures
in one run:

- ``inspect`` of the raw disk and of the fixed VHD, and ``data_extents``
  (SEEK_DATA/SEEK_HOLE plus zero-sector trimming) of the VHD;
  ``qemu-img map`` (qemu's own allocation map, no zero trimming) for scale;
- conversion raw -> fixed VHD: ours (``vhd.convert``, in a child process)
  against ``qemu-img convert -f raw -O vpc -o subformat=fixed,force_size``,
  alternating, each run's output deleted before the next; wall time and peak
  RSS of the child, and the ratio of the medians.

Both converters flush the output once (qemu-img: fdatasync; ours: fsync).
Timings are with the input in the page cache (it was just written).

Usage: .venv/bin/python bench/bench_vhd.py [--size-gib 64] [--data-mib 1024] [--runs 3] [--dir D]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from nixos_azure_publish import vhd

if TYPE_CHECKING:
    from collections.abc import Callable

P = ParamSpec("P")
T = TypeVar("T")
MIB = 1 << 20
GIB = 1 << 30

_CONVERT_CHILD = """
import sys
from pathlib import Path
from nixos_azure_publish import vhd
vhd.convert(Path(sys.argv[1]), Path(sys.argv[2]))
"""


def make_image(path: Path, size: int, data: int, seed: int = 1) -> None:
    rng = random.Random(seed)  # noqa: S311 - a reproducible layout, not a secret
    pieces = data // MIB
    slots = rng.sample(range(size // MIB), pieces)
    with path.open("wb") as f:
        f.truncate(size)
        for slot in sorted(slots):
            block = bytearray(os.urandom(MIB))
            for at in range(0, MIB, 4096):
                if rng.random() < 0.1:  # a tenth of the 4 KiB blocks are zero
                    block[at : at + 4096] = bytes(4096)
            f.seek(slot * MIB)
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def timed(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def run_child(argv: list[str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of a child process."""
    start = time.perf_counter()
    pid = os.posix_spawn(argv[0], argv, os.environ)
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        msg = f"{argv} failed"
        raise RuntimeError(msg)
    return seconds, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=64)
    parser.add_argument("--data-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        print("qemu-img is not installed (Debian: qemu-utils)", file=sys.stderr)
        return 1
    folder = Path(tempfile.mkdtemp(prefix="bench-vhd-", dir=args.dir))
    try:
        return _bench(folder, qemu_img, args)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _bench(folder: Path, qemu_img: str, args: argparse.Namespace) -> int:
    size, data = args.size_gib * GIB, args.data_mib * MIB
    raw = folder / "disk.raw"
    seconds, _ = timed(make_image, raw, size, data)
    print(f"made {raw.name}: {size // GIB} GiB sparse, {data // MIB} MiB data, {seconds:.1f} s")

    results: dict[str, object] = {"size": size, "data": data}
    t_inspect_raw, info = timed(vhd.inspect, raw)
    assert info.format == "raw"
    t_extents_raw, raw_extents = timed(vhd.data_extents, raw)  # input in the page cache

    ours_out, qemu_out = folder / "ours.vhd", folder / "qemu.vhd"
    qemu_argv = [qemu_img, "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed,force_size"]
    ours_times, ours_rss, qemu_times, qemu_rss = [], [], [], []
    for _ in range(args.runs):
        for out in (ours_out, qemu_out):
            out.unlink(missing_ok=True)
        os.sync()
        s, rss = run_child([sys.executable, "-c", _CONVERT_CHILD, str(raw), str(ours_out)])
        ours_times.append(s)
        ours_rss.append(rss)
        os.sync()
        s, rss = run_child([*qemu_argv, str(raw), str(qemu_out)])
        qemu_times.append(s)
        qemu_rss.append(rss)

    t_inspect_vhd, info = timed(vhd.inspect, ours_out)
    assert info.azure_ready, info.problems
    # Our converter advises the kernel to write back and drop the output's pages
    # as it goes, so this first scan reads the data from disk; the second from cache.
    t_extents_cold, extents = timed(vhd.data_extents, ours_out)
    t_extents_warm, _ = timed(vhd.data_extents, ours_out)
    t_map, _ = timed(
        subprocess.run,
        [qemu_img, "map", "--output=json", "-f", "vpc", str(qemu_out)],
        capture_output=True,
        check=True,
    )
    same = _same_data(ours_out, qemu_out, extents)
    ours_median, qemu_median = statistics.median(ours_times), statistics.median(qemu_times)
    results.update(
        inspect_raw_s=t_inspect_raw,
        inspect_vhd_s=t_inspect_vhd,
        extents_raw_warm_s=t_extents_raw,
        extents_vhd_cold_s=t_extents_cold,
        extents_vhd_warm_s=t_extents_warm,
        extents=len(extents),
        data_bytes=vhd.data_bytes(extents),
        qemu_map_s=t_map,
        ours_convert_s=ours_times,
        qemu_convert_s=qemu_times,
        ours_rss_kib=max(ours_rss),
        qemu_rss_kib=max(qemu_rss),
        ratio_qemu_over_ours=qemu_median / ours_median,
        outputs_identical_on_data=same,
        ours_allocated=ours_out.stat().st_blocks * 512,
        qemu_allocated=qemu_out.stat().st_blocks * 512,
    )
    assert vhd.data_bytes(raw_extents) + 512 == vhd.data_bytes(extents)
    print(json.dumps(results, indent=2))
    ms = 1e3
    rows = [
        ("inspect, raw input", f"{t_inspect_raw * ms:.1f} ms", ""),
        ("inspect, fixed VHD", f"{t_inspect_vhd * ms:.1f} ms", ""),
        (
            "inspect + data extents, fixed VHD (cache cold / warm)",
            f"{t_inspect_vhd + t_extents_cold:.2f} s / {t_inspect_vhd + t_extents_warm:.2f} s",
            f"`qemu-img map` (no zero trimming): {t_map:.2f} s",
        ),
        ("data extents, raw input (warm)", f"{t_extents_raw:.2f} s", ""),
        (
            "extents / data bytes",
            f"{len(extents):,} / {vhd.data_bytes(extents) / MIB:.1f} MiB",
            "",
        ),
        (
            f"convert raw -> fixed VHD, median of {args.runs}",
            f"{ours_median:.2f} s",
            f"{qemu_median:.2f} s",
        ),
        (
            "peak RSS of the converter",
            f"{max(ours_rss) / 1024:.0f} MiB",
            f"{max(qemu_rss) / 1024:.0f} MiB",
        ),
        (
            "allocated output",
            f"{ours_out.stat().st_blocks * 512 / MIB:.0f} MiB",
            f"{qemu_out.stat().st_blocks * 512 / MIB:.0f} MiB",
        ),
    ]
    print()
    print("| measurement | ours | qemu-img |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    print(
        f"convert speed ratio, qemu-img time / our time (>= 1: ours as fast or faster): "
        f"{qemu_median / ours_median:.2f}"
    )
    print(f"outputs identical in their data: {same}")
    return 0


def _same_data(ours: Path, theirs: Path, extents: list[vhd.Extent]) -> bool:
    """Compare the data both outputs hold (everything else is holes in ours)."""
    with ours.open("rb") as a, theirs.open("rb") as b:
        for extent in extents:
            if extent.offset >= ours.stat().st_size - 512:
                continue  # the footers differ in timestamp, creator and id
            a.seek(extent.offset)
            b.seek(extent.offset)
            if a.read(extent.length) != b.read(extent.length):
                return False
    return vhd.data_extents(theirs)[:-1] == extents[:-1]


if __name__ == "__main__":
    raise SystemExit(main())

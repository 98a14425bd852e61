"""Upload benchmark against Azurite on loopback: ours vs the SDK, azure-cli and an ideal client.

Run from the repository root (Azurite from `npm ci`, qemu-img not needed):

    .venv/bin/python bench/bench_upload.py --repeats 3

Inputs (generated once into --workdir, sparse):
  4g-25   4 GiB fixed VHD, 25 % data in 4 MiB runs spread evenly
  4g-1    4 GiB fixed VHD, 1 % data in small (4-16 KiB) scattered runs
  64g-1g  64 GiB fixed VHD holding 1 GiB (4 MiB runs spread evenly)
  1g-1g   1 GiB fixed VHD, all data (the baseline for 64g-1g)

Clients, each in its own child process (peak RSS from wait4), each run against
a fresh Azurite with its own storage and a page blob pre-created like a disk's:
  ours    nixos_azure_publish.engine.upload_vhd (defaults: Azure's CRC64 per request,
          verify ranges, journal)
  sdk     azure-storage-blob upload_blob(..., blob_type="PageBlob", max_concurrency=8)
  az      `az storage blob upload --type page` (Debian azure-cli), when installed
  ideal   PUTs the same data ranges from memory with 8 keep-alive connections, no
          checksums: the ceiling of Azurite + loopback on this machine
  ours-md5, ours-nosum    ours with Content-MD5 instead of CRC64 / with no checksum
  ideal-md5               the ideal client with Content-MD5: what MD5 costs here
  ideal-read              the ideal client reading each range from the file as it sends
                          it: the ceiling for any client that uploads a file

Prints median wall time of the upload itself (the child's own clock, process
start-up excluded; for az the whole process), bytes sent, peak RSS and ratios.

--pin puts Azurite (all its threads) on the last CPU and each client on the
others, as when the storage service runs elsewhere: the client's CPU is then
not taken from the service, and the ratios show whether a client keeps up with
it. Without --pin both share every CPU, and a client's CPU cost shows in the
wall clock.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from azure.storage.blob import (  # noqa: E402
    BlobClient,
    BlobSasPermissions,
    BlobServiceClient,
    generate_blob_sas,
)

from nixos_azure_publish import vhd  # noqa: E402
from nixos_azure_publish.emulator.azurite import ACCOUNT, ACCOUNT_KEY, run_azurite  # noqa: E402
from nixos_azure_publish.upload import engine, limits, transport  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB

IMAGES = {
    "4g-25": "4 GiB, 25 % data in 4 MiB runs",
    "4g-1": "4 GiB, 1 % data in 4-16 KiB scattered runs",
    "64g-1g": "64 GiB holding 1 GiB in 4 MiB runs",
    "1g-1g": "1 GiB, all data",
}


# --------------------------------------------------------------------------- inputs


def _runs(name: str, rng: random.Random) -> tuple[int, list[tuple[int, int]]]:
    if name == "4g-25":
        return 4 * GIB, [(i * 16 * MIB, 4 * MIB) for i in range(256)]
    if name == "4g-1":
        target = 4 * GIB // 100
        runs, total = [], 0
        while total < target:
            length = 4096 * rng.randrange(1, 5)
            runs.append((rng.randrange(0, (4 * GIB - 16384) // 4096) * 4096, length))
            total += length
        return 4 * GIB, runs
    if name == "64g-1g":
        return 64 * GIB, [(i * 256 * MIB, 4 * MIB) for i in range(256)]
    if name == "1g-1g":
        return GIB, [(i * 4 * MIB, 4 * MIB) for i in range(256)]
    raise SystemExit(f"unknown image {name}")


def make_image(workdir: Path, name: str) -> Path:
    path = workdir / f"{name}.vhd"
    if path.exists():
        return path
    rng = random.Random(name)  # noqa: S311 - benchmark data
    virtual, runs = _runs(name, rng)
    pool = rng.randbytes(64 * MIB)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, virtual + 512)
        for offset, length in runs:
            start = rng.randrange(0, len(pool) - length)
            os.pwrite(fd, pool[start : start + length], offset)
        os.pwrite(fd, vhd.build_footer(virtual), virtual)
    finally:
        os.close(fd)
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- clients, one per child


_CPU_AT_START = [0.0]


def _start_clocks() -> float:
    """Start of the measured part of a child: its wall clock; its CPU clock is kept."""
    _CPU_AT_START[0] = time.process_time()
    return time.perf_counter()


def child_ours(image: Path, sas: str, concurrency: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as journal:
        started = _start_clocks()
        result = engine.upload_vhd(
            path=image, sas_url=sas, concurrency=concurrency, journal_dir=Path(journal)
        )
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "bytes_sent": result.bytes_sent, "verified": result.verified}


def child_sdk(image: Path, sas: str, concurrency: int) -> dict[str, object]:
    client = BlobClient.from_blob_url(sas)
    started = _start_clocks()
    with image.open("rb") as handle:
        client.upload_blob(
            handle,
            blob_type="PageBlob",
            length=image.stat().st_size,
            max_concurrency=concurrency,
            overwrite=True,
        )
    return {"seconds": time.perf_counter() - started}


def child_ideal(
    image: Path, sas: str, concurrency: int, *, md5: bool = False, read: bool = False
) -> dict[str, object]:
    extents = vhd.data_extents(image, max_extent=limits.MAX_PAGE_WRITE)
    fd = os.open(image, os.O_RDONLY)
    # From memory (read before the clock starts), or read from the file as it is sent.
    payloads: list[tuple[int, bytes | int]] = [
        (e.offset, e.length if read else os.pread(fd, e.length, e.offset)) for e in extents
    ]
    parts = urlsplit(sas)
    target = f"{parts.path}?comp=page&{parts.query}"
    queue = iter(payloads)
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80)
        while True:
            with lock:
                item = next(queue, None)
            if item is None:
                break
            offset, payload = item
            data = os.pread(fd, payload, offset) if isinstance(payload, int) else payload
            headers = {
                "x-ms-page-write": "update",
                "x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
                "x-ms-version": "2021-08-06",
                "Content-Length": str(len(data)),
            }
            if md5:
                digest = hashlib.md5(data).digest()  # noqa: S324 - what the service checks
                headers["Content-MD5"] = base64.b64encode(digest).decode()
            conn.request("PUT", target, body=data, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                errors.append(f"{response.status} {response.reason}")
        conn.close()

    started = _start_clocks()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    os.close(fd)
    if errors:
        raise SystemExit(f"ideal client: {errors[:3]}")
    return {"seconds": seconds, "bytes_sent": sum(e.length for e in extents)}


def _child_ours_checksum(
    checksum: transport.Checksum, image: Path, sas: str, concurrency: int
) -> dict[str, object]:
    started = _start_clocks()
    result = engine.upload_vhd(
        path=image, sas_url=sas, concurrency=concurrency, use_journal=False, checksum=checksum
    )
    return {"seconds": time.perf_counter() - started, "bytes_sent": result.bytes_sent}


def child_ideal_md5(image: Path, sas: str, concurrency: int) -> dict[str, object]:
    return child_ideal(image, sas, concurrency, md5=True)


def child_ideal_read(image: Path, sas: str, concurrency: int) -> dict[str, object]:
    return child_ideal(image, sas, concurrency, read=True)


CHILDREN: dict[str, Callable[[Path, str, int], dict[str, object]]] = {
    "ours": child_ours,
    "ours-md5": partial(_child_ours_checksum, "md5"),
    "ours-nosum": partial(_child_ours_checksum, "none"),
    "sdk": child_sdk,
    "ideal": child_ideal,
    "ideal-md5": child_ideal_md5,
    "ideal-read": child_ideal_read,
}


# --------------------------------------------------------------------------- the parent


def _sas(container: str, blob: str) -> str:
    return generate_blob_sas(
        ACCOUNT,
        container,
        blob,
        account_key=ACCOUNT_KEY,
        permission=BlobSasPermissions(read=True, write=True, create=True),
        expiry=datetime.now(UTC) + timedelta(hours=2),
    )


def _run_child(argv: list[str], env: dict[str, str] | None = None) -> tuple[dict[str, object], int]:
    """Run a child; its JSON line and its peak RSS in KiB."""
    env = dict(env or os.environ)
    if PLACEMENT.client is not None:
        env[_CPUS_VARIABLE] = ",".join(map(str, sorted(PLACEMENT.client)))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{argv[:4]} failed ({proc.returncode}): {err.decode()[-2000:]}")
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    data = json.loads(lines[-1]) if lines else {}
    return data, int(data.pop("maxrss_kib", 0))


class _Placement:
    """Which CPUs Azurite and the clients run on; None: anywhere (the default)."""

    server: set[int] | None = None
    client: set[int] | None = None

    def pin(self) -> None:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least 2 CPUs")
        self.server, self.client = {cpus[-1]}, set(cpus[:-1])

    def place_server(self, pid: int) -> None:
        """Move every thread of *pid* to the server's CPUs (threads it starts later
        inherit the placement)."""
        if self.server is None:
            return
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task.name), self.server)


PLACEMENT = _Placement()
_CPUS_VARIABLE = "BENCH_CLIENT_CPUS"
"""Tells a child (and what it starts) which CPUs to run on."""


def _place_self() -> None:
    cpus = os.environ.get(_CPUS_VARIABLE)
    if cpus:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})


# RAM-backed on purpose; TemporaryDirectory makes a private directory inside.
SHM = Path("/dev/shm")  # noqa: S108
AZURITE_DIR = SHM if SHM.is_dir() else None


def measure(client: str, image: Path, concurrency: int, *, check: bool) -> dict[str, object]:
    """One upload of *image* by *client* into a fresh Azurite; seconds, bytes, RSS."""
    size = image.stat().st_size
    # Azurite's storage in RAM: disk writeback would add noise that no client controls.
    with (
        tempfile.TemporaryDirectory(prefix="bench-azurite-", dir=AZURITE_DIR) as location,
        run_azurite(location=Path(location)) as azurite,
    ):
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        container = service.create_container("disks")
        blob = container.get_blob_client("disk.vhd")
        if client != "sdk":  # the SDK creates the blob itself; that is its way
            blob.create_page_blob(size)
        sas = f"{blob.url}?{_sas('disks', 'disk.vhd')}"
        azurite_pid = _pid_of(location)
        PLACEMENT.place_server(azurite_pid)
        if client == "az":
            started = time.perf_counter()
            argv = [
                "az", "storage", "blob", "upload", "--only-show-errors",
                "--type", "page", "--file", str(image), "--overwrite",
                "--blob-url", sas, "--max-connections", "8",
            ]  # fmt: skip
            # Telemetry off: nothing may leave the machine.
            env = dict(os.environ, AZURE_CORE_COLLECT_TELEMETRY="false", AZURE_CORE_NO_COLOR="1")
            data, rss = _run_child([sys.executable, __file__, "--wrap", json.dumps(argv)], env=env)
            data["seconds"] = time.perf_counter() - started
        else:
            server_cpu = _process_cpu(azurite_pid)
            data, rss = _run_child(
                [sys.executable, __file__, "--child", client, str(image), sas, str(concurrency)]
            )
            data["server_cpu"] = _process_cpu(azurite_pid) - server_cpu
        stored = sum(
            (r.end or 0) + 1 - (r.start or 0) for r in blob.list_page_ranges() if not r.cleared
        )
        data.setdefault("bytes_sent", stored)
        data["stored"] = stored
        data["rss_mib"] = rss / 1024
        if check:
            data["identical"] = _same_content(blob, image)
    return data


def _pid_of(location: str) -> int:
    """The Azurite process serving *location* (its command line names it)."""
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if location.encode() in argv and any(b"azurite" in a for a in argv):
                    return int(proc.name)
    raise SystemExit(f"no Azurite process found for {location}")


def _process_cpu(pid: int) -> float:
    """User + system CPU seconds of *pid* so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _same_content(blob: BlobClient, image: Path) -> bool:
    """Whether the blob's bytes equal the file's, checked in windows of at most 64 MiB.

    Windows cover the data extents and the gaps between nearby ones (one request
    per small extent would take Azurite minutes); the holes beyond are covered
    by the page-range check.
    """
    windows: list[list[int]] = []
    for extent in vhd.data_extents(image, max_extent=64 * MIB):
        end = extent.offset + extent.length
        if windows and end - windows[-1][0] <= 64 * MIB:
            windows[-1][1] = end
        else:
            windows.append([extent.offset, end])
    with image.open("rb") as handle:
        for start, end in windows:
            remote = blob.download_blob(offset=start, length=end - start).readall()
            if remote != os.pread(handle.fileno(), end - start, start):
                return False
    return True


def _fmt_bytes(n: float) -> str:
    return f"{n / MIB:,.1f} MiB"


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", default=",".join(IMAGES))
    parser.add_argument(
        "--clients", default="ours,ours-md5,ours-nosum,sdk,az,ideal,ideal-read,ideal-md5"
    )
    parser.add_argument("--concurrency", type=int, default=limits.DEFAULT_CONCURRENCY)
    parser.add_argument("--sweep", default="", help="e.g. 1,2,4,8,16: our time per concurrency")
    parser.add_argument("--sweep-image", default="4g-25")
    parser.add_argument(
        "--sdk-on-large",
        action="store_true",
        help="also run the SDK and az on 64g-1g (they read all 64 GiB: minutes per run)",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nap-bench")
    parser.add_argument("--json", type=Path, help="also write all measurements here")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run Azurite on the last CPU and the clients on the others",
    )
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    if args.pin:
        PLACEMENT.pin()
        print(f"Azurite on CPU {PLACEMENT.server}, clients on CPUs {PLACEMENT.client}")
    args.workdir.mkdir(parents=True, exist_ok=True)
    clients = args.clients.split(",")
    if "az" in clients and shutil.which("az") is None:
        print("azure-cli (az) not installed: skipping it")
        clients.remove("az")
    report: dict[str, dict[str, list[dict[str, object]]]] = {}
    for name in args.images.split(","):
        image = make_image(args.workdir, name)
        extents = vhd.data_extents(image)
        data_bytes = vhd.data_bytes(extents)
        print(f"\n== {name}: {IMAGES[name]}; file {_fmt_bytes(image.stat().st_size)}, "
              f"data {_fmt_bytes(data_bytes)} in {len(extents)} extents")  # fmt: skip
        runs: dict[str, list[dict[str, object]]] = {c: [] for c in clients}
        for repeat in range(args.repeats):
            for client in clients:  # interleaved, so that drift hits every client alike
                if client in {"sdk", "az"} and name == "64g-1g" and not args.sdk_on_large:
                    continue
                result = measure(client, image, args.concurrency, check=repeat == 0)
                result["data_bytes"] = data_bytes
                runs[client].append(result)
                print(f"  {client:6} run {repeat + 1}: {result['seconds']:.2f} s, "
                      f"sent {_fmt_bytes(float(result['bytes_sent']))}, "  # type: ignore[arg-type]
                      f"RSS {result['rss_mib']:.0f} MiB"
                      + ("" if result.get("identical", True) else "  CONTENT DIFFERS"))  # fmt: skip
        report[name] = runs
        _summary(name, runs, data_bytes)
    if "64g-1g" in report and "1g-1g" in report:
        big = _median(report["64g-1g"]["ours"])
        small = _median(report["1g-1g"]["ours"])
        print(f"\nours, 64 GiB holding 1 GiB vs 1 GiB holding 1 GiB: {big / small:.2f}x")
    if args.sweep:
        _sweep(args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


def _sweep(args: argparse.Namespace) -> None:
    image = make_image(args.workdir, args.sweep_image)
    print(f"\n== concurrency sweep, ours on {args.sweep_image}")
    for conc in (int(c) for c in args.sweep.split(",")):
        times = [
            float(measure("ours", image, conc, check=False)["seconds"])  # type: ignore[arg-type]
            for _ in range(args.repeats)
        ]
        print(f"  concurrency {conc:2}: median {statistics.median(times):.2f} s  {times}")


def _median(runs: list[dict[str, object]]) -> float:
    return statistics.median(float(r["seconds"]) for r in runs)  # type: ignore[arg-type]


def _summary(name: str, runs: dict[str, list[dict[str, object]]], data_bytes: int) -> None:
    print(f"  -- {name}: median seconds, bytes sent / data bytes, peak RSS, median CPU "
          "seconds of the client / of Azurite during the upload")  # fmt: skip
    ours = _median(runs["ours"]) if runs.get("ours") else None
    for client, results in runs.items():
        if not results:
            continue
        median = _median(results)
        sent = max(float(r["bytes_sent"]) for r in results)  # type: ignore[arg-type]
        rss = max(float(r["rss_mib"]) for r in results)  # type: ignore[arg-type]
        ratio = f"ours / {client} {ours / median:.2f}x" if ours and client != "ours" else ""
        cpu = _cpu_text(results)
        print(f"  {client:10} {median:7.2f} s  {sent / data_bytes:6.3f}  {rss:6.0f} MiB  "
              f"{cpu}  {ratio}")  # fmt: skip


def _cpu_text(results: list[dict[str, object]]) -> str:
    if not all("cpu" in r and "server_cpu" in r for r in results):
        return " " * 13
    client = statistics.median(float(r["cpu"]) for r in results)  # type: ignore[arg-type]
    server = statistics.median(float(r["server_cpu"]) for r in results)  # type: ignore[arg-type]
    return f"{client:5.2f} / {server:5.2f}"


def _child_main(argv: list[str]) -> None:
    _place_self()
    client, image, sas, concurrency = argv
    data = CHILDREN[client](Path(image), sas, int(concurrency))
    data["cpu"] = time.process_time() - _CPU_AT_START[0]
    data["maxrss_kib"] = _peak_rss_kib()
    print(json.dumps(data))


def _peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM).

    Not getrusage: on Linux its ru_maxrss survives exec, so a child forked from
    a large parent would report the parent's size.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _wrap_main(argv_json: str) -> None:
    """Run a foreign command and report its peak RSS (from wait4)."""
    argv = json.loads(argv_json)
    _place_self()  # the command inherits it
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{argv[0]} failed")
    print(json.dumps({"maxrss_kib": usage.ru_maxrss}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child_main(sys.argv[2:])
    elif len(sys.argv) > 1 and sys.argv[1] == "--wrap":
        _wrap_main(sys.argv[2])
    else:
        with contextlib.suppress(KeyboardInterrupt):
            main()

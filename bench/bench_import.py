"""Import from an https:// URL vs upload of the same file from local disk, in the same run.

Run: .venv/bin/python bench/bench_import.py --size-mib 1024 --data-mib 256 --runs 5 --floor

The image (a sparse fixed VHD, --data-mib of random data in 4 MiB runs spread
evenly) is served over HTTPS from loopback by a threaded HTTP/1.1 server in its
own process, as a web server or a blob service serves it: keep-alive, byte
ranges (``Accept-Ranges: bytes``, 206), a strong ETag. ``--no-ranges`` serves it
as a server without ranges does (one GET of the whole file). The emulator (its
blob front and Azurite) also runs in a process of its own, as Azure runs
elsewhere: in this one it would share the interpreter lock with the client.
Each run writes the image into a fresh upload disk twice, alternating the
order: ``upload`` (the native engine reading the local file) and the import's
stream (only non-zero sectors written). Prints the median wall time of each,
the ratio, the CPU seconds of the client, the HTTPS server and the emulator, and the bytes
each sent against the data bytes. ``--floor`` also times reading the URL alone
(four ranged GETs into reused buffers, nothing else): no stream can be faster.
``--sha256`` has the stream check the file's sha256. Target: the stream sends exactly the data
bytes and takes at most 1.3x the upload.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import http.server
import multiprocessing
import os
import random
import resource
import ssl
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nixos_azure_publish import vhd
from nixos_azure_publish.emulator.server import run_emulator
from nixos_azure_publish.emulator.testing import clients
from nixos_azure_publish.upload.engine import upload_vhd
from nixos_azure_publish.upload.stream import PIECE, READERS, UrlImage, probe, stream_into

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

MiB = 1024 * 1024


def make_image(folder: Path, size_mib: int, data_mib: int) -> Path:
    raw = folder / "disk.raw"
    rng = random.Random(7)  # noqa: S311 - test data
    with raw.open("wb") as handle:
        handle.truncate(size_mib * MiB)
        runs = data_mib // 4
        step = (size_mib * MiB) // max(runs, 1)
        for i in range(runs):
            handle.seek(i * step)
            handle.write(rng.randbytes(4 * MiB))
    out = folder / "disk.vhd"
    vhd.convert(raw, out, overwrite=True)
    raw.unlink()
    return out


class Handler(http.server.BaseHTTPRequestHandler):
    """A static file server: HTTP/1.1 keep-alive, single byte ranges (advertised unless
    --no-ranges), a strong ETag."""

    served: Path
    ranges: bool
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        del format, args

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"bench"')
        if self.ranges:
            self.send_header("Accept-Ranges", "bytes")
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self) -> None:
        self._headers(200, self.served.stat().st_size, {})

    def do_GET(self) -> None:
        size = self.served.stat().st_size
        lo, hi = 0, size - 1
        wanted = self.headers.get("Range")
        if wanted:
            lo, hi = (int(x) for x in wanted.removeprefix("bytes=").split("-"))
            self._headers(206, hi - lo + 1, {"Content-Range": f"bytes {lo}-{hi}/{size}"})
        else:
            self._headers(200, size, {})
        # Read into one reused buffer and write it whole, as a web server's sendfile
        # does without the copies (TLS in Python cannot use sendfile).
        buffer = bytearray(4 * MiB)
        view = memoryview(buffer)
        with self.served.open("rb", buffering=0) as handle:
            handle.seek(lo)
            left = hi - lo + 1
            while left:
                got = handle.readinto(view[: min(left, len(buffer))])
                if not got:
                    break
                self.wfile.write(view[:got])
                left -= got


def serve(image: Path, cert: Path, ranges: bool, ready: Any) -> None:  # noqa: ANN401, FBT001
    """Serve *image* over HTTPS; put the port on *ready*."""
    handler = type("H", (Handler,), {"served": image, "ranges": ranges})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.parent / "emulator-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    ready.put(server.server_address[1])
    server.serve_forever()


def azure(requests: Connection) -> None:
    """The emulator, in this process: answers ``(name, size)`` with a write SAS of a fresh
    upload disk, ``("revoke", name)`` by revoking it; None ends it."""
    with run_emulator() as emulator:
        sdk = clients(emulator)
        sdk.create_group("bench", "westeurope")
        requests.send(str(emulator.ca_cert))
        while (request := requests.recv()) is not None:
            name, size = request
            if name == "revoke":
                sdk.compute.disks.begin_revoke_access("bench", size).result()
                requests.send(None)
                continue
            disk: Any = {  # the SDK's TypedDicts are too strict for a literal
                "location": "westeurope",
                "sku": {"name": "Standard_LRS"},
                "properties": {
                    "osType": "Linux",
                    "hyperVGeneration": "V2",
                    "creationData": {"createOption": "Upload", "uploadSizeBytes": size},
                },
            }
            sdk.compute.disks.begin_create_or_update("bench", name, disk).result()
            grant = sdk.compute.disks.begin_grant_access(
                "bench", name, {"access": "Write", "durationInSeconds": 3600}
            ).result()
            requests.send(str(grant.access_sas))


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of this process, or of process *pid*."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of process *pid* and its descendants (the emulator and its Azurite)."""
    total = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            for child in (task / "children").read_text().split():
                total += tree_cpu_seconds(int(child))
    return total


def read_only(url: str, size: int, readers: int, ca_cert: Path) -> int:
    """The floor of a stream: every byte of the URL read over TLS and dropped, with
    *readers* ranged GETs at once into reused buffers (no zero search, no writes)."""
    pieces = iter(range(0, size, PIECE))
    lock = threading.Lock()
    context = ssl.create_default_context(cafile=str(ca_cert))
    port = int(url.split(":")[2].split("/", maxsplit=1)[0])

    def reader() -> None:
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context)
        view = memoryview(bytearray(PIECE))
        while True:
            with lock:
                start = next(pieces, None)
            if start is None:
                break
            end = min(size, start + PIECE)
            conn.request("GET", "/disk.vhd", headers={"Range": f"bytes={start}-{end - 1}"})
            response = conn.getresponse()
            got = 0
            while got < end - start:
                got += response.readinto(view[got : end - start]) or 0
        conn.close()

    threads = [threading.Thread(target=reader) for _ in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 0


@dataclass
class Bench:
    """The processes of one benchmark and what it measured."""

    image: Path
    emulator: multiprocessing.process.BaseProcess
    requests: Connection
    server: multiprocessing.process.BaseProcess
    ca_cert: Path
    url: str
    found: UrlImage
    readers: int
    sha256: str | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def measure(self, kind: str, name: str) -> None:
        """One write of the image into a fresh upload disk, *kind* ``upload`` or ``stream``;
        or ``read``: the URL read and dropped."""
        size = self.image.stat().st_size
        sas = ""
        if kind != "read":
            self.requests.send((name, size))
            sas = self.requests.recv()
        assert self.emulator.pid is not None
        assert self.server.pid is not None
        mine, theirs = cpu_seconds(), cpu_seconds(self.server.pid)
        azure_cpu = tree_cpu_seconds(self.emulator.pid)
        started = time.perf_counter()
        ca = str(self.ca_cert)
        if kind == "upload":
            sent = upload_vhd(
                path=self.image, sas_url=sas, use_journal=False, connection_verify=ca
            ).bytes_sent
        elif kind == "stream":
            sent = stream_into(
                url=self.url,
                sas_url=sas,
                size=size,
                ranges=self.found.ranges,
                etag=self.found.etag,
                readers=self.readers,
                sha256=self.sha256,
                connection_verify=ca,
                destination_verify=ca,
            ).bytes_sent
        else:
            sent = read_only(self.url, size, self.readers, self.ca_cert)
        self.times.setdefault(kind, []).append(time.perf_counter() - started)
        self.cpu.setdefault(kind, []).append(
            (
                cpu_seconds() - mine,
                cpu_seconds(self.server.pid) - theirs,
                tree_cpu_seconds(self.emulator.pid) - azure_cpu,
            )
        )
        self.sent[kind] = sent
        if kind != "read":
            self.requests.send(("revoke", name))
            self.requests.recv()


def report(bench: Bench, size: int, data: int) -> None:
    print(
        f"image {size / MiB:.0f} MiB, data {data / MiB:.1f} MiB,"
        f" runs {len(bench.times['upload'])}, cpus {os.cpu_count()},"
        f" source {'with' if bench.found.ranges else 'without'} ranges,"
        f" readers {bench.readers if bench.found.ranges else 1},"
        f" sha256 {'checked' if bench.sha256 else 'not asked'}"
    )
    labels = {
        "upload": "upload (local file)",
        "stream": "import (https stream)",
        "read": "read the URL only (the floor)",
    }
    for kind, times in bench.times.items():
        cpu = bench.cpu[kind]
        print(
            f"{labels[kind]}: median {statistics.median(times):.2f}s"
            f" (runs {', '.join(f'{t:.2f}' for t in times)}),"
            f" CPU: client {statistics.median(c[0] for c in cpu):.2f}s,"
            f" source server {statistics.median(c[1] for c in cpu):.2f}s,"
            f" emulator {statistics.median(c[2] for c in cpu):.2f}s;"
            f" sent {bench.sent[kind]} bytes"
        )
    up, st = bench.times["upload"], bench.times["stream"]
    ratios = ", ".join(f"{s / u:.2f}" for s, u in zip(st, up, strict=True))
    print(
        f"stream / upload: {statistics.median(st) / statistics.median(up):.2f}x"
        f" (target <= 1.3x); per run: {ratios};"
        f" stream sent = data bytes: {bench.sent['stream'] == data}"
    )


def run_all(
    args: argparse.Namespace,
    image: Path,
    emulator: multiprocessing.process.BaseProcess,
    requests: Connection,
    ca_cert: Path,
) -> Bench:
    """Serve *image*; measure each kind *args.runs* times, alternating the order."""
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    server = spawn.Process(target=serve, args=(image, ca_cert, not args.no_ranges, ready))
    server.start()
    try:
        url = f"https://127.0.0.1:{ready.get(timeout=30)}/disk.vhd"
        sha256 = None
        if args.sha256:
            with image.open("rb") as handle:
                sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
        bench = Bench(
            image=image,
            emulator=emulator,
            requests=requests,
            server=server,
            ca_cert=ca_cert,
            url=url,
            found=probe(url, connection_verify=str(ca_cert)),
            readers=args.readers,
            sha256=sha256,
        )
        for run in range(args.runs):
            order = ["upload", "stream", *(["read"] if args.floor else [])]
            for kind in order if run % 2 == 0 else order[::-1]:
                bench.measure(kind, f"{kind}-{run}")
    finally:
        server.terminate()
        server.join()
    return bench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--readers", type=int, default=READERS)
    parser.add_argument("--no-ranges", action="store_true", help="serve without byte ranges")
    parser.add_argument("--floor", action="store_true", help="also time reading the URL only")
    parser.add_argument("--sha256", action="store_true", help="the stream checks the sha256")
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        image = make_image(Path(tmp), args.size_mib, args.data_mib)
        size, data = image.stat().st_size, sum(e.length for e in vhd.data_extents(image))
        requests, answers = spawn.Pipe()
        emulator = spawn.Process(target=azure, args=(answers,), daemon=True)
        emulator.start()
        answers.close()  # the emulator's end: if it dies, recv() here raises EOFError
        try:
            ca_cert = Path(requests.recv())
            bench = run_all(args, image, emulator, requests, ca_cert)
        finally:
            # The emulator stops its Azurite only when asked: never terminated.
            with contextlib.suppress(OSError):
                requests.send(None)
            emulator.join(60)
    report(bench, size, data)


if __name__ == "__main__":
    main()

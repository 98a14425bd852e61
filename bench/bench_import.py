"""Import from an https:// URL vs upload of the same file from local disk, in the same run.

Run: .venv/bin/python bench/bench_import.py --size-mib 1024 --data-mib 256 --runs 3

The image (a sparse fixed VHD, --data-mib of random data in 4 MiB runs spread
evenly) is served over HTTPS from loopback with single-range support, as a web
server or a public blob serves it. Each run writes it into a fresh upload disk
of the bundled emulator (Azurite behind it) twice, alternating the order:
``upload`` (the native engine reading the local file) and the import's stream
(one GET of the whole URL, only non-zero sectors written). Prints the median
wall time of each, the ratio, and the bytes each sent against the data bytes.
Target: the stream sends exactly the data bytes and takes at most 1.3x the upload.
"""

from __future__ import annotations

import argparse
import http.server
import multiprocessing
import os
import random
import shutil
import ssl
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nixos_azure_publish import vhd
from nixos_azure_publish.emulator.server import run_emulator
from nixos_azure_publish.emulator.testing import clients
from nixos_azure_publish.upload.engine import upload_vhd
from nixos_azure_publish.upload.stream import stream_into

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
    served: Path

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        del format, args

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(self.served.stat().st_size))
        self.send_header("ETag", '"bench"')
        self.end_headers()

    def do_GET(self) -> None:
        size = self.served.stat().st_size
        wanted = self.headers.get("Range")
        with self.served.open("rb") as handle:
            if wanted:
                lo, hi = (int(x) for x in wanted.removeprefix("bytes=").split("-"))
                handle.seek(lo)
                self.send_response(206)
                self.send_header("Content-Length", str(hi - lo + 1))
                self.end_headers()
                self.wfile.write(handle.read(hi - lo + 1))
                return
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            shutil.copyfileobj(handle, self.wfile, 4 * MiB)


def serve(image: Path, cert: Path, ready: Any) -> None:  # noqa: ANN401 - a Queue
    """Serve *image* over HTTPS; put the port on *ready*."""
    handler = type("H", (Handler,), {"served": image})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, cert.parent / "emulator-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    ready.put(server.server_address[1])
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, run_emulator() as emulator:
        image = make_image(Path(tmp), args.size_mib, args.data_mib)
        size = image.stat().st_size
        data = sum(e.length for e in vhd.data_extents(image))
        # The server runs in its own process, as a web server runs elsewhere: in this one
        # it would share the interpreter lock with the client.
        ready = multiprocessing.get_context("spawn").Queue()
        child = multiprocessing.get_context("spawn").Process(
            target=serve, args=(image, emulator.ca_cert, ready), daemon=True
        )
        child.start()
        url = f"https://127.0.0.1:{ready.get(timeout=30)}/disk.vhd"
        sdk = clients(emulator)
        sdk.create_group("bench", "westeurope")
        times: dict[str, list[float]] = {"upload": [], "stream": []}
        sent: dict[str, int] = {}
        for run in range(args.runs):
            order = ["upload", "stream"] if run % 2 == 0 else ["stream", "upload"]
            for kind in order:
                name = f"{kind}-{run}"
                sdk.compute.disks.begin_create_or_update(
                    "bench",
                    name,
                    {
                        "location": "westeurope",
                        "sku": {"name": "Standard_LRS"},
                        "properties": {
                            "osType": "Linux",
                            "hyperVGeneration": "V2",
                            "creationData": {"createOption": "Upload", "uploadSizeBytes": size},
                        },
                    },
                ).result()
                sas = (
                    sdk.compute.disks.begin_grant_access(
                        "bench", name, {"access": "Write", "durationInSeconds": 3600}
                    )
                    .result()
                    .access_sas
                )
                started = time.perf_counter()
                if kind == "upload":
                    result = upload_vhd(
                        path=image,
                        sas_url=str(sas),
                        use_journal=False,
                        connection_verify=str(emulator.ca_cert),
                    )
                else:
                    result = stream_into(
                        url=url,
                        sas_url=str(sas),
                        size=size,
                        connection_verify=str(emulator.ca_cert),
                        destination_verify=str(emulator.ca_cert),
                    )
                times[kind].append(time.perf_counter() - started)
                sent[kind] = result.bytes_sent
                sdk.compute.disks.begin_revoke_access("bench", name).result()
        child.terminate()
        child.join()
    up, st = statistics.median(times["upload"]), statistics.median(times["stream"])
    print(
        f"image {size / MiB:.0f} MiB, data {data / MiB:.1f} MiB,"
        f" runs {args.runs}, cpus {os.cpu_count()}"
    )
    print(f"upload (local file): median {up:.2f}s, sent {sent['upload']} bytes")
    print(f"import (https stream): median {st:.2f}s, sent {sent['stream']} bytes")
    print(
        f"stream / upload: {st / up:.2f}x (target <= 1.3x);"
        f" stream sent = data bytes: {sent['stream'] == data}"
    )


if __name__ == "__main__":
    main()

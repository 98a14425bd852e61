"""Emulator speed: start-up (target < 2 s) and request rate, against Azurite as the baseline.

Run: .venv/bin/python bench/bench_emulator.py --runs 5 --requests 300

Baselines measured in the same run: Azurite's own start-up (the emulator starts
one, plus its HTTPS Resource Manager), and Azurite answering a blob-properties
GET over HTTP (the emulator answers an ARM GET over HTTPS with a bearer token).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING

from azure.storage.blob import BlobServiceClient

from nixos_azure_publish.emulator.azurite import run_azurite
from nixos_azure_publish.emulator.server import run_emulator
from nixos_azure_publish.emulator.testing import clients

if TYPE_CHECKING:
    from collections.abc import Callable
    from contextlib import AbstractContextManager


def timed_start_stop(factory: Callable[[], AbstractContextManager[object]]) -> tuple[float, float]:
    started = time.perf_counter()
    with factory():
        ready = time.perf_counter()
    return ready - started, time.perf_counter() - ready


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()

    starts, stops, base_starts, base_stops = [], [], [], []
    for _ in range(args.runs):
        start, stop = timed_start_stop(run_emulator)
        starts.append(start)
        stops.append(stop)
        start, stop = timed_start_stop(run_azurite)
        base_starts.append(start)
        base_stops.append(stop)

    with run_emulator() as emulator:
        sdk = clients(emulator)
        sdk.create_group("bench", "westeurope")
        sdk.upload_disk("bench", "disk")
        sdk.compute.disks.get("bench", "disk")  # warm the connection
        started = time.perf_counter()
        for _ in range(args.requests):
            sdk.compute.disks.get("bench", "disk")
        arm_rate = args.requests / (time.perf_counter() - started)

        service = BlobServiceClient.from_connection_string(emulator.azurite.connection_string)
        container = service.create_container("bench")
        blob = container.get_blob_client("b")
        blob.create_page_blob(size=1024 * 1024)
        blob.get_blob_properties()
        started = time.perf_counter()
        for _ in range(args.requests):
            blob.get_blob_properties()
        blob_rate = args.requests / (time.perf_counter() - started)

        started = time.perf_counter()
        sdk.upload_disk("bench", "flow")
        upload_cycle = time.perf_counter() - started

    median = statistics.median
    print(f"runs={args.runs} requests={args.requests}")
    print(f"emulator start  median {median(starts):.3f} s  max {max(starts):.3f} s")
    print(f"emulator stop   median {median(stops):.3f} s")
    print(f"azurite start   median {median(base_starts):.3f} s  (baseline)")
    print(f"azurite stop    median {median(base_stops):.3f} s")
    print(f"start ratio emulator/azurite {median(starts) / median(base_starts):.2f}")
    print(f"ARM GET disk    {arm_rate:.0f} req/s (HTTPS, SDK)")
    print(f"blob GET props  {blob_rate:.0f} req/s (HTTP, SDK, baseline)")
    print(f"rate ratio emulator/azurite {arm_rate / blob_rate:.2f}")
    print(f"create + grant + 2 pages + revoke (3 LROs): {upload_cycle:.3f} s")


if __name__ == "__main__":
    main()

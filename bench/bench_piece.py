"""What reading an image for upload costs the client, with no network at all.

Run from the repository root:

    .venv/bin/python bench/bench_piece.py --runs 5

Input: a 1 GiB fixed VHD of random data (generated once into --workdir), read
from the page cache in the upload's 4 MiB pieces. Each way of reading runs in
this process, interleaved with the others, and reports its median CPU seconds
(user + system) per GiB; CPU, not wall time, because next to a storage service
on the same cores every CPU-second the client spends is taken from the service.

  pread              each piece into a reused buffer: the copy out of the page
                     cache that every uploader of a file pays (the baseline)
  pread-then-scan    each piece read whole, then searched for zero sectors and
                     CRC64-checksummed: the piece has left the CPU cache by then
  read_piece         piece.read_piece: 256 KiB chunks, each searched and
                     checksummed right after it is read
  read_piece x8      8 threads calling read_piece at once, as 8 upload workers would
  read_piece x8 lock the same 8 threads taking turns (the upload's read lock)
  engine 1 / 8       engine.upload_vhd with 1 or 8 workers and a storage API
                     that accepts every write at once: the engine's own cost
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from nixos_azure_publish import checksum, vhd  # noqa: E402
from nixos_azure_publish.upload import engine, limits, piece, transport  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
PIECE = limits.MAX_PAGE_WRITE


def make_image(workdir: Path) -> Path:
    path = workdir / "piece-1g.vhd"
    if not path.exists():
        rng = random.Random("piece")  # noqa: S311 - benchmark data
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as out:
            for _ in range(GIB // (64 * MIB)):
                out.write(rng.randbytes(64 * MIB))
            out.write(vhd.build_footer(GIB))
        tmp.replace(path)
    return path


class NullBlob:
    """A storage API that accepts every write at once (no network)."""

    checksum_kind: checksum.Kind | None = "crc64"

    def __init__(self, size: int) -> None:
        self.size = size

    def properties(self) -> transport.BlobInfo:
        return transport.BlobInfo(size=self.size, blob_type="PageBlob", created="bench")

    def page_ranges(self, start: int, end: int) -> list[tuple[int, int]]:  # noqa: ARG002
        return []

    def put_pages(self, offset: int, data: object, checksum: object = None) -> None:
        pass

    def clear_pages(self, start: int, end: int) -> None:
        pass

    def read(self, start: int, end: int) -> bytes:  # noqa: ARG002
        return b""


def in_threads(count: int, pieces: list[tuple[int, int]], work: Callable[[int, int], None]) -> None:
    queue = iter(pieces)
    take = threading.Lock()

    def worker() -> None:
        while True:
            with take:
                item = next(queue, None)
            if item is None:
                return
            work(*item)

    threads = [threading.Thread(target=worker) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def ways(image: Path) -> dict[str, Callable[[], object]]:  # noqa: C901 - one closure per way
    fd = os.open(image, os.O_RDONLY)
    pieces = [(p.offset, p.length) for p in vhd.data_pieces(image, max_extent=PIECE)]
    buffer = bytearray(PIECE)
    view = memoryview(buffer)
    local = threading.local()
    turns = threading.Lock()

    def pread() -> None:
        for offset, length in pieces:
            os.preadv(fd, [view[:length]], offset)

    def pread_then_scan() -> None:
        for offset, length in pieces:
            os.preadv(fd, [view[:length]], offset)
            for lo, hi in vhd.sector_runs(buffer, 0, length):
                checksum.header("crc64", view[lo:hi])

    def read_pieces() -> None:
        for offset, length in pieces:
            piece.read_piece(fd, buffer, offset, length, "crc64")

    def threaded_read(offset: int, length: int) -> None:
        if not hasattr(local, "buffer"):
            local.buffer = bytearray(PIECE)
        piece.read_piece(fd, local.buffer, offset, length, "crc64")

    def taking_turns(offset: int, length: int) -> None:
        with turns:
            threaded_read(offset, length)

    def with_engine(workers: int) -> Callable[[], object]:
        return lambda: engine.upload_vhd(
            path=image,
            sas_url="http://127.0.0.1:9/bench/disk.vhd?se=2099-01-01T00:00:00Z&sig=none",
            api=NullBlob(image.stat().st_size),
            concurrency=workers,
            use_journal=False,
            verify="none",
        )

    return {
        "pread": pread,
        "pread-then-scan": pread_then_scan,
        "read_piece": read_pieces,
        "read_piece x8": lambda: in_threads(8, pieces, threaded_read),
        "read_piece x8 lock": lambda: in_threads(8, pieces, taking_turns),
        "engine 1": with_engine(1),
        "engine 8": with_engine(8),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "nap-bench")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    image = make_image(args.workdir)
    todo = ways(image)
    todo["pread"]()  # into the page cache
    cpu: dict[str, list[float]] = {name: [] for name in todo}
    for _ in range(args.runs):
        for name, run in todo.items():
            started = time.process_time()
            run()
            cpu[name].append(time.process_time() - started)
    base = statistics.median(cpu["pread"])
    print(f"CPU seconds per GiB, median of {args.runs}, 1 GiB in 4 MiB pieces, warm cache")
    for name, values in cpu.items():
        median = statistics.median(values)
        print(f"  {name:20s} {median:6.3f} s   {median / base:5.2f}x pread")


if __name__ == "__main__":
    main()

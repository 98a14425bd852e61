"""Converting an image into an Azure-ready fixed VHD: in Python, or through ``qemu-img``."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import struct
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Self

from nixos_azure_publish.errors import ImageError
from nixos_azure_publish.vhd.checks import ImageInfo, Problem, inspect
from nixos_azure_publish.vhd.format import (
    FOOTER_SIZE,
    MIB,
    SECTOR,
    UNALLOCATED,
    Format,
    build_footer,
    mib,
    round_up,
)
from nixos_azure_publish.vhd.scan import (
    ZERO_SECTOR,
    data_bytes,
    data_extents,
    file_runs,
    nonzero_spans,
    open_image,
    pread,
    read_into,
)

if TYPE_CHECKING:
    from pathlib import Path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConvertResult:
    """What :func:`convert` did. ``problems`` are those the output still has (usually none)."""

    source: Path
    destination: Path
    source_format: Format
    method: Literal["python", "qemu-img"]
    virtual_size: int
    file_size: int
    data_bytes: int
    actions: tuple[str, ...]
    seconds: float
    problems: tuple[Problem, ...]

    @property
    def azure_ready(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "destination": str(self.destination),
            "source_format": self.source_format,
            "method": self.method,
            "virtual_size": self.virtual_size,
            "file_size": self.file_size,
            "data_bytes": self.data_bytes,
            "actions": list(self.actions),
            "seconds": round(self.seconds, 3),
            "azure_ready": self.azure_ready,
            "problems": [p.to_json() for p in self.problems],
        }


def convert(src: Path, dst: Path, *, overwrite: bool = False) -> ConvertResult:
    """Write an Azure-ready fixed VHD of *src* to *dst*; *src* is never modified.

    Raw images, dynamic VHDs and fixed VHDs with a wrong size or a misplaced or
    damaged footer are converted here, streaming and sparse (holes stay holes,
    all-zero sectors are not written). qcow2 and other formats go through
    ``qemu-img``. A differencing VHD is refused: its parent holds the rest.
    The output appears atomically: it is written to a temporary file next to
    *dst* and renamed.
    """
    started = time.monotonic()
    info = inspect(src)
    _check_convertible(src, dst, info, overwrite=overwrite)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.tmp"
    actions: list[str] = []
    try:
        method, written = _write_fixed(src, tmp, info, actions)
        tmp.replace(dst)
    except OSError as exc:
        raise ImageError(
            f"cannot write {dst}: {exc.strerror or exc}",
            hint="Check free space and permissions of the output directory",
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _fsync_dir(dst.parent)
    result_info = inspect(dst)
    if written is None:
        written = data_bytes(data_extents(dst))
    seconds = time.monotonic() - started
    log.debug("converted %s (%s) to %s in %.2f s", src, info.format, dst, seconds)
    return ConvertResult(
        source=src,
        destination=dst,
        source_format=info.format,
        method=method,
        virtual_size=result_info.virtual_size,
        file_size=result_info.file_size,
        data_bytes=written,
        actions=tuple(actions),
        seconds=seconds,
        problems=result_info.problems,
    )


def _check_convertible(src: Path, dst: Path, info: ImageInfo, *, overwrite: bool) -> None:
    if dst.exists():
        if dst.resolve() == src.resolve() or dst.samefile(src):
            raise ImageError(
                f"{dst} is the input file; convert never modifies its input",
                hint="Choose another output path",
            )
        if dst.is_dir():
            raise ImageError(f"{dst} is a directory", hint="Give the output file's path")
        if not overwrite:
            raise ImageError(
                f"{dst} already exists", hint="Remove it, choose another path or pass --force"
            )
    if not dst.parent.is_dir():
        raise ImageError(f"{dst.parent} does not exist", hint="Create the output directory first")
    codes = {p.code for p in info.problems}
    if info.format == "vhd-differencing":
        # Its unwritten sectors live in the parent; qemu-img reads them as zeros.
        raise ImageError(
            f"{src} is a differencing VHD: it holds only the changes against its parent disk",
            hint="Merge it into its parent first (Hyper-V: Merge-VHD), then convert the result",
        )
    if "empty" in codes:
        raise ImageError(f"{src} is empty", hint="Rebuild the image")
    if codes & {"truncated", "bad-dynamic-header"}:
        raise ImageError(
            f"{src} is a damaged VHD: "
            + "; ".join(p.message for p in info.errors if p.code != "dynamic"),
            hint="Rebuild the image or copy it again",
        )


def _write_fixed(
    src: Path, tmp: Path, info: ImageInfo, actions: list[str]
) -> tuple[Literal["python", "qemu-img"], int | None]:
    """Write the fixed VHD of *src* into *tmp*, flushed; return how, and the data bytes."""
    method: Literal["python", "qemu-img"] = "python"
    if info.format == "qcow2" or (info.format == "unknown" and info.footer is None):
        method = "qemu-img"
        virtual = _qemu_to_raw(src, tmp, info, actions)
        written: int | None = None
        out = os.open(tmp, os.O_RDWR | os.O_CLOEXEC)
    else:
        out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        if method == "python":
            if info.format == "vhd-dynamic":
                virtual, written = _copy_dynamic(src, out, info, actions)
            else:
                virtual, written = _copy_flat(src, out, info, actions)
        target = round_up(max(virtual, SECTOR), MIB)
        if target != virtual:
            actions.append(f"rounded the virtual size up from {virtual:,} bytes to {mib(target)}")
        os.ftruncate(out, target)
        _pwrite_all(out, build_footer(target), target)
        if written is not None:
            written += FOOTER_SIZE
        actions.append(f"wrote a fixed VHD footer for {mib(target)} at offset {target:,}")
        os.fsync(out)
    finally:
        os.close(out)
    return method, written


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    view = memoryview(data)
    total = len(view)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written
    return total


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _Progress:
    """Follows a long copy: a log line every few seconds, and early writeback of the output.

    Without the writeback the kernel holds every written page dirty until the
    final fsync, which then waits for all of them. Asking for writeback of what
    is done (from a thread: the call itself takes a while) lets the disk work
    while we read and scan the rest.
    """

    WRITEBACK_EVERY: Final = 64 * MIB

    def __init__(self, what: str, total: int, out: int) -> None:
        self.what, self.total, self.out = what, total, out
        self.next_report = time.monotonic() + 5.0
        self.written_back = 0
        self.ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._writeback, name="vhd-writeback", daemon=True)
        self.thread.start()

    def _writeback(self) -> None:
        while (item := self.ranges.get()) is not None:
            with contextlib.suppress(OSError):  # only advice: a failure costs speed, not data
                os.posix_fadvise(self.out, item[0], item[1], os.POSIX_FADV_DONTNEED)

    def update(self, done: int) -> None:
        if done - self.written_back >= self.WRITEBACK_EVERY:
            self.ranges.put((self.written_back, done - self.written_back))
            self.written_back = done
        now = time.monotonic()
        if now >= self.next_report:
            self.next_report = now + 5.0
            log.info("%s: %s of %s", self.what, mib(done), mib(self.total))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.ranges.put(None)
        self.thread.join()


def _copy_flat(src: Path, out: int, info: ImageInfo, actions: list[str]) -> tuple[int, int]:
    """Copy a raw image or a fixed VHD's data area; return the virtual size it needs."""
    footer = info.footer
    skip: tuple[int, int] | None = None
    if footer is None:  # raw
        limit = info.file_size
        virtual = info.file_size
        actions.append(f"copied the raw disk's data ({mib(info.file_size)})")
    else:
        # Never drop bytes: whatever follows a misplaced footer stays part of
        # the disk (a partition may have been grown into it); only the old
        # footer sector itself is left out.
        limit = info.file_size
        skip = (footer.offset, footer.offset + FOOTER_SIZE)
        declared = footer.current_size if footer.checksum_ok else 0
        virtual = max(declared, info.file_size - FOOTER_SIZE)
        if footer.offset != info.file_size - FOOTER_SIZE:
            virtual = max(declared, info.file_size)
            actions.append(
                f"kept the {info.file_size - footer.offset - FOOTER_SIZE:,} bytes after the "
                f"misplaced footer at offset {footer.offset:,} as part of the disk and dropped "
                "the old footer"
            )
        else:
            actions.append("copied the fixed VHD's data area and dropped its old footer")
    written = 0
    with _Progress(f"converting {src}", limit, out) as progress, open_image(src) as (fd, size):
        for offset, data in file_runs(fd, size, src, limit=limit):
            if skip is not None and offset < skip[1] and offset + len(data) > skip[0]:
                written += _pwrite_skipping(out, data, offset, skip)
            else:
                _pwrite_all(out, data, offset)
                written += len(data)
            progress.update(offset)
    return virtual, written


def _pwrite_skipping(out: int, data: memoryview, offset: int, skip: tuple[int, int]) -> int:
    end = offset + len(data)
    written = 0
    if offset < skip[0]:
        written += _pwrite_all(out, data[: skip[0] - offset], offset)
    if end > skip[1]:
        written += _pwrite_all(out, data[skip[1] - offset :], skip[1])
    return written


def _copy_dynamic(src: Path, out: int, info: ImageInfo, actions: list[str]) -> tuple[int, int]:
    """Copy the allocated blocks of a dynamic VHD; unallocated blocks stay holes."""
    header = info.dynamic_header
    footer = info.footer
    if header is None or footer is None:  # inspect reported it; convert() refused earlier
        raise ImageError(f"{src}: no dynamic header", hint="Rebuild the image")
    virtual = footer.current_size
    block = header.block_size
    buf = bytearray(block)
    view = memoryview(buf)
    allocated = written = 0
    with (
        _Progress(f"converting {src}", virtual, out) as progress,
        open_image(src) as (fd, _size),
    ):
        table = pread(fd, header.max_table_entries * 4, header.table_offset, src)
        for index, (entry,) in enumerate(struct.iter_unpack(">I", table)):
            disk_offset = index * block
            if entry == UNALLOCATED or disk_offset >= virtual:
                continue
            allocated += 1
            length = round_up(min(block, virtual - disk_offset), SECTOR)
            bitmap = pread(fd, header.bitmap_size, entry * SECTOR, src)
            got = read_into(fd, view[:length], entry * SECTOR + header.bitmap_size, src)
            got = min(got, virtual - disk_offset)  # a partial last sector ends in zeros
            view[got:length] = bytes(length - got)
            _apply_sector_bitmap(view, length, bitmap)
            for lo, hi in nonzero_spans(buf, length):
                _pwrite_all(out, view[lo:hi], disk_offset + lo)
                written += hi - lo
            progress.update(disk_offset)
    actions.append(
        f"copied {allocated:,} allocated blocks of {mib(block)} from the dynamic VHD; "
        "unallocated blocks stay holes"
    )
    return virtual, written


def _apply_sector_bitmap(view: memoryview, length: int, bitmap: bytes) -> None:
    """Zero the sectors the block's bitmap marks as never written (they read as zeros)."""
    sectors = length // SECTOR
    full = sectors // 8
    if bitmap[:full] == b"\xff" * full and (
        sectors % 8 == 0 or bitmap[full] | (0xFF >> (sectors % 8)) == 0xFF  # noqa: PLR2004
    ):
        return
    for sector in range(sectors):
        if not bitmap[sector // 8] & (0x80 >> (sector % 8)):
            view[sector * SECTOR : (sector + 1) * SECTOR] = ZERO_SECTOR


def _qemu_to_raw(src: Path, tmp: Path, info: ImageInfo, actions: list[str]) -> int:
    """Let qemu-img write a sparse raw copy into *tmp*; return its size."""
    qemu_img = shutil.which("qemu-img")
    what = "a qcow2 image" if info.format == "qcow2" else "an image in a format we do not parse"
    if qemu_img is None:
        raise ImageError(
            f"converting {what} needs qemu-img, which is not on PATH",
            hint="Install it (Debian/Ubuntu: apt-get install qemu-utils; "
            "Nix: nix shell nixpkgs#qemu-utils) and run again",
        )
    argv = [qemu_img, "convert", "-O", "raw", str(src), str(tmp)]
    log.debug("running %s", " ".join(argv))
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ImageError(
            f"qemu-img could not convert {src}: {done.stderr.strip() or done.returncode}",
            hint="Check that the image is intact (`qemu-img info` shows what it sees)",
        )
    actions.append(f"converted {what} to a raw disk with qemu-img")
    return tmp.stat().st_size

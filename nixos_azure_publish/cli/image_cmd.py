"""`inspect` and `convert`: check an image against Azure's rules and repair it."""

from __future__ import annotations

from pathlib import Path

import click

from nixos_azure_publish import vhd
from nixos_azure_publish.cli.app import app_context
from nixos_azure_publish.cli.params import IMAGE, flag
from nixos_azure_publish.errors import ExitCode
from nixos_azure_publish.vhd import MIB

_FORMAT_NAMES = {
    "vhd-fixed": "fixed VHD",
    "vhd-dynamic": "dynamic VHD",
    "vhd-differencing": "differencing VHD",
    "raw": "raw disk image",
    "qcow2": "qcow2 image",
    "unknown": "unrecognised file",
}


def _size(size: int) -> str:
    return f"{size:,} bytes ({vhd.format_size(size)})" if size >= MIB else f"{size:,} bytes"


def _human_inspect(info: vhd.ImageInfo, data: int) -> str:
    lines = [f"{info.path}: {_FORMAT_NAMES[info.format]}"]
    lines.append(f"  file size:    {_size(info.file_size)}")
    if info.virtual_size:
        lines.append(f"  virtual size: {_size(info.virtual_size)}")
    lines.append(f"  data:         {_size(data)} to upload")
    footer = info.footer
    if footer is not None:
        lines.append(
            f"  footer:       at {footer.offset:,}, {footer.disk_type_name}, creator "
            f"{footer.creator_app.decode('latin-1')!r}, created "
            f"{footer.created:%Y-%m-%d %H:%M:%S} UTC, checksum "
            f"{'valid' if footer.checksum_ok else 'INVALID'}"
        )
    lines += [f"  {p.severity}: {p.code}: {p.message}" for p in info.problems]
    if info.azure_ready:
        lines.append("ready for Azure")
    else:
        lines.append("NOT ready for Azure")
        lines.append(f"  fix: nixos-azure-publish convert {info.path} OUT.vhd")
    return "\n".join(lines)


@click.command("inspect")
@click.argument("path", type=IMAGE)
@click.pass_context
def inspect(ctx: click.Context, path: Path) -> None:
    """Check an image file against Azure's rules and say what it is.

    Reports the format, sizes, the bytes an upload would send, the VHD footer
    and every problem found. Exits 0 when Azure accepts the file as it is and
    3 when it does not (`convert` repairs most problems). PATH is a file, or a
    store path holding one .vhd.

    \b
    Example:
      nixos-azure-publish inspect result/
    """
    out = app_context()
    info = vhd.inspect(path)
    data = vhd.data_bytes(vhd.data_extents(path))
    out.emit({**info.to_json(), "data_bytes": data}, _human_inspect(info, data))
    if not info.azure_ready:
        ctx.exit(int(ExitCode.INVALID_IMAGE))


@click.command("convert")
@click.argument("source", type=IMAGE)
@click.argument("destination", type=click.Path(path_type=Path))
@flag("--force", help="Replace DESTINATION if it exists.")
@click.pass_context
def convert(ctx: click.Context, source: Path, destination: Path, *, force: bool) -> None:
    """Write SOURCE as a fixed VHD that Azure accepts, to DESTINATION.

    Converts raw images, dynamic VHDs and fixed VHDs with a size that is not a
    whole number of MiB or a misplaced footer; qcow2 and other formats go
    through qemu-img. SOURCE is never modified; DESTINATION appears atomically
    and keeps holes. Exits 3 when the result is still not acceptable to Azure.

    \b
    Example:
      nixos-azure-publish convert nixos.raw nixos.vhd
    """
    out = app_context()
    result = vhd.convert(source, destination, overwrite=force)
    lines = [f"{source} ({_FORMAT_NAMES[result.source_format]}) -> {destination}"]
    lines += [f"  {action}" for action in result.actions]
    lines.append(
        f"  {_size(result.virtual_size)} virtual, {_size(result.data_bytes)} of data, "
        f"{result.seconds:.2f} s ({result.method})"
    )
    lines += [f"  {p.severity}: {p.code}: {p.message}" for p in result.problems]
    lines.append("ready for Azure" if result.azure_ready else "NOT ready for Azure")
    out.emit(result.to_json(), "\n".join(lines))
    if not result.azure_ready:
        ctx.exit(int(ExitCode.INVALID_IMAGE))

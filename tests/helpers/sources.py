"""Import sources and disk contents in the emulator, through the real SDK clients: a managed
disk holding an image (the source of a blob-URL import, read with a read SAS), and the
digest of what a disk holds."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from azure.storage.blob import BlobClient

from nixos_azure_publish.emulator.testing import clients
from tests.helpers.publishing import compute

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

PIECE = 4 * 1024 * 1024
SOURCE_GROUP = "released"
SOURCE_DISK = "nixos"


def grant_read(emulator: Emulator, group: str, disk: str, seconds: int = 3600) -> str:
    """A read SAS URL of *disk*, valid *seconds* (a new grant ends the earlier one)."""
    access: Any = {"access": "Read", "durationInSeconds": seconds}
    granted = compute(emulator).disks.begin_grant_access(group, disk, access).result()
    return str(granted.access_sas)


def source_disk(
    emulator: Emulator, image: Path, *, location: str = "northeurope", seconds: int = 3600
) -> str:
    """A managed disk holding *image* (its non-zero 4 MiB pieces written with the SDK), and
    a read SAS URL of it valid *seconds*: what a maintainer hands out to import from."""
    sdk = clients(emulator)
    sdk.create_group(SOURCE_GROUP, location)
    size = image.stat().st_size
    body: Any = {
        "location": location,
        "properties": {
            "osType": "Linux",
            "hyperVGeneration": "V2",
            "creationData": {"createOption": "Upload", "uploadSizeBytes": size},
        },
    }
    sdk.compute.disks.begin_create_or_update(SOURCE_GROUP, SOURCE_DISK, body).result()
    write: Any = {"access": "Write", "durationInSeconds": 3600}
    access = sdk.compute.disks.begin_grant_access(SOURCE_GROUP, SOURCE_DISK, write).result()
    blob = BlobClient.from_blob_url(str(access.access_sas))
    with image.open("rb") as handle:
        for offset in range(0, size, PIECE):
            data = handle.read(PIECE)
            if data.strip(b"\0"):
                blob.upload_page(data, offset=offset, length=len(data))
    sdk.compute.disks.begin_revoke_access(SOURCE_GROUP, SOURCE_DISK).result()
    return grant_read(emulator, SOURCE_GROUP, SOURCE_DISK, seconds)


def disk_digest(emulator: Emulator, group: str, disk: str) -> str:
    """The sha256 of every byte *disk* holds (read through a read SAS, then revoked)."""
    client = compute(emulator)
    try:
        digest = hashlib.sha256()
        stream = BlobClient.from_blob_url(grant_read(emulator, group, disk, 600)).download_blob()
        for chunk in stream.chunks():
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        client.disks.begin_revoke_access(group, disk).result()


def file_digest(path: Path) -> str:
    """The sha256 of a file, read in pieces."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(PIECE):
            digest.update(chunk)
    return digest.hexdigest()

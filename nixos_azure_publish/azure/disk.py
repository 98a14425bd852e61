"""The upload disk: a managed disk created empty (``Upload``) and written through a SAS.

States: ``ReadyToUpload`` -> (grant Write) ``ActiveUpload`` -> (revoke) ``Unattached``.
An Unattached disk can no longer be written, so a revoked disk whose upload
did not finish is useless: it is deleted and created again. A finished
upload is marked with a tag before access is revoked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.names import TAG_CONTENT, TAG_UPLOAD, UPLOAD_COMPLETE
from nixos_azure_publish.errors import AzureError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)

WRITABLE_STATES: Final = frozenset({"ReadyToUpload", "ActiveUpload"})
SAS_SECONDS: Final = 24 * 3600


@dataclass(frozen=True)
class DiskState:
    """What we know about an upload disk."""

    id: str
    name: str
    state: str
    size: int | None
    tags: dict[str, str]
    time_created: str | None

    @property
    def writable(self) -> bool:
        """The disk still accepts pages (access may need to be granted first)."""
        return self.state in WRITABLE_STATES

    @property
    def uploaded(self) -> bool:
        """A finished, verified upload (the disk was marked before access was revoked)."""
        return self.tags.get(TAG_UPLOAD) == UPLOAD_COMPLETE

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> DiskState:
        """From a disk's REST JSON."""
        props = body.get("properties") or {}
        creation = props.get("creationData") or {}
        return cls(
            id=str(body.get("id", "")),
            name=str(body.get("name", "")),
            state=str(props.get("diskState", "")),
            size=creation.get("uploadSizeBytes"),
            tags=dict(body.get("tags") or {}),
            time_created=props.get("timeCreated"),
        )


def get_disk(clients: AzureClients, group: str, name: str) -> DiskState | None:
    """The disk, or None when it does not exist."""
    body = arm.get_or_none(f"reading disk {name}", clients.compute.disks.get, group, name)
    return DiskState.from_json(body) if body is not None else None


def check_reusable(disk: DiskState, *, content_hash: str, size: int) -> None:
    """Refuse a disk of that name that holds something else."""
    if disk.tags.get(TAG_CONTENT) != content_hash:
        raise AzureError(
            f"disk {disk.name} exists but is not tagged as holding this image"
            f" (store hash {disk.tags.get(TAG_CONTENT) or 'missing'})",
            hint="Delete that disk, or give the target another name",
        )
    if disk.size is not None and disk.size != size:
        raise AzureError(
            f"disk {disk.name} was created for {disk.size} bytes but the image is {size} bytes",
            hint="Delete that disk and run again",
        )
    if not disk.writable and disk.state != "Unattached":
        raise AzureError(
            f"disk {disk.name} is {disk.state}; it cannot receive an upload",
            hint="Detach or delete that disk and run again",
        )


def disk_body(target: PublishTarget, *, size: int, tags: Mapping[str, str]) -> dict[str, Any]:
    """The create body of an upload disk for *target*."""
    return {
        "location": target.location,
        "tags": dict(tags),
        "sku": {"name": target.disk.sku},
        "properties": {
            "osType": "Linux",
            "hyperVGeneration": target.hyper_v_generation,
            "supportedCapabilities": {"architecture": target.architecture},
            "creationData": {"createOption": "Upload", "uploadSizeBytes": size},
        },
    }


def create_upload_disk(
    clients: AzureClients, group: str, name: str, body: Mapping[str, Any]
) -> DiskState:
    """Create the disk (it is empty, ReadyToUpload)."""
    result = arm.wait(
        f"creating upload disk {name}",
        clients.compute.disks.begin_create_or_update,
        group,
        name,
        dict(body),
    )
    created = DiskState.from_json(result)
    # Some servers answer the create with a partial body: read it back for state and times.
    return get_disk(clients, group, name) or created


def grant_write(clients: AzureClients, group: str, name: str, *, seconds: int | None = None) -> str:
    """Grant write access for *seconds* (default :data:`SAS_SECONDS`); the SAS URL (a
    secret: never log it)."""
    seconds = SAS_SECONDS if seconds is None else seconds
    result = arm.wait(
        f"granting write access to disk {name}",
        clients.compute.disks.begin_grant_access,
        group,
        name,
        {"access": "Write", "durationInSeconds": seconds},
    )
    sas = result.get("accessSAS")
    if not sas:
        raise AzureError(
            f"granting write access to disk {name} returned no SAS URL",
            hint="Run again; if it persists, delete the disk",
        )
    return str(sas)


def revoke(clients: AzureClients, group: str, name: str) -> None:
    """Revoke access (ActiveUpload -> Unattached). Safe to call more than once."""
    arm.wait(
        f"revoking access to disk {name}", clients.compute.disks.begin_revoke_access, group, name
    )


def mark_uploaded(clients: AzureClients, disk: DiskState) -> None:
    """Tag the disk as holding a complete, verified upload."""
    tags = {**disk.tags, TAG_UPLOAD: UPLOAD_COMPLETE}
    group = group_of(disk.id)
    arm.wait(
        f"tagging disk {disk.name}",
        clients.compute.disks.begin_update,
        group,
        disk.name,
        {"tags": tags},
    )


def delete_disk(clients: AzureClients, group: str, name: str) -> None:
    """Delete the disk; a missing disk is fine."""
    arm.wait(f"deleting disk {name}", clients.compute.disks.begin_delete, group, name)


def ensure_upload_disk(
    clients: AzureClients,
    target: PublishTarget,
    *,
    name: str,
    size: int,
    tags: Mapping[str, str],
) -> tuple[DiskState, bool]:
    """The upload disk for this image, created only when missing; ``(disk, created)``.

    A disk of that name holding other content is refused. One whose upload was
    revoked before it finished can never be written again: it is replaced.
    """
    group = target.resource_group
    disk = get_disk(clients, group, name)
    if disk is not None:
        check_reusable(disk, content_hash=tags[TAG_CONTENT], size=size)
        if disk.writable or disk.uploaded:
            log.info("reusing upload disk %s (%s)", name, disk.state)
            return disk, False
        log.info("disk %s holds an unfinished, revoked upload: replacing it", name)
        delete_disk(clients, group, name)
    log.info("creating upload disk %s (%d bytes)", name, size)
    return create_upload_disk(clients, group, name, disk_body(target, size=size, tags=tags)), True


def group_of(resource_id: str) -> str:
    """The resource group named in an ARM id."""
    parts = resource_id.split("/")
    lowered = [p.lower() for p in parts]
    return parts[lowered.index("resourcegroups") + 1]

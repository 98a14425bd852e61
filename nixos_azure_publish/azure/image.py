"""The optional managed image, made from the upload disk."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.names import TAG_CONTENT, TAG_CREATED
from nixos_azure_publish.errors import AzureError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)

READY_TIMEOUT: Final = 3600.0
"""How long to wait for a managed image another publish is creating (Azure takes minutes)."""


def get_image(clients: AzureClients, group: str, name: str) -> dict[str, Any] | None:
    """The managed image's JSON, or None."""
    return arm.get_or_none(f"reading managed image {name}", clients.compute.images.get, group, name)


def image_body(target: PublishTarget, *, disk_id: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """The create body of a managed image from the upload disk."""
    return {
        "location": target.location,
        "tags": dict(tags),
        "properties": {
            "hyperVGeneration": target.hyper_v_generation,
            "storageProfile": {
                "osDisk": {
                    "osType": "Linux",
                    "osState": "Generalized",
                    "managedDisk": {"id": disk_id},
                }
            },
        },
    }


def ensure_image(
    clients: AzureClients,
    target: PublishTarget,
    *,
    name: str,
    disk_id: str | None,
    tags: Mapping[str, str],
) -> tuple[dict[str, Any], bool]:
    """The managed image, created from the disk when missing; ``(image, created)``."""
    group = target.resource_group
    existing = get_image(clients, group, name)
    if existing is not None:
        if (existing.get("tags") or {}).get(TAG_CONTENT) != tags.get(TAG_CONTENT):
            raise AzureError(
                f"managed image {name} exists but holds another image",
                hint="Delete it, or set managedImage.name to another name",
            )
        return wait_until_ready(clients, group, name, existing), False
    if disk_id is None:
        raise AzureError(
            f"managed image {name} is missing and the upload disk is gone",
            hint="Run again: the image will be uploaded again",
        )
    log.info("creating managed image %s", name)
    # Managed images have no creation time in ARM: `gc` ages leftovers by this tag.
    stamped = {**tags, TAG_CREATED: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    body = image_body(target, disk_id=disk_id, tags=stamped)
    created = arm.wait(
        f"creating managed image {name}",
        clients.compute.images.begin_create_or_update,
        group,
        name,
        body,
    )
    return created, True


def wait_until_ready(
    clients: AzureClients,
    group: str,
    name: str,
    image: dict[str, Any],
    *,
    timeout: float = READY_TIMEOUT,
) -> dict[str, Any]:
    """*image* once it has succeeded: another publish of the same image may still be
    creating it, and Azure refuses a version whose source image is not ready."""
    deadline = time.monotonic() + timeout
    while True:
        state = str((image.get("properties") or {}).get("provisioningState", "Succeeded"))
        if state == "Succeeded":
            return image
        if state in {"Failed", "Canceled"}:
            raise AzureError(
                f"managed image {name} is in provisioning state {state}",
                hint=f"Delete it (az image delete -g {group} -n {name}) and run again",
            )
        if time.monotonic() >= deadline:
            raise AzureError(
                f"managed image {name} is still {state} after {timeout:.0f}s",
                hint="Another publish may be creating it; run again later",
                rerun_helps=True,
            )
        log.info("managed image %s is %s (another publish is making it); waiting", name, state)
        time.sleep(clients.settings.polling_interval)
        found = get_image(clients, group, name)
        if found is None:
            raise AzureError(
                f"managed image {name} was deleted while this publish waited for it",
                hint="Run again: the image will be made again",
                rerun_helps=True,
            )
        image = found


def delete_image(clients: AzureClients, group: str, name: str) -> None:
    """Delete the managed image; a missing one is fine."""
    arm.wait(f"deleting managed image {name}", clients.compute.images.begin_delete, group, name)

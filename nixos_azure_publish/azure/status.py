"""What a target's image definition holds: its versions, their replication, and ``latest``.

Read-only. Each version is read with its replication status; ``latest`` is
resolved as Azure resolves it for a new VM: the highest ``Major.Minor.Patch``
among the provisioned versions that are not excluded from latest, per region
among those replicated there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure import gallery as azgallery
from nixos_azure_publish.azure.names import (
    TAG_CONTENT,
    TAG_LABEL,
    TAG_SOURCE,
    TAG_SOURCE_VERSION,
    TAG_STORE_PATH,
    TAG_TARGET,
    resource_id,
)
from nixos_azure_publish.azure.replication import VersionState, get_version
from nixos_azure_publish.azure.vm import TAG_SMOKE_TEST
from nixos_azure_publish.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

# Replication states that still change by themselves.
MOVING_STATES: Final = frozenset({"Replicating", "Queued", "Unknown"})
MOVING_PROVISIONING: Final = frozenset({"Creating", "Updating", "Deleting", "Migrating"})


def version_key(name: str) -> tuple[int, ...]:
    """``Major.Minor.Patch`` as numbers, for ordering; unreadable names sort first."""
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (-1,)


@dataclass(frozen=True)
class VersionStatus:
    """One version as ``status`` shows it."""

    state: VersionState

    @property
    def moving(self) -> bool:
        """Provisioning or replication has not settled yet."""
        s = self.state
        return s.provisioning_state in MOVING_PROVISIONING or any(
            r.state in MOVING_STATES for r in s.regions
        )

    def to_json(self) -> dict[str, Any]:
        """As a JSON object (camelCase, like the publish report)."""
        s = self.state
        settings = {r.region: r for r in s.region_settings}
        regions = []
        for status in s.regions:
            setting = settings.get(status.region)
            regions.append(
                {
                    **status.to_json(),
                    "replicas": setting.replicas if setting else s.replica_count,
                    "storageAccountType": (
                        setting.storage_account_type if setting else s.storage_account_type
                    ),
                }
            )
        return {
            "name": s.name,
            "id": s.id,
            "created": s.published_date,
            "provisioningState": s.provisioning_state,
            "replicationState": s.aggregated_state,
            "regions": regions,
            "replicaCount": s.replica_count,
            "storageAccountType": s.storage_account_type,
            "excludeFromLatest": s.exclude_from_latest,
            "endOfLife": s.end_of_life_date,
            "tags": _our_tags(s.tags),
        }


def _our_tags(tags: dict[str, str]) -> dict[str, str | None]:
    return {
        "target": tags.get(TAG_TARGET),
        "storeHash": tags.get(TAG_CONTENT),
        "storePath": tags.get(TAG_STORE_PATH),
        "nixosLabel": tags.get(TAG_LABEL),
        "source": tags.get(TAG_SOURCE),
        "sourceVersion": tags.get(TAG_SOURCE_VERSION),
        "smokeTest": tags.get(TAG_SMOKE_TEST),
    }


@dataclass
class DefinitionStatus:
    """A target's image definition and every version it holds."""

    target: str
    resource_group: str
    gallery: str
    definition: str
    definition_id: str
    exists: bool
    versions: list[VersionStatus] = field(default_factory=list)

    @property
    def latest(self) -> str | None:
        """The version ``latest`` resolves to in the definition's own region (Azure's rule)."""
        return resolve_latest(v.state for v in self.versions)

    def latest_by_region(self) -> dict[str, str | None]:
        """Per region any version is replicated to: what ``latest`` resolves to there."""
        regions = sorted({r.region for v in self.versions for r in v.state.regions})
        return {
            region: resolve_latest((v.state for v in self.versions), region=region)
            for region in regions
        }

    @property
    def settled(self) -> bool:
        """No version is still provisioning or replicating."""
        return not any(v.moving for v in self.versions)

    def to_json(self) -> dict[str, Any]:
        """The status as one JSON object."""
        return {
            "target": self.target,
            "resourceGroup": self.resource_group,
            "gallery": self.gallery,
            "definition": self.definition,
            "definitionId": self.definition_id,
            "exists": self.exists,
            "latest": self.latest,
            "latestByRegion": self.latest_by_region(),
            "settled": self.settled,
            "versions": [v.to_json() for v in self.versions],
        }

    def to_console(self) -> str:
        """A few lines for a terminal: one per version, then its regions."""
        head = f"{self.gallery}/{self.definition} (group {self.resource_group})"
        if not self.exists:
            return f"{head}: the image definition does not exist yet"
        if not self.versions:
            return f"{head}: no versions"
        lines = [f"{head}: {len(self.versions)} version(s); latest: {self.latest or 'none'}"]
        for v in self.versions:
            s = v.state
            flags = []
            if s.exclude_from_latest:
                flags.append("excluded from latest")
            if s.end_of_life_date:
                flags.append(f"end of life {s.end_of_life_date[:10]}")
            tags = _our_tags(s.tags)
            origin = tags["source"] or tags["storePath"] or "not published by this tool"
            if tags["nixosLabel"]:
                origin += f" ({tags['nixosLabel']})"
            if tags["smokeTest"]:
                flags.append(f"smoke test {tags['smokeTest']}")
            created = (s.published_date or "?")[:19]
            lines.append(
                f"  {s.name}  {s.provisioning_state}/{s.aggregated_state or '-'}  created {created}"
                + (f"  [{', '.join(flags)}]" if flags else "")
            )
            lines.append(f"    from {origin}")
            settings = {r.region: r for r in s.region_settings}
            for r in s.regions:
                setting = settings.get(r.region)
                replicas = setting.replicas if setting else s.replica_count
                storage = setting.storage_account_type if setting else s.storage_account_type
                detail = f" ({r.details})" if r.details else ""
                lines.append(
                    f"    {r.region}: {r.state} {r.progress}%, {replicas} replica(s),"
                    f" {storage}{detail}"
                )
        return "\n".join(lines)


def resolve_latest(states: Iterable[VersionState], *, region: str | None = None) -> str | None:
    """The name ``latest`` resolves to: the highest version not excluded from latest.

    With *region*, only versions whose replica there has completed count.
    """
    candidates = [
        s
        for s in states
        if s.provisioning_state == "Succeeded"
        and not s.exclude_from_latest
        and (
            region is None or any(r.region == region and r.state == "Completed" for r in s.regions)
        )
    ]
    if not candidates:
        return None
    return max(candidates, key=lambda s: version_key(s.name)).name


def read_status(clients: AzureClients, target: PublishTarget) -> DefinitionStatus:
    """Every version of the target's definition with its replication status."""
    if target.gallery is None or target.image_definition is None:
        raise UsageError(
            f"target {target.name} names no gallery and image definition, so it has no versions",
            hint="Set gallery.name and imageDefinition in the target",
        )
    gallery, definition = target.gallery.name, target.image_definition.name
    status = DefinitionStatus(
        target=target.name,
        resource_group=target.resource_group,
        gallery=gallery,
        definition=definition,
        definition_id=resource_id(
            clients.settings.subscription_id,
            target.resource_group,
            "galleries",
            gallery,
            "images",
            definition,
        ),
        exists=azgallery.get_definition(clients, target) is not None,
    )
    if not status.exists:
        return status
    names = [
        str(body.get("name"))
        for body in arm.list_json(
            "listing image versions",
            clients.compute.gallery_image_versions.list_by_gallery_image,
            target.resource_group,
            gallery,
            definition,
        )
    ]
    for name in sorted(names, key=version_key):
        state = get_version(clients, target, name)
        if state is not None:  # deleted between the list and the read
            status.versions.append(VersionStatus(state))
    return status


def watch(
    clients: AzureClients,
    target: PublishTarget,
    *,
    interval: float,
    on_change: Callable[[DefinitionStatus], None],
    timeout: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> DefinitionStatus:
    """Read the status until nothing is provisioning or replicating; report each change."""
    deadline = None if timeout is None else time.monotonic() + timeout
    last: str | None = None
    while True:
        status = read_status(clients, target)
        text = status.to_console()
        if text != last:
            on_change(status)
            last = text
        if status.settled or (deadline is not None and time.monotonic() > deadline):
            return status
        sleep(interval)

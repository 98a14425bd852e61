"""Replication status of an image version: read, and waited for with per-region progress."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish import typedload
from nixos_azure_publish.azure import arm
from nixos_azure_publish.errors import AzureError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)

TERMINAL_PROVISIONING: Final = frozenset({"Succeeded", "Failed", "Canceled"})
DEFAULT_TIMEOUT: Final = 6 * 3600.0


def region_key(name: str) -> str:
    """Azure reports 'West Europe' where we wrote 'westeurope'."""
    return name.replace(" ", "").lower()


@dataclass(frozen=True)
class RegionStatus:
    """Replication in one region."""

    region: str
    state: str
    progress: int
    details: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        out: dict[str, Any] = typedload.dump(self)
        return out


@dataclass(frozen=True)
class RegionSetting:
    """What a version's publishing profile asks of one region."""

    region: str
    replicas: int | None
    storage_account_type: str | None


@dataclass(frozen=True)
class VersionState:
    """An image version as found in Azure."""

    id: str
    name: str
    provisioning_state: str
    aggregated_state: str | None
    regions: tuple[RegionStatus, ...]
    tags: dict[str, str]
    target_regions: tuple[str, ...]
    storage_profile: dict[str, Any] = field(default_factory=dict, compare=False)
    # Per region, as the publishing profile holds it (region keys as in target_regions).
    region_settings: tuple[RegionSetting, ...] = ()
    end_of_life_date: str | None = None
    published_date: str | None = None
    exclude_from_latest: bool = False
    replica_count: int | None = None
    storage_account_type: str | None = None

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> VersionState:
        """From a version's REST JSON (with ``$expand=ReplicationStatus``)."""
        props = body.get("properties") or {}
        status = props.get("replicationStatus") or {}
        publishing = props.get("publishingProfile") or {}
        regions = tuple(
            RegionStatus(
                region=region_key(str(entry.get("region", ""))),
                state=str(entry.get("state", "Unknown")),
                progress=int(entry.get("progress") or 0),
                details=entry.get("details"),
            )
            for entry in status.get("summary") or []
        )
        default_replicas = publishing.get("replicaCount")
        default_storage = publishing.get("storageAccountType")
        settings = tuple(
            RegionSetting(
                region=region_key(str(r.get("name", ""))),
                replicas=r.get("regionalReplicaCount", default_replicas),
                storage_account_type=r.get("storageAccountType", default_storage),
            )
            for r in publishing.get("targetRegions") or []
        )
        return cls(
            id=str(body.get("id", "")),
            name=str(body.get("name", "")),
            provisioning_state=str(props.get("provisioningState", "Unknown")),
            aggregated_state=status.get("aggregatedState"),
            regions=regions,
            tags=dict(body.get("tags") or {}),
            target_regions=tuple(
                region_key(str(r.get("name", ""))) for r in publishing.get("targetRegions") or []
            ),
            storage_profile=dict(props.get("storageProfile") or {}),
            region_settings=settings,
            end_of_life_date=publishing.get("endOfLifeDate"),
            published_date=publishing.get("publishedDate"),
            exclude_from_latest=bool(publishing.get("excludeFromLatest")),
            replica_count=default_replicas,
            storage_account_type=default_storage,
        )

    @property
    def finished(self) -> bool:
        """Provisioning has ended (in any state)."""
        return self.provisioning_state in TERMINAL_PROVISIONING

    @property
    def failed(self) -> bool:
        """Provisioning or replication failed."""
        return (
            self.provisioning_state in {"Failed", "Canceled"} or self.aggregated_state == "Failed"
        )

    @property
    def replicated(self) -> bool:
        """Provisioned and replicated to every region it targets."""
        if self.provisioning_state != "Succeeded":
            return False
        if self.aggregated_state is None:
            return True
        return self.aggregated_state == "Completed"


def get_version(clients: AzureClients, target: PublishTarget, name: str) -> VersionState | None:
    """The version with its replication status, or None."""
    if target.gallery is None or target.image_definition is None:
        return None
    body = arm.get_or_none(
        f"reading image version {name}",
        clients.compute.gallery_image_versions.get,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
        name,
        expand="ReplicationStatus",
    )
    return VersionState.from_json(body) if body is not None else None


def describe(state: VersionState) -> str:
    """One line of per-region progress."""
    if not state.regions:
        return f"{state.name}: {state.provisioning_state}"
    regions = ", ".join(f"{r.region} {r.state} {r.progress}%" for r in state.regions)
    return f"{state.name}: {state.provisioning_state}; {regions}"


def _failure(state: VersionState) -> AzureError:
    """The error for a failed version: which regions failed, and why, as Azure says."""
    hint = "Run again: a failed version of this image is deleted and published anew"
    failed = [r for r in state.regions if r.state == "Failed"]
    if failed:
        regions = "; ".join(f"{r.region}: {r.details}" if r.details else r.region for r in failed)
        return AzureError(
            f"image version {state.name} failed to replicate to {len(failed)} of "
            f"{len(state.regions)} regions ({regions})",
            hint=hint,
            rerun_helps=True,
        )
    details = "; ".join(f"{r.region}: {r.details}" for r in state.regions if r.details)
    return AzureError(
        f"image version {state.name} failed: {state.provisioning_state}"
        + (f" ({details})" if details else ""),
        hint=hint,
        rerun_helps=True,
    )


def wait_for_replication(
    clients: AzureClients,
    target: PublishTarget,
    name: str,
    *,
    interval: float,
    timeout: float = DEFAULT_TIMEOUT,
    on_progress: Callable[[VersionState], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> VersionState:
    """Poll the version until it is provisioned and replicated everywhere; raise if it fails."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        state = get_version(clients, target, name)
        if state is None:
            raise AzureError(
                f"image version {name} disappeared while replicating",
                hint="Someone deleted it; run again to publish it again",
            )
        line = describe(state)
        if line != last:
            log.info("replication %s", line)
            last = line
        if on_progress is not None:
            on_progress(state)
        if state.failed:
            raise _failure(state)
        if state.replicated:
            return state
        if time.monotonic() > deadline:
            raise AzureError(
                f"image version {name} is still replicating after {timeout:.0f}s ({line})",
                hint="Run again later: the publish resumes by waiting for this version",
                rerun_helps=True,
            )
        sleep(interval)

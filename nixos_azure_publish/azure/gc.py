"""``gc``: retention on its own, plus what a target's publishes left behind.

Candidates are only resources this tool made for this target (found by its
tags): image versions by the target's retention rules, and, older than a
minimum age (a day by default), upload disks, managed images and the smoke
test's throwaway VMs, NICs, VNets and OS disks. Nothing a running publish may
hold is touched: a disk with open write access (an upload may be running), a
disk or image whose version is still replicating, a managed image whose upload
disk still exists (a publish is between the two), anything attached to a VM
that is not a throwaway. What stays is listed with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure import image as azimage
from nixos_azure_publish.azure import retention as azretention
from nixos_azure_publish.azure import status as azstatus
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.azure import vm as azvm
from nixos_azure_publish.azure.disk import delete_disk
from nixos_azure_publish.azure.names import TAG_CONTENT, TAG_CREATED, TAG_TARGET
from nixos_azure_publish.azure.version import parse_time

if TYPE_CHECKING:
    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)

MIN_AGE: Final = dt.timedelta(days=1)
# Disk states in which a publish may be writing (a write SAS may be live).
WRITING: Final = frozenset({"ActiveUpload", "ActiveSAS", "ActiveSASFrozen"})


@dataclass(frozen=True)
class Item:
    """A resource gc deletes (or would), or keeps, and why."""

    kind: str
    name: str
    reason: str
    id: str | None = None
    # The smoke test run a throwaway belongs to (all of a run's resources go together).
    run: str | None = None

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        out: dict[str, Any] = {"kind": self.kind, "name": self.name, "reason": self.reason}
        if self.id:
            out["id"] = self.id
        return out


@dataclass
class GcPlan:
    """What gc deletes and what it keeps."""

    target: str
    resource_group: str
    doomed: list[Item] = field(default_factory=list)
    kept: list[Item] = field(default_factory=list)
    deleted: list[Item] = field(default_factory=list)
    dry_run: bool = True

    def to_json(self) -> dict[str, Any]:
        """The plan (or its outcome) as one JSON object."""
        return {
            "target": self.target,
            "resourceGroup": self.resource_group,
            "dryRun": self.dry_run,
            "wouldDelete" if self.dry_run else "deleted": [
                i.to_json() for i in (self.doomed if self.dry_run else self.deleted)
            ],
            "kept": [i.to_json() for i in self.kept],
        }

    def to_console(self) -> str:
        """One line per resource."""
        verb = "would delete" if self.dry_run else "deleted"
        gone = self.doomed if self.dry_run else self.deleted
        lines = [f"{verb} {i.kind} {i.name}: {i.reason}" for i in gone]
        lines += [f"kept {i.kind} {i.name}: {i.reason}" for i in self.kept]
        if not gone:
            lines.insert(0, f"nothing to delete for target {self.target}")
        return "\n".join(lines)


def _age(body: dict[str, Any]) -> dt.datetime | None:
    """When a resource was made: our tag, ARM's systemData, or the resource's own time."""
    tags = body.get("tags") or {}
    props = body.get("properties") or {}
    for value in (
        tags.get(TAG_CREATED),
        (body.get("systemData") or {}).get("createdAt"),
        props.get("timeCreated"),
    ):
        when = parse_time(value)
        if when is not None:
            return when
    return None


def _ours(body: dict[str, Any], target: PublishTarget) -> bool:
    tags = body.get("tags") or {}
    return tags.get(TAG_TARGET) == target.name


@dataclass
class _Scan:
    """What the parts of one plan share."""

    target: PublishTarget
    result: GcPlan
    old: dt.datetime
    age_text: str
    # Content held by a version that stays, and by one still moving (it may read its source).
    held: dict[str, str] = field(default_factory=dict)
    moving: dict[str, str] = field(default_factory=dict)
    upload_contents: set[str] = field(default_factory=set)

    def keep(self, kind: str, name: str, reason: str, rid: str | None = None) -> None:
        self.result.kept.append(Item(kind, name, reason, id=rid))

    def doom(self, kind: str, name: str, reason: str, rid: str | None = None) -> None:
        self.result.doomed.append(Item(kind, name, reason, id=rid))


def plan(
    clients: AzureClients,
    target: PublishTarget,
    *,
    now: dt.datetime,
    min_age: dt.timedelta = MIN_AGE,
) -> GcPlan:
    """Find what gc would delete now; changes nothing."""
    scan = _Scan(
        target=target,
        result=GcPlan(target=target.name, resource_group=target.resource_group),
        old=now - min_age,
        age_text=_duration(min_age),
    )
    if clients.resource_group(target.resource_group) is None:
        return scan.result
    _scan_versions(clients, scan, now)
    # Only a target with a smoke test has throwaways (and its role the rights to list them).
    smoke = _smoke_runs(clients, target) if target.smoke_test.enable else {}
    smoke_disks = {name for run in smoke.values() for kind, name, _ in run if kind == "disk"}
    group = target.resource_group
    for body in arm.list_json("listing disks", clients.compute.disks.list_by_resource_group, group):
        if str(body.get("name", "")) not in smoke_disks:
            _scan_disk(scan, body)
    for body in arm.list_json(
        "listing managed images", clients.compute.images.list_by_resource_group, group
    ):
        _scan_image(scan, body)
    for key, items in sorted(smoke.items()):
        _scan_smoke_run(scan, key, items)
    return scan.result


def _scan_versions(clients: AzureClients, scan: _Scan, now: dt.datetime) -> None:
    target = scan.target
    if target.gallery is None or target.image_definition is None:
        return
    versions = azstatus.read_status(clients, target).versions
    r = target.retention
    if r.keep_versions is not None or r.delete_after_end_of_life:
        for d in azretention.plan(clients, target, current=None, now=now):
            scan.doom("image version", d.name, d.reason, d.id)
    going = {i.name for i in scan.result.doomed}
    for v in versions:
        content = v.state.tags.get(TAG_CONTENT)
        if not content or v.state.name in going:
            continue
        scan.held.setdefault(content, v.state.name)
        if v.moving:
            scan.moving[content] = v.state.name


@dataclass(frozen=True)
class _Candidate:
    """A disk or managed image the tool made for this target, holding an image's content."""

    name: str
    id: str
    content: str
    created: dt.datetime | None


def _candidate(scan: _Scan, body: dict[str, Any]) -> _Candidate | None:
    content = (body.get("tags") or {}).get(TAG_CONTENT)
    if not _ours(body, scan.target) or not content:
        return None
    return _Candidate(str(body.get("name", "")), str(body.get("id", "")), str(content), _age(body))


def _scan_disk(scan: _Scan, body: dict[str, Any]) -> None:
    found = _candidate(scan, body)
    if found is None:
        return
    name, rid, content, created = found.name, found.id, found.content, found.created
    scan.upload_contents.add(content)
    state = str((body.get("properties") or {}).get("diskState", ""))
    keep = None
    if state in WRITING:
        keep = f"write access is open ({state}): a publish may be uploading; rerun it"
    elif body.get("managedBy") or state in {"Attached", "Reserved"}:
        keep = f"attached to {body.get('managedBy') or 'a VM'}"
    elif not scan.target.cleanup.delete_upload_disk:
        keep = "cleanup.deleteUploadDisk is false"
    elif content in scan.moving:
        keep = f"image version {scan.moving[content]} is still replicating"
    elif created is not None and created > scan.old:
        keep = f"younger than {scan.age_text}"
    if keep is not None:
        scan.keep("disk", name, keep, rid)
        return
    holder = scan.held.get(content)
    why = f"version {holder} holds its image" if holder else "no version holds its image"
    scan.doom("disk", name, f"upload disk older than {scan.age_text}; {why}", rid)


def _scan_image(scan: _Scan, body: dict[str, Any]) -> None:
    found = _candidate(scan, body)
    if found is None:
        return
    name, rid, content, created = found.name, found.id, found.content, found.created
    kind = "managed image"
    if content in scan.held:
        scan.keep(kind, name, f"version {scan.held[content]} holds its image", rid)
    elif content in scan.upload_contents:
        scan.keep(kind, name, "its upload disk exists: a publish may be using it", rid)
    elif created is not None and created > scan.old:
        scan.keep(kind, name, f"younger than {scan.age_text}", rid)
    else:
        scan.doom(kind, name, "no version holds its image and no publish uses it", rid)


def _scan_smoke_run(
    scan: _Scan, key: str, items: list[tuple[str, str, dt.datetime | None]]
) -> None:
    times = [t for _, _, t in items if t is not None]
    described = ", ".join(f"{kind} {name}" for kind, name, _ in items)
    if not times:
        reason = (
            "made by an older version of the tool (no creation time);"
            " the next publish of that image deletes it"
        )
        scan.result.kept.append(Item("smoke test", described, reason, run=key))
    elif max(times) > scan.old:
        scan.result.kept.append(
            Item("smoke test", described, f"younger than {scan.age_text}", run=key)
        )
    else:
        scan.result.doomed.append(
            Item(
                "smoke test", described, f"throwaway resources older than {scan.age_text}", run=key
            )
        )


def _smoke_runs(
    clients: AzureClients, target: PublishTarget
) -> dict[str, list[tuple[str, str, dt.datetime | None]]]:
    """The smoke test's throwaway resources of this target, by run: (kind, name, created)."""
    group = target.resource_group
    net = clients.network
    sources: list[tuple[str, list[dict[str, Any]]]] = [
        ("vm", arm.list_json("listing VMs", clients.compute.virtual_machines.list, group)),
        (
            "disk",
            arm.list_json("listing disks", clients.compute.disks.list_by_resource_group, group),
        ),
    ]
    if net is not None:
        sources.append(("nic", arm.list_json("listing NICs", net.network_interfaces.list, group)))
        sources.append(("vnet", arm.list_json("listing VNets", net.virtual_networks.list, group)))
    runs: dict[str, list[tuple[str, str, dt.datetime | None]]] = {}
    for kind, bodies in sources:
        for body in bodies:
            key = (body.get("tags") or {}).get(azvm.TAG_SMOKE_RUN)
            if not key or not _ours(body, target):
                continue
            runs.setdefault(str(key), []).append((kind, str(body.get("name", "")), _age(body)))
    return runs


def _duration(delta: dt.timedelta) -> str:
    hours = delta.total_seconds() / 3600
    if hours == 24:  # noqa: PLR2004
        return "a day"
    return f"{hours:g} hours"


def run(clients: AzureClients, target: PublishTarget, found: GcPlan) -> GcPlan:
    """Delete what *found* lists: versions first, then disks, images and throwaways."""
    group = target.resource_group
    found.dry_run = False
    order = {"image version": 0, "smoke test": 1, "managed image": 2, "disk": 3}
    for item in sorted(found.doomed, key=lambda i: order[i.kind]):
        log.info("gc: deleting %s %s (%s)", item.kind, item.name, item.reason)
        if item.kind == "image version":
            azversion.delete_version(clients, target, item.name)
        elif item.kind == "smoke test" and item.run is not None:
            azvm.delete_throwaways(clients, group, item.run)
        elif item.kind == "managed image":
            azimage.delete_image(clients, group, item.name)
        elif item.kind == "disk":
            delete_disk(clients, group, item.name)
        found.deleted.append(item)
    return found

"""The gallery image version: found by content, created with its publishing profile."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from azure.core.exceptions import HttpResponseError, ResourceExistsError

from nixos_azure_publish import config
from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.clients import azure_error, is_not_found
from nixos_azure_publish.azure.names import TAG_CONTENT, arm_datetime
from nixos_azure_publish.azure.replication import VersionState, get_version, region_key
from nixos_azure_publish.errors import AzureError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)


def find_published(
    clients: AzureClients, target: PublishTarget, content_hash: str
) -> VersionState | None:
    """A version of the definition tagged with this image's store hash that has not failed.

    When several exist (made by hand, or by an older tool), the oldest name wins.
    """
    return find_versions(clients, target, content_hash)[0]


def find_versions(
    clients: AzureClients, target: PublishTarget, content_hash: str
) -> tuple[VersionState | None, list[VersionState]]:
    """The version holding this image (or None), and the failed ones that also hold it."""
    if target.gallery is None or target.image_definition is None:
        return None, []
    pager = arm.call(
        "listing image versions",
        clients.compute.gallery_image_versions.list_by_gallery_image,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
    )
    names: list[str] = []
    try:
        for item in pager:
            body = arm.as_json(item)
            if (body.get("tags") or {}).get(TAG_CONTENT) == content_hash:
                names.append(str(body.get("name")))
    except HttpResponseError as error:
        if is_not_found(error):
            return None, []
        raise azure_error(error, "listing image versions") from None
    names.sort(key=_version_key)
    healthy: list[VersionState] = []
    failed: list[VersionState] = []
    for name in names:
        state = get_version(clients, target, name)
        if state is not None:
            (failed if state.failed else healthy).append(state)
    if len(healthy) > 1:
        log.warning(
            "several versions hold this image: %s; using %s",
            ", ".join(v.name for v in healthy),
            healthy[0].name,
        )
    return (healthy[0] if healthy else None), failed


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (2**31,)


def target_regions(target: PublishTarget) -> list[dict[str, Any]]:
    """The target's regions as the API's ``targetRegions``."""
    return [
        {
            "name": r.name,
            "regionalReplicaCount": r.replicas,
            "storageAccountType": r.storage_account_type,
        }
        for r in target.regions
    ]


@dataclass(frozen=True)
class PublishingDrift:
    """How a published version's publishing profile differs from what the target asks."""

    # Target regions the version is not replicated to.
    added: tuple[str, ...] = ()
    # Regions of both whose replica count or storage type differs, e.g.
    # "northeurope: replicas 2 -> 3".
    changed: tuple[str, ...] = ()
    # Regions the version is replicated to that the target no longer lists.
    extra: tuple[str, ...] = ()
    # The end-of-life date to set, when it differs.
    end_of_life_date: str | None = None

    @property
    def update_needed(self) -> bool:
        """The version must be updated to match the target (extra regions aside)."""
        return bool(self.added or self.changed or self.end_of_life_date)

    def update_needed_with(self, *, remove_extra: bool) -> bool:
        """An update is needed, counting the removal of extra regions when asked for."""
        return self.update_needed or (remove_extra and bool(self.extra))

    def describe(self, *, remove_extra: bool = False, done: bool = False) -> str:
        """What an update changes (*done*: changed), as one line."""
        add, remove = ("added", "removed") if done else ("add", "remove")
        parts = []
        if self.added:
            parts.append(f"{add} regions " + ", ".join(self.added))
        parts.extend(self.changed)
        if self.extra and remove_extra:
            parts.append(f"{remove} regions " + ", ".join(self.extra))
        if self.end_of_life_date:
            parts.append(f"end of life {self.end_of_life_date}")
        return "; ".join(parts)


def drift(target: PublishTarget, state: VersionState) -> PublishingDrift:
    """Compare a published version with the target's regions, replicas, storage and EOL."""
    have = {r.region: r for r in state.region_settings}
    wanted = {region_key(r.name): r for r in target.regions}
    added = tuple(r.name for key, r in wanted.items() if key not in have)
    changed: list[str] = []
    for key, region in wanted.items():
        current = have.get(key)
        if current is None:
            continue
        if current.replicas is not None and current.replicas != region.replicas:
            changed.append(f"{region.name}: replicas {current.replicas} -> {region.replicas}")
        if (
            current.storage_account_type is not None
            and current.storage_account_type != region.storage_account_type
        ):
            changed.append(
                f"{region.name}: storage {current.storage_account_type}"
                f" -> {region.storage_account_type}"
            )
    extra = tuple(key for key in state.target_regions if key not in wanted)
    eol = target.version.end_of_life_date
    new_eol = None
    if eol is not None and not _same_time(state.end_of_life_date, arm_datetime(eol)):
        new_eol = arm_datetime(eol)
    return PublishingDrift(
        added=added, changed=tuple(changed), extra=extra, end_of_life_date=new_eol
    )


def _same_time(a: str | None, b: str | None) -> bool:
    if a is None or b is None:
        return a == b
    return parse_time(a) == parse_time(b)


def update_publishing(
    clients: AzureClients,
    target: PublishTarget,
    state: VersionState,
    *,
    remove_extra: bool = False,
) -> PublishingDrift:
    """Make an existing version's regions, replicas, storage and EOL follow the target.

    A region the target no longer lists keeps its replicas unless *remove_extra*:
    removing them breaks deployments that use them, and Azure refuses it unless the
    request allows the deletion of replicated locations, which this then does.
    Starts the update and returns what it changes; replication is waited for separately.
    """
    change = drift(target, state)
    removing = remove_extra and bool(change.extra)
    if target.gallery is None or target.image_definition is None:  # pragma: no cover
        return change
    if not change.update_needed_with(remove_extra=remove_extra):
        return change
    wanted = target_regions(target)
    keep = [] if removing else _kept_regions(state, change.extra)
    publishing: dict[str, Any] = {"targetRegions": wanted + keep}
    if change.end_of_life_date:
        publishing["endOfLifeDate"] = change.end_of_life_date
    properties: dict[str, Any] = {
        "publishingProfile": publishing,
        # The update model requires the storage profile: send it back unchanged,
        # without the properties Azure computed (sizeInGB), which it refuses.
        "storageProfile": _writable_storage_profile(state.storage_profile),
    }
    if removing:
        properties["safetyProfile"] = {"allowDeletionOfReplicatedLocations": True}
    log.info("image version %s: %s", state.name, change.describe(remove_extra=remove_extra))
    begin: Any = clients.compute.gallery_image_versions.begin_update
    arm.call(
        f"updating the regions of image version {state.name}",
        begin,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
        state.name,
        {"properties": properties},
        polling=False,
    )
    return change


def _kept_regions(state: VersionState, extra: tuple[str, ...]) -> list[dict[str, Any]]:
    """The regions the target no longer lists, as the version has them now."""
    settings = {r.region: r for r in state.region_settings}
    kept = []
    for key in extra:
        entry: dict[str, Any] = {"name": key}
        setting = settings.get(key)
        if setting is not None and setting.replicas is not None:
            entry["regionalReplicaCount"] = setting.replicas
        if setting is not None and setting.storage_account_type is not None:
            entry["storageAccountType"] = setting.storage_account_type
        kept.append(entry)
    return kept


def mark_smoke_test(
    clients: AzureClients,
    target: PublishTarget,
    state: VersionState,
    *,
    tag: str,
    value: str,
    promote: bool,
) -> None:
    """Tag the version with its smoke test's result; when *promote*, include it in latest."""
    if target.gallery is None or target.image_definition is None:  # pragma: no cover
        return
    body: dict[str, Any] = {
        "tags": {**state.tags, tag: value},
        "properties": {"storageProfile": _writable_storage_profile(state.storage_profile)},
    }
    if promote:
        body["properties"]["publishingProfile"] = {"excludeFromLatest": False}
    log.info("image version %s: smoke test %s%s", state.name, value, "; promoting" * promote)
    begin: Any = clients.compute.gallery_image_versions.begin_update
    arm.wait(
        f"updating image version {state.name}",
        begin,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
        state.name,
        body,
    )


def _writable_storage_profile(profile: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if profile.get("source"):
        out["source"] = profile["source"]
    disk = profile.get("osDiskImage") or {}
    if disk:
        out["osDiskImage"] = {k: v for k, v in disk.items() if k in {"source", "hostCaching"}}
    return out


def version_body(
    target: PublishTarget,
    *,
    source_id: str,
    from_disk: bool,
    tags: Mapping[str, str],
    exclude_from_latest: bool | None = None,
    storage_profile: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The create body of the version: target regions, replicas, storage, EOL, mode.

    *exclude_from_latest* overrides ``version.excludeFromLatest`` (a version waiting
    for its smoke test is excluded until it passes). *storage_profile* replaces the
    one made from *source_id* (an import names another gallery's version as its source).
    """
    v = target.version
    exclude = v.exclude_from_latest if exclude_from_latest is None else exclude_from_latest
    publishing: dict[str, Any] = {
        "targetRegions": target_regions(target),
        "replicaCount": v.replica_count,
        "storageAccountType": v.storage_account_type,
        "excludeFromLatest": exclude,
        "replicationMode": v.replication_mode,
    }
    if v.end_of_life_date:
        publishing["endOfLifeDate"] = arm_datetime(v.end_of_life_date)
    storage: dict[str, Any] = (
        dict(storage_profile)
        if storage_profile is not None
        else {"osDiskImage": {"source": {"id": source_id}}}
        if from_disk
        else {"source": {"id": source_id}}
    )
    return {
        "location": target.location,
        "tags": dict(tags),
        "properties": {"publishingProfile": publishing, "storageProfile": storage},
    }


class VersionNameTakenError(AzureError):
    """Another image's version took the name between our look and our create (a race)."""


def create_version(
    clients: AzureClients, target: PublishTarget, name: str, body: Mapping[str, Any]
) -> None:
    """Start creating the version; replication is waited for separately.

    A concurrent publisher may create the same version at the same moment: a
    conflict on a version tagged with the same content is success.
    """
    if target.gallery is None or target.image_definition is None:  # pragma: no cover
        raise AzureError("the target has no gallery")
    log.info("creating image version %s", name)
    # Typed as Any: the SDK's overloads do not list a plain dict body, which it accepts.
    begin: Any = clients.compute.gallery_image_versions.begin_create_or_update
    try:
        begin(
            target.resource_group,
            target.gallery.name,
            target.image_definition.name,
            name,
            dict(body),
            polling=False,
        )
    except ResourceExistsError as error:
        existing = get_version(clients, target, name)
        if existing is None:
            # A 409 about something else (a source not ready, an operation in progress).
            raise azure_error(error, f"creating image version {name}") from None
        want = (body.get("tags") or {}).get(TAG_CONTENT)
        if existing.tags.get(TAG_CONTENT) != want:
            raise VersionNameTakenError(
                f"image version {name} already exists with other content",
                hint="Change version.name so that it renders a new version",
            ) from None
    except HttpResponseError as error:
        raise azure_error(error, f"creating image version {name}") from None


def delete_version(clients: AzureClients, target: PublishTarget, name: str) -> None:
    """Delete a version (used by tests and by retention)."""
    if target.gallery is None or target.image_definition is None:  # pragma: no cover
        return
    arm.wait(
        f"deleting image version {name}",
        clients.compute.gallery_image_versions.begin_delete,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
        name,
    )


# --------------------------------------------------------------------------- naming

MAX_NAME_BUMPS: Final = 100


def parse_time(value: object) -> dt.datetime | None:
    """An ARM timestamp as an aware datetime (UTC when it names no zone); None when absent
    or unreadable. ARM writes up to seven fractional digits; a datetime keeps six."""
    if not value:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    text = str(value).replace("Z", "+00:00")
    if "." in text:
        head, _, rest = text.partition(".")
        digits = "".join(c for c in rest if c.isdigit())
        zone = rest[len(digits) :]
        text = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def choose_version_name(
    target: PublishTarget,
    *,
    content_hash: str,
    disk_created: str | None,
    started_at: str | None,
    now: dt.datetime,
) -> str:
    """Render ``version.name`` so that every run for this image agrees on it.

    The time in the template is the upload disk's creation time when the disk
    exists (two publishers of one image share one content-addressed disk, so
    they render the same name), else the time an earlier run recorded as its
    start, else *now*.
    """
    when = parse_time(disk_created) or parse_time(started_at) or now
    return config.render_version_name(target, store_hash=content_hash, now=when)


def free_version_name(
    clients: AzureClients, target: PublishTarget, name: str, *, content_hash: str
) -> str:
    """*name*, or the next free patch number when another image holds it.

    Only the default, time-based template is bumped (two images published in the
    same second); a name from the user's own template is theirs to change. Every
    publisher of the same image sees the same versions, so they pick the same name.
    """
    candidate = name
    for _ in range(MAX_NAME_BUMPS):
        existing = get_version(clients, target, candidate)
        if existing is None or existing.tags.get(TAG_CONTENT) == content_hash:
            if candidate != name:
                log.info("version %s holds another image; using %s", name, candidate)
            return candidate
        if target.version.name != config.DEFAULT_VERSION_TEMPLATE:
            raise AzureError(
                f"image version {candidate} already exists and holds another image",
                hint="Change version.name so that it renders a new Major.Minor.Patch",
            )
        major, minor, patch = (int(part) for part in candidate.split("."))
        candidate = f"{major}.{minor}.{patch + 1}"
    raise AzureError(
        f"image versions {name} and the next {MAX_NAME_BUMPS} patch numbers are taken",
        hint="Set version.name to a template that renders a new Major.Minor.Patch",
    )

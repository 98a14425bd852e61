"""The gallery image version: found by content, created with its publishing profile."""

from __future__ import annotations

import datetime as dt
import logging
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


def add_regions(clients: AzureClients, target: PublishTarget, state: VersionState) -> None:
    """Start replicating an existing version to the target's regions it lacks.

    Regions are only ever added: a region the target no longer lists keeps its replicas
    (removing them could break deployments that use them).
    """
    if target.gallery is None or target.image_definition is None:  # pragma: no cover
        return
    wanted = target_regions(target)
    have = set(state.target_regions)
    keep = [{"name": name} for name in state.target_regions if name not in _keys(wanted)]
    body = {
        "properties": {
            "publishingProfile": {"targetRegions": wanted + keep},
            # The update model requires the storage profile: send it back unchanged,
            # without the properties Azure computed (sizeInGB), which it refuses.
            "storageProfile": _writable_storage_profile(state.storage_profile),
        }
    }
    log.info(
        "adding regions %s to image version %s",
        ", ".join(r["name"] for r in wanted if r["name"] not in have),
        state.name,
    )
    begin: Any = clients.compute.gallery_image_versions.begin_update
    arm.call(
        f"adding regions to image version {state.name}",
        begin,
        target.resource_group,
        target.gallery.name,
        target.image_definition.name,
        state.name,
        body,
        polling=False,
    )


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


def _keys(regions: list[dict[str, Any]]) -> set[str]:
    return {region_key(str(r["name"])) for r in regions}


def version_body(
    target: PublishTarget,
    *,
    source_id: str,
    from_disk: bool,
    tags: Mapping[str, str],
    exclude_from_latest: bool | None = None,
) -> dict[str, Any]:
    """The create body of the version: target regions, replicas, storage, EOL, mode.

    *exclude_from_latest* overrides ``version.excludeFromLatest`` (a version waiting
    for its smoke test is excluded until it passes).
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
        {"osDiskImage": {"source": {"id": source_id}}}
        if from_disk
        else {"source": {"id": source_id}}
    )
    return {
        "location": target.location,
        "tags": dict(tags),
        "properties": {"publishingProfile": publishing, "storageProfile": storage},
    }


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
    except ResourceExistsError:
        existing = get_version(clients, target, name)
        want = (body.get("tags") or {}).get(TAG_CONTENT)
        if existing is None or existing.tags.get(TAG_CONTENT) != want:
            raise AzureError(
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

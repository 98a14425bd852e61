"""Retention: which older versions of the definition to delete.

Only versions this tool created (tagged with the store hash and the target) are
ever candidates, and never the version just published. ``keepVersions`` keeps
the newest N of ours (by published date, then by version number);
``deleteAfterEndOfLife`` deletes ours whose end-of-life date has passed.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.clients import azure_error, is_not_found
from nixos_azure_publish.azure.names import TAG_CONTENT, TAG_TARGET
from nixos_azure_publish.azure.version import parse_time

if TYPE_CHECKING:
    from collections.abc import Iterable

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VersionInfo:
    """What retention needs to know of one version."""

    name: str
    id: str
    ours: bool
    published: dt.datetime | None
    end_of_life: dt.datetime | None


@dataclass(frozen=True)
class Doomed:
    """A version retention deletes, and why."""

    name: str
    id: str
    reason: str


def version_info(body: dict[str, Any], target: PublishTarget) -> VersionInfo:
    """From a version's REST JSON."""
    tags = body.get("tags") or {}
    profile = (body.get("properties") or {}).get("publishingProfile") or {}
    return VersionInfo(
        name=str(body.get("name", "")),
        id=str(body.get("id", "")),
        ours=bool(tags.get(TAG_CONTENT)) and tags.get(TAG_TARGET) == target.name,
        published=parse_time(profile.get("publishedDate")),
        end_of_life=parse_time(profile.get("endOfLifeDate")),
    )


def _number(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (-1,)


def select(
    versions: Iterable[VersionInfo],
    *,
    keep_versions: int | None,
    delete_after_end_of_life: bool,
    current: str | None,
    now: dt.datetime,
) -> list[Doomed]:
    """The versions to delete, oldest first. Pure: no Azure calls."""
    ours = [v for v in versions if v.ours]
    ours.sort(
        key=lambda v: (v.published or dt.datetime.min.replace(tzinfo=dt.UTC), _number(v.name)),
        reverse=True,
    )
    doomed: dict[str, Doomed] = {}
    if keep_versions is not None:
        # The current version counts as one of the kept, wherever it sorts.
        kept = {current} if current else set()
        for v in ours:
            if len(kept) >= keep_versions:
                break
            kept.add(v.name)
        for v in ours:
            if v.name not in kept:
                doomed[v.name] = Doomed(v.name, v.id, f"older than the newest {keep_versions}")
    if delete_after_end_of_life:
        for v in ours:
            if v.end_of_life is not None and v.end_of_life <= now and v.name not in doomed:
                doomed[v.name] = Doomed(
                    v.name, v.id, f"end of life {v.end_of_life.date().isoformat()} has passed"
                )
    doomed.pop(current or "", None)
    order = {v.name: i for i, v in enumerate(reversed(ours))}
    return sorted(doomed.values(), key=lambda d: order[d.name])


def list_versions(clients: AzureClients, target: PublishTarget) -> list[VersionInfo]:
    """Every version of the target's definition (read-only)."""
    if target.gallery is None or target.image_definition is None:
        return []
    doing = "listing image versions"
    try:
        pager = arm.call(
            doing,
            clients.compute.gallery_image_versions.list_by_gallery_image,
            target.resource_group,
            target.gallery.name,
            target.image_definition.name,
        )
        return [version_info(arm.as_json(item), target) for item in pager]
    except HttpResponseError as error:
        if is_not_found(error):
            return []
        raise azure_error(error, doing) from None


def plan(
    clients: AzureClients, target: PublishTarget, *, current: str | None, now: dt.datetime
) -> list[Doomed]:
    """What retention would delete now."""
    r = target.retention
    if r.keep_versions is None and not r.delete_after_end_of_life:
        return []
    return select(
        list_versions(clients, target),
        keep_versions=r.keep_versions,
        delete_after_end_of_life=r.delete_after_end_of_life,
        current=current,
        now=now,
    )

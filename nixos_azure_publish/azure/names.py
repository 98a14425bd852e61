"""Content-addressed names and the tags every resource we create carries.

The upload disk and the managed image are named from the target name and the
image's content id (the Nix store hash, or a digest of the file when it is
not in a store). Two publishers of the same image therefore meet at the same
disk, and a rerun finds what an earlier, interrupted run left behind. The
tags say where a resource came from and let us find an image version that
already holds this exact image.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Final

from nixos_azure_publish import __version__, nix

if TYPE_CHECKING:
    from collections.abc import Mapping

    from nixos_azure_publish.config import PublishTarget

TAG_PREFIX: Final = "nixos-azure-publish."
TAG_TARGET: Final = TAG_PREFIX + "target"
TAG_CONTENT: Final = TAG_PREFIX + "store-hash"
TAG_STORE_PATH: Final = TAG_PREFIX + "store-path"
TAG_RELEASE: Final = TAG_PREFIX + "nixos-release"
TAG_LABEL: Final = TAG_PREFIX + "nixos-label"
TAG_TOOL: Final = TAG_PREFIX + "tool-version"
TAG_FLAKE_REV: Final = TAG_PREFIX + "flake-revision"
TAG_FILE_SIZE: Final = TAG_PREFIX + "file-size"
# Set on the upload disk once every byte is written and verified, before access is revoked:
# an Unattached disk without it holds an unfinished upload and cannot be written again.
TAG_UPLOAD: Final = TAG_PREFIX + "upload"
UPLOAD_COMPLETE: Final = "complete"
# On an imported version: the source's id (or its URL without the query), and the source
# version (the version name of a gallery source, a content digest of a URL source).
TAG_SOURCE: Final = TAG_PREFIX + "source"
TAG_SOURCE_VERSION: Final = TAG_PREFIX + "source-version"
# On throwaway and intermediate resources: when they were made (ARM gives no creation time
# for images, NICs and VNets), so that `gc` can tell an old leftover from a running publish's.
TAG_CREATED: Final = TAG_PREFIX + "created"
MAX_TAG_VALUE: Final = 256

_BLOCK: Final = 1024 * 1024


@dataclass(frozen=True)
class ContentId:
    """What identifies the image's content: a store hash, or a digest of the file."""

    hash: str
    store_path: str | None

    @property
    def source(self) -> str:
        """A short description for tags and reports."""
        return self.store_path or f"sha256:{self.hash}"


def content_id(path: Path, *, store_path: str | None = None) -> ContentId:
    """The image's content id: the store hash when it comes from a store, else a digest.

    A digest reads the file once; images built by Nix never need it.
    """
    store = nix.store_path_of(store_path or path)
    digest = nix.store_hash(store) if store is not None else None
    if store is not None and digest is not None:
        return ContentId(hash=digest, store_path=store)
    return ContentId(hash=file_digest(path), store_path=None)


def file_digest(path: Path) -> str:
    """sha256 of the file's content, as 32 hex digits (the length of a store hash).

    Only the data extents are read (holes are zeros): the digest covers the size
    and every 1 MiB block that is not all zeros, with its offset, so it does not
    depend on how sparse a copy of the same bytes happens to be.
    """
    from nixos_azure_publish import vhd  # noqa: PLC0415 - the extents come from the VHD module

    size = path.stat().st_size
    digest = hashlib.sha256(f"size={size}\n".encode())
    blocks: list[int] = []
    for extent in vhd.data_extents(path):
        first = extent.offset // _BLOCK
        last = (extent.offset + extent.length - 1) // _BLOCK
        blocks.extend(b for b in range(first, last + 1) if not blocks or b > blocks[-1])
    with path.open("rb") as handle:
        for block in blocks:
            handle.seek(block * _BLOCK)
            data = handle.read(_BLOCK)
            if data.count(0) != len(data):
                digest.update(f"{block * _BLOCK}:{len(data)}\n".encode())
                digest.update(data)
    return digest.hexdigest()[:32]


def upload_disk_name(target: PublishTarget, content: ContentId) -> str:
    """The upload disk: ``<target>-<hash>`` (at most 73 characters)."""
    return f"{target.name}-{content.hash}"


def managed_image_name(target: PublishTarget, content: ContentId) -> str:
    """The managed image: the configured name, else ``<target>-<hash>``."""
    return target.managed_image.name or f"{target.name}-{content.hash}"


def resource_tags(
    target: PublishTarget,
    content: ContentId,
    *,
    flake_revision: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The target's own tags plus our provenance tags."""
    ours = {
        TAG_TARGET: target.name,
        TAG_CONTENT: content.hash,
        TAG_STORE_PATH: content.source,
        TAG_TOOL: __version__,
    }
    if target.nixos.release:
        ours[TAG_RELEASE] = target.nixos.release
    if target.nixos.label:
        ours[TAG_LABEL] = target.nixos.label
    if flake_revision:
        ours[TAG_FLAKE_REV] = flake_revision
    if extra:
        ours.update(extra)
    tags = dict(target.tags)
    tags.update({k: v[:MAX_TAG_VALUE] for k, v in ours.items()})
    return tags


def container_tags(target: PublishTarget) -> dict[str, str]:
    """Tags for shared containers (group, gallery, definition): no per-image provenance."""
    tags = dict(target.tags)
    tags[TAG_TOOL] = __version__
    return tags


def has_content(tags: Mapping[str, str] | None, content: ContentId) -> bool:
    """True when a resource's tags say it holds *content*."""
    return bool(tags) and (tags or {}).get(TAG_CONTENT) == content.hash


def arm_datetime(value: str) -> str:
    """An ISO 8601 date or date-time as the RFC 3339 date-time ARM expects (UTC when no zone).

    Targets may say ``2026-12-31``; ``endOfLifeDate`` is a ``date-time`` in the API.
    """
    parsed = dt.datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.isoformat()


def resource_id(subscription: str, group: str, *parts: str) -> str:
    """An ARM id under ``Microsoft.Compute``: parts alternate type and name."""
    path = PurePosixPath("/subscriptions", subscription, "resourceGroups", group, "providers")
    return str(path.joinpath("Microsoft.Compute", *parts))

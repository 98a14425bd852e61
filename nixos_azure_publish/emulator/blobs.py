"""The emulator's blob side: real page blobs in Azurite behind revocable SAS URLs.

Each upload disk gets its own container (like Azure's ``md-`` accounts give
each disk its own blob). A grant adds a stored access policy and returns a
SAS that names it (``si=``); a revoke deletes the policy, so every SAS handed
out before stops working at once, as it does in Azure.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    AccessPolicy,
    BlobSasPermissions,
    BlobServiceClient,
    BlobType,
    ContainerSasPermissions,
    generate_blob_sas,
)

from nixos_azure_publish.emulator.azurite import ACCOUNT, ACCOUNT_KEY

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.azurite import Azurite

log = logging.getLogger(__name__)

DISK_BLOB = "abcd"
FOOTER_SIZE = 512
COPY_CHUNK = 4 * 1024 * 1024
"""The most one Put Page writes in Azure; a disk copy moves its pages in pieces this size."""


class BlobBackend:
    """Page blobs and log blobs in one Azurite account."""

    def __init__(self, azurite: Azurite, *, public_endpoint: str | None = None) -> None:
        self.azurite = azurite
        self.service = BlobServiceClient.from_connection_string(azurite.connection_string)
        self.public_endpoint = public_endpoint or azurite.blob_endpoint
        """Where the SAS URLs handed out point: the blob front (checksums checked)."""

    def _container(self, name: str, *, create: bool) -> None:
        if create:
            with contextlib.suppress(ResourceExistsError):
                self.service.create_container(name)

    def create_page_blob(self, container: str, size: int) -> None:
        """A fresh, all-zero page blob of *size* bytes (replacing any earlier one)."""
        self._container(container, create=True)
        self.service.get_blob_client(container, DISK_BLOB).create_page_blob(size=size)

    def blob_exists(self, container: str) -> bool:
        return bool(self.service.get_blob_client(container, DISK_BLOB).exists())

    def grant(
        self, container: str, *, policy_id: str, access: Literal["Read", "Write"], seconds: int
    ) -> str:
        """A SAS URL for the disk blob, valid *seconds*, revocable by :meth:`revoke`."""
        now = dt.datetime.now(dt.UTC)
        # The policy keeps whole seconds: round the expiry up, never short of *seconds*.
        expiry = (now + dt.timedelta(seconds=seconds + 1)).replace(microsecond=0)
        permission = ContainerSasPermissions(read=True, write=access == "Write")
        client = self.service.get_container_client(container)
        client.set_container_access_policy(
            signed_identifiers={
                policy_id: AccessPolicy(
                    permission=permission,
                    start=now - dt.timedelta(minutes=5),
                    expiry=expiry,
                )
            }
        )
        sas = generate_blob_sas(
            ACCOUNT, container, DISK_BLOB, account_key=ACCOUNT_KEY, policy_id=policy_id
        )
        return f"{self.public_endpoint}/{container}/{DISK_BLOB}?{sas}"

    def revoke(self, container: str) -> None:
        """Invalidate every SAS handed out for *container*."""
        try:
            self.service.get_container_client(container).set_container_access_policy(
                signed_identifiers={}
            )
        except ResourceNotFoundError:
            log.debug("container %s is gone; nothing to revoke", container)

    def size(self, container: str) -> int:
        props = self.service.get_blob_client(container, DISK_BLOB).get_blob_properties()
        return int(props.size)

    def read(self, container: str, offset: int, length: int, *, blob: str = DISK_BLOB) -> bytes:
        client = self.service.get_blob_client(container, blob)
        return bytes(client.download_blob(offset=offset, length=length).readall())

    def locate(self, url: str) -> tuple[str, str, str] | None:
        """(account, container, blob) of a blob URL of this account, or None for any other URL.

        The account is reached through the blob front or straight at Azurite; a query
        (a SAS) is ignored, as a storage account's owner reads without one.
        """
        base = url.split("?", 1)[0].split("#", 1)[0]
        for endpoint in (self.public_endpoint, self.azurite.blob_endpoint):
            prefix = endpoint.rstrip("/") + "/"
            if base.startswith(prefix):
                container, _, blob = unquote(base[len(prefix) :]).partition("/")
                if container and blob:
                    return prefix.rstrip("/").rsplit("/", 1)[-1], container, blob
        return None

    def blob_size(self, container: str, blob: str) -> tuple[int, bool] | None:
        """The size of *blob* and whether it is a page blob; None when there is no such blob."""
        try:
            props = self.service.get_blob_client(container, blob).get_blob_properties()
        except ResourceNotFoundError:
            return None
        return int(props.size), props.blob_type == BlobType.PAGEBLOB

    def copy_pages(self, source: tuple[str, str], container: str) -> None:
        """Make *container*'s disk blob a copy of page blob *source* (container, blob).

        Only the source's written pages are read and written, at most 4 MiB a request;
        the rest of the fresh blob reads as zeros, as the source's does.
        """
        reader = self.service.get_blob_client(*source)
        size = int(reader.get_blob_properties().size)
        self.create_page_blob(container, size)
        writer = self.service.get_blob_client(container, DISK_BLOB)
        for page_range in reader.list_page_ranges():
            if page_range.cleared or page_range.start is None or page_range.end is None:
                continue
            end = page_range.end + 1
            for offset in range(page_range.start, end, COPY_CHUNK):
                length = min(COPY_CHUNK, end - offset)
                data = reader.download_blob(offset=offset, length=length).readall()
                writer.upload_page(data, offset=offset, length=length)

    def delete(self, container: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.service.delete_container(container)

    def put_text(self, container: str, blob: str, text: str, *, hours: int = 24) -> str:
        """Store *text* as a block blob and return a read-only SAS URL to it."""
        self._container(container, create=True)
        client = self.service.get_blob_client(container, blob)
        client.upload_blob(text.encode("utf-8"), overwrite=True)
        sas = generate_blob_sas(
            ACCOUNT,
            container,
            blob,
            account_key=ACCOUNT_KEY,
            permission=BlobSasPermissions(read=True),
            expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours),
        )
        return f"{self.public_endpoint}/{container}/{blob}?{sas}"

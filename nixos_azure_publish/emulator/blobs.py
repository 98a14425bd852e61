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

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.blob import (
    AccessPolicy,
    BlobSasPermissions,
    BlobServiceClient,
    ContainerSasPermissions,
    generate_blob_sas,
)

from nixos_azure_publish.emulator.azurite import ACCOUNT, ACCOUNT_KEY

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.azurite import Azurite

log = logging.getLogger(__name__)

DISK_BLOB = "abcd"
FOOTER_SIZE = 512


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

    def read(self, container: str, offset: int, length: int) -> bytes:
        blob = self.service.get_blob_client(container, DISK_BLOB)
        return bytes(blob.download_blob(offset=offset, length=length).readall())

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

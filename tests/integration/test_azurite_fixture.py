"""The Azurite fixture serves a real blob endpoint that the real SDK can write to."""

from __future__ import annotations

from azure.storage.blob import BlobServiceClient


def test_azurite_accepts_a_page_blob(azurite):
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container("probe")
    blob = container.get_blob_client("disk.vhd")
    blob.create_page_blob(size=1024 * 1024)
    blob.upload_page(b"\x01" * 512, offset=512, length=512)
    ranges = [(r.start, r.end) for r in blob.list_page_ranges()]
    assert ranges == [(512, 1023)]
    assert blob.download_blob(offset=512, length=512).readall() == b"\x01" * 512

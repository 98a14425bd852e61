"""Two publishes of one image meet at its managed image: the second waits until it is ready.

A Trusted Launch definition's version is made from the managed image, and Azure
refuses a version whose source image is still being created (409). The second
publish finds the image the first one is creating; it must wait for it, and a 409
that is not about the version's name must not be reported as a name taken.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish import config
from nixos_azure_publish.azure import image as azimage
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.azure.clients import AzureSettings, make_clients
from nixos_azure_publish.azure.names import TAG_CONTENT
from nixos_azure_publish.emulator.testing import clients as sdk_clients
from nixos_azure_publish.errors import AzureError
from tests.helpers.targets import DEFINITION, GALLERY, GROUP, write_target

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget
    from nixos_azure_publish.emulator.server import Emulator

NAME = "nixos-test-image"
TAGS = {TAG_CONTENT: "c0ffee"}


def _image_being_created(
    emulator: Emulator, tmp_path: Path
) -> tuple[tuple[AzureClients, PublishTarget], str]:
    """Our clients and the upload disk's id, with the managed image still Creating."""
    sdk = sdk_clients(emulator)
    sdk.create_group(GROUP, "westeurope")
    disk = sdk.upload_disk(GROUP, "upload-disk")
    target = config.load_target_file(
        write_target(tmp_path, tmp_path / "unused.vhd"), environ=emulator.environ
    )
    settings = AzureSettings.from_environ(subscription_id=None, environ=emulator.environ)
    ours = make_clients(settings)
    emulator.faults.lro_delay = 1.0  # the image stays Creating for a second
    body: Any = {**azimage.image_body(target, disk_id=str(disk.id), tags=TAGS)}
    sdk.compute.images.begin_create_or_update(GROUP, NAME, body)  # not waited for
    return (ours, target), str(disk.id)


def test_an_image_another_publish_is_creating_is_waited_for(fast, tmp_path):
    (ours, target), disk_id = _image_being_created(fast, tmp_path)
    seen = azimage.get_image(ours, GROUP, NAME)
    assert seen is not None
    assert seen["properties"]["provisioningState"] == "Creating"

    image, created = azimage.ensure_image(ours, target, name=NAME, disk_id=disk_id, tags=TAGS)

    assert not created
    assert image["properties"]["provisioningState"] == "Succeeded"


def test_a_failed_image_is_reported_with_what_to_do(fast, tmp_path):
    (ours, _target), _disk = _image_being_created(fast, tmp_path)
    failed = {"properties": {"provisioningState": "Failed"}}
    with pytest.raises(AzureError, match="provisioning state Failed") as caught:
        azimage.wait_until_ready(ours, GROUP, NAME, failed)
    assert f"az image delete -g {GROUP} -n {NAME}" in (caught.value.hint or "")


def test_waiting_gives_up_after_its_timeout(fast, tmp_path):
    (ours, _target), _disk = _image_being_created(fast, tmp_path)
    fast.faults.lro_delay = 30.0
    creating = azimage.get_image(ours, GROUP, NAME)
    assert creating is not None
    with pytest.raises(AzureError, match="still Creating") as caught:
        azimage.wait_until_ready(ours, GROUP, NAME, creating, timeout=0.3)
    assert caught.value.rerun_helps


def test_a_409_that_is_not_about_the_name_says_what_azure_said(fast, tmp_path):
    (ours, target), disk_id = _image_being_created(fast, tmp_path)
    sdk = sdk_clients(fast)
    gallery: Any = {"location": "westeurope"}
    sdk.compute.galleries.begin_create_or_update(GROUP, GALLERY, gallery).result()
    definition: Any = {
        "location": "westeurope",
        "properties": {
            "osType": "Linux",
            "osState": "Generalized",
            "hyperVGeneration": "V2",
            "identifier": {"publisher": "NixOS", "offer": "NixOS", "sku": "25.05-gen2"},
        },
    }
    sdk.compute.gallery_images.begin_create_or_update(
        GROUP, GALLERY, DEFINITION, definition
    ).result()
    # Another image, still Creating when the version names it.
    fast.faults.lro_delay = 30.0
    slow: Any = {**azimage.image_body(target, disk_id=disk_id, tags=TAGS)}
    sdk.compute.images.begin_create_or_update(GROUP, "slow-image", slow)
    creating = azimage.get_image(ours, GROUP, "slow-image")
    assert creating is not None
    assert creating["properties"]["provisioningState"] == "Creating"
    image_id = str(creating["id"])
    body = azversion.version_body(target, tags=TAGS, source_id=image_id, from_disk=False)
    with pytest.raises(AzureError) as caught:
        azversion.create_version(ours, target, "1.0.0", body)
    assert not isinstance(caught.value, azversion.VersionNameTakenError)
    assert "not ready" in str(caught.value)


def test_two_publishers_meeting_at_the_image_both_succeed(fast, tmp_path):
    """The second caller arrives while the first is still creating the image."""
    (ours, target), disk_id = _image_being_created(fast, tmp_path)
    results: list[tuple[dict[str, Any], bool]] = []
    threads = [
        threading.Thread(
            target=lambda: results.append(
                azimage.ensure_image(ours, target, name=NAME, disk_id=disk_id, tags=TAGS)
            )
        )
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(results) == 2
    assert {r[0]["properties"]["provisioningState"] for r in results} == {"Succeeded"}

"""Every request and response of the emulator's flows, validated against Azure's API specs.

The traffic between the real SDK clients and the emulator is recorded
(``TrafficRecorder``) and checked offline by Microsoft's validator ``oav``
against the published OpenAPI specs the emulator ships (``emulator/specs/`` (DiskRP, GalleryRP,
ComputeRP; see its SOURCES.md). Two blind spots of oav are closed here: it
passes silently when an operation or api-version is not in the spec, so every
recorded operation must appear among oav's matched operations; and each file is
validated against its own provider's spec only (two specs that define the same
operation also pass silently). LRO polling URLs, resource groups and the
network provider have no spec here and are not validated.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import HttpResponseError

from nixos_azure_publish.emulator.recording import TrafficRecorder
from nixos_azure_publish.emulator.server import Emulator, run_emulator
from nixos_azure_publish.emulator.testing import clients
from tests.helpers.emulator_flow import (
    LOCATION,
    step_delete_everything,
    step_gallery_version,
    step_image,
    step_smoke_test_vm,
    step_upload,
)
from tests.helpers.images import make_image
from tests.helpers.specs import validate
from tests.helpers.targets import write_target

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nixos_azure_publish.emulator.azurite import Azurite


def step_community(sdk: Any, disk_id: str) -> None:
    """Share a gallery with the community and read it back as a consumer would."""
    compute = sdk.compute
    gallery = sdk.create_gallery(
        "nixos-images",
        "public",
        location=LOCATION,
        community="nixos",
        description="NixOS community images",
    )
    sdk.create_definition(
        "nixos-images",
        "public",
        "nixos",
        location=LOCATION,
        hyperVGeneration="V2",
        identifier={"publisher": "NixOS", "offer": "nixos", "sku": "unstable"},
        # Standard: its version comes straight from the disk.
        security="Standard",
    )
    sdk.create_version(
        "nixos-images", "public", "nixos", "1.0.0", disk_id, location=LOCATION, os_disk=True
    )
    public = gallery.sharing_profile.community_gallery_info.public_names[0]
    compute.community_galleries.get(LOCATION, public)
    list(compute.community_gallery_images.list(LOCATION, public))
    compute.community_gallery_images.get(LOCATION, public, "nixos")
    list(compute.community_gallery_image_versions.list(LOCATION, public, "nixos"))
    compute.community_gallery_image_versions.get(LOCATION, public, "nixos", "latest")
    compute.gallery_sharing_profile.begin_update(
        "nixos-images", "public", {"operationType": "Reset"}
    ).result()
    list(compute.gallery_image_versions.list_by_gallery_image("nixos-images", "public", "nixos"))
    list(compute.gallery_images.list_by_gallery("nixos-images", "public"))
    compute.gallery_image_versions.begin_delete("nixos-images", "public", "nixos", "1.0.0").result()
    compute.gallery_images.begin_delete("nixos-images", "public", "nixos").result()
    compute.galleries.begin_delete("nixos-images", "public").result()


def step_errors(sdk: Any) -> None:
    """Error answers are part of the contract too (ARM's CloudError)."""
    compute = sdk.compute
    with pytest.raises(HttpResponseError):
        compute.disks.get("nixos-images", "missing")
    with pytest.raises(HttpResponseError):
        compute.galleries.get("nixos-images", "missing")
    with pytest.raises(HttpResponseError):
        compute.virtual_machines.get("nixos-images", "missing")
    body: Any = {"location": LOCATION}
    with pytest.raises(HttpResponseError):
        compute.galleries.begin_create_or_update("nixos-images", "bad-name", body)


def record_all_flows(emulator: Emulator) -> list[dict[str, Any]]:
    recorder = TrafficRecorder()
    sdk = clients(emulator, recorder=recorder)
    sdk.create_group("nixos-images", LOCATION)
    disk = step_upload(emulator, sdk)
    sdk.compute.disks.begin_update("nixos-images", disk.name, {"tags": {"stage": "uploaded"}})
    image = step_image(sdk, disk)
    version = step_gallery_version(emulator, sdk, image)
    step_community(sdk, disk.id)
    step_smoke_test_vm(emulator, sdk, version)
    step_errors(sdk)
    step_delete_everything(sdk)
    return recorder.exchanges


@pytest.fixture(scope="module")
def recorded(emulator_azurite: Azurite) -> Iterator[tuple[Emulator, list[dict[str, Any]]]]:
    """One recorded run of every flow, shared by the tests of this module."""
    with run_emulator(azurite=emulator_azurite) as emulator:
        yield emulator, record_all_flows(emulator)


def test_recorded_traffic_validates_against_the_specs(recorded, tmp_path, capsys):
    emulator, exchanges = recorded
    result = validate(emulator, exchanges, tmp_path)
    assert result.problems == []
    assert result.exchanges > 0
    with capsys.disabled():
        print(  # noqa: T201 - the count is this test's report
            f"\n{result.exchanges} operations validated against the specs "
            f"({len(result.operations)} distinct: {', '.join(sorted(result.operations))})"
        )


def test_a_response_missing_a_required_property_fails(recorded, tmp_path):
    emulator, exchanges = recorded
    broken = json.loads(json.dumps(exchanges))
    hits = 0
    for exchange in broken:
        request, response = exchange["liveRequest"], exchange["liveResponse"]
        if (
            request["method"] == "GET"
            and "/galleries/nixos_gallery/images/nixos?" in request["url"]
        ):
            del response["body"]["properties"]["identifier"]  # required by GalleryImageProperties
            hits += 1
    assert hits
    result = validate(emulator, broken, tmp_path)
    assert any("Missing required property: identifier" in p for p in result.problems)


def test_an_operation_outside_the_spec_is_reported(recorded, tmp_path):
    emulator, exchanges = recorded
    moved = json.loads(json.dumps(exchanges))
    for exchange in moved:
        exchange["liveRequest"]["url"] = exchange["liveRequest"]["url"].replace(
            "api-version=2026-03-03", "api-version=2025-03-03"
        )
    result = validate(emulator, moved, tmp_path)
    assert any("was not matched to a spec operation" in p for p in result.problems)


def test_the_publish_command_traffic_validates_against_the_specs(
    emulator, tmp_path, monkeypatch, capsys
):
    """The tool's own requests (and the emulator's answers to them) follow the specs too."""
    from nixos_azure_publish.cli import main  # noqa: PLC0415 - only this test needs the tool

    traffic = emulator.app.record_traffic()
    emulator.settings.replication_seconds = 0.2
    target = write_target(
        tmp_path,
        make_image(tmp_path / "image"),
        name="nixos-spec",
        gallery={
            "name": "spec_gallery",
            "community": {
                "publicNamePrefix": "nixos",
                "publisherUri": "https://nixos.org",
                "publisherContact": "images@example.org",
                "eula": "https://nixos.org/eula",
            },
        },
        imageDefinition={
            "name": "nixos-spec",
            "publisher": "NixOS",
            "offer": "NixOS",
            "sku": "spec",
        },
        managedImage={"enable": True},
        version={"targetRegions": ["westeurope", "northeurope"]},
    )
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    code = main(["--json", "publish", "--config", str(target)])
    out = capsys.readouterr().out
    assert code == 0, out
    result = validate(emulator, traffic.exchanges, tmp_path / "oav")
    assert result.problems == []
    assert {"Disks_CreateOrUpdate", "GalleryImageVersions_CreateOrUpdate"} <= result.operations
    with capsys.disabled():
        print(  # noqa: T201 - the count is this test's report
            f"\npublish: {result.exchanges} operations validated against the specs "
            f"({len(result.operations)} distinct)"
        )

"""Azure's rules for galleries, sharing, image definitions, versions and replication."""

from __future__ import annotations

import time

import pytest
from azure.core.exceptions import ResourceNotFoundError

from tests.helpers.sdk import sdk_in_group
from tests.integration.conftest import error_of

GROUP = "gallery-rules"
LOCATION = "westeurope"
IDENT = {"publisher": "NixOS", "offer": "nixos", "sku": "25.05"}
COMMUNITY = {
    "publisherUri": "https://nixos.org",
    "publisherContact": "images@example.org",
    "eula": "https://nixos.org/licence",
    "publicNamePrefix": "nixos",
}


@pytest.fixture
def sdk(emulator):
    sdk = sdk_in_group(emulator, GROUP, LOCATION, replication_seconds=0.1)
    sdk.create_gallery(GROUP, location=LOCATION)
    return sdk


# Versions here come straight from disks, which a Trusted Launch-type definition refuses
# (test_emulator_strict covers that rule): the definitions are Standard unless a test says.
STANDARD = [{"name": "SecurityType", "value": "Standard"}]


def definition(**properties):
    return {
        "location": LOCATION,
        "properties": {
            "osType": "Linux",
            "osState": "Generalized",
            "identifier": dict(IDENT),
            "features": STANDARD,
            **properties,
        },
    }


def version_body(source_id, regions=("westeurope",), **profile):
    return {
        "location": LOCATION,
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": r} for r in regions], **profile},
            "storageProfile": {"osDiskImage": {"source": {"id": source_id}}},
        },
    }


def put_version(sdk, body, name="1.0.0"):
    """Start creating version *name* of the definition ``nixos`` (the poller)."""
    return sdk.compute.gallery_image_versions.begin_create_or_update(
        GROUP, "gallery", "nixos", name, body
    )


def make_definition(sdk, name="nixos", **properties):
    return sdk.compute.gallery_images.begin_create_or_update(
        GROUP, "gallery", name, definition(**properties)
    ).result()


def wait_replicated(sdk, image, version, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = sdk.compute.gallery_image_versions.get(
            GROUP, "gallery", image, version, expand="ReplicationStatus"
        )
        if got.replication_status.aggregated_state == "Completed":
            return got
        time.sleep(0.05)
    pytest.fail("replication did not complete")


def test_gallery_name_rules(sdk):
    error = error_of(
        lambda: sdk.compute.galleries.begin_create_or_update(
            GROUP, "bad-name", {"location": LOCATION}
        )
    )
    assert error.error.code == "InvalidParameter"


def test_gallery_create_answers_201_with_creating(sdk, emulator):
    poller = sdk.compute.galleries.begin_create_or_update(
        GROUP, "second", {"location": LOCATION, "properties": {"description": "d"}}
    )
    first = poller.polling_method()._initial_response.http_response
    assert first.status_code == 201
    assert first.json()["properties"]["provisioningState"] == "Creating"
    assert poller.result().provisioning_state == "Succeeded"


def test_community_gallery_needs_its_info(sdk):
    error = error_of(
        lambda: sdk.compute.galleries.begin_create_or_update(
            GROUP,
            "public",
            {"location": LOCATION, "properties": {"sharingProfile": {"permissions": "Community"}}},
        )
    )
    assert error.error.code == "InvalidParameter"
    assert "communityGalleryInfo" in error.message


def test_enable_community_only_on_a_community_gallery(sdk):
    error = error_of(
        lambda: sdk.compute.gallery_sharing_profile.begin_update(
            GROUP, "gallery", {"operationType": "EnableCommunity"}
        ).result()
    )
    assert error.error.code == "OperationNotAllowed"


def test_community_sharing_life_cycle(sdk, emulator):
    gallery = sdk.compute.galleries.begin_create_or_update(
        GROUP,
        "public",
        {
            "location": LOCATION,
            "properties": {
                "sharingProfile": {"permissions": "Community", "communityGalleryInfo": COMMUNITY}
            },
        },
    ).result()
    info = gallery.sharing_profile.community_gallery_info
    assert info.community_gallery_enabled is False
    (public_name,) = info.public_names
    assert public_name.startswith("nixos-")
    with pytest.raises(ResourceNotFoundError):
        sdk.compute.community_galleries.get(LOCATION, public_name)

    sdk.compute.gallery_sharing_profile.begin_update(
        GROUP, "public", {"operationType": "EnableCommunity"}
    ).result()
    gallery = sdk.compute.galleries.get(GROUP, "public")
    assert gallery.sharing_profile.community_gallery_info.community_gallery_enabled is True
    community = sdk.compute.community_galleries.get(LOCATION, public_name)
    assert community.identifier.unique_id == f"/CommunityGalleries/{public_name}"
    assert community.properties.community_metadata.publisher_contact == "images@example.org"

    disk = sdk.upload_disk(GROUP, "disk")
    sdk.compute.gallery_images.begin_create_or_update(GROUP, "public", "nixos", definition())
    sdk.compute.gallery_images.get(GROUP, "public", "nixos")
    sdk.compute.gallery_image_versions.begin_create_or_update(
        GROUP, "public", "nixos", "1.0.0", version_body(disk.id, ("westeurope", "eastus"))
    ).result()
    image = sdk.compute.community_gallery_images.get(LOCATION, public_name, "nixos")
    assert image.properties.identifier.publisher == "NixOS"
    latest = sdk.compute.community_gallery_image_versions.get(
        "eastus", public_name, "nixos", "latest"
    )
    assert latest.name == "1.0.0"
    assert [v.name for v in sdk.compute.community_gallery_image_versions.list(
        "northeurope", public_name, "nixos"
    )] == []  # fmt: skip

    sdk.compute.gallery_sharing_profile.begin_update(
        GROUP, "public", {"operationType": "Reset"}
    ).result()
    with pytest.raises(ResourceNotFoundError):
        sdk.compute.community_galleries.get(LOCATION, public_name)


def test_definition_defaults_to_v2_trusted_launch_supported(sdk):
    image = make_definition(sdk, features=None)
    assert image.hyper_v_generation == "V2"
    assert image.architecture == "x64"
    assert {f.name: f.value for f in image.features} == {"SecurityType": "TrustedLaunchSupported"}
    v1 = make_definition(
        sdk, "legacy", hyperVGeneration="V1", identifier={**IDENT, "sku": "legacy"}, features=None
    )
    assert v1.hyper_v_generation == "V1"
    assert not v1.features


def test_definition_required_fields(sdk):
    body = definition()
    del body["properties"]["osState"]
    error = error_of(
        lambda: sdk.compute.gallery_images.begin_create_or_update(GROUP, "gallery", "x", body)
    )
    assert error.error.code == "InvalidParameter"
    assert "osState" in error.message


def test_identifier_is_unique_per_gallery(sdk):
    make_definition(sdk)
    error = error_of(lambda: make_definition(sdk, "other"))
    assert error.status_code == 409
    assert error.error.code == "Conflict"
    # Another gallery may use the same identifier.
    sdk.compute.galleries.begin_create_or_update(GROUP, "g2", {"location": LOCATION}).result()
    sdk.compute.gallery_images.begin_create_or_update(GROUP, "g2", "nixos", definition()).result()


@pytest.mark.parametrize(
    ("change", "prop"),
    [
        ({"osType": "Windows"}, "osType"),
        ({"hyperVGeneration": "V1"}, "hyperVGeneration"),
        ({"architecture": "Arm64"}, "architecture"),
        ({"identifier": {**IDENT, "sku": "other"}}, "identifier"),
        ({"features": [{"name": "SecurityType", "value": "TrustedLaunch"}]}, "SecurityType"),
    ],
)
def test_definition_fields_are_immutable(sdk, change, prop):
    make_definition(sdk)
    error = error_of(lambda: make_definition(sdk, **change))
    assert error.error.code == "PropertyChangeNotAllowed"
    assert prop in error.message


def test_definition_mutable_fields_update(sdk):
    make_definition(sdk)
    image = make_definition(sdk, description="new", endOfLifeDate="2030-01-01T00:00:00+00:00")
    assert image.description == "new"
    assert image.end_of_life_date.year == 2030


@pytest.mark.parametrize("name", ["1.0", "1.0.0.0", "a.b.c", "2147483648.0.0", "1.0.-1"])
def test_version_name_format(sdk, name):
    disk = sdk.upload_disk(GROUP, "disk")
    make_definition(sdk)
    error = error_of(lambda: put_version(sdk, version_body(disk.id), name))
    assert error.error.code == "InvalidParameter"


def test_version_source_must_exist_and_be_ready(sdk):
    make_definition(sdk)
    disk_id = sdk.upload_disk(GROUP, "disk").id
    error = error_of(lambda: put_version(sdk, version_body(disk_id + "-missing")))
    assert error.status_code == 404
    assert error.error.code == "NotFound"
    pending = sdk.upload_disk(GROUP, "pending", revoke=False)
    error = error_of(lambda: put_version(sdk, version_body(pending.id)))
    assert error.error.code == "OperationNotAllowed"


def test_generation_must_match_the_definition(sdk):
    make_definition(sdk)  # V2
    disk = sdk.upload_disk(GROUP, "disk", generation="V1")
    error = error_of(lambda: put_version(sdk, version_body(disk.id)))
    assert error.status_code == 409
    assert error.error.code == "Conflict"
    assert "different Hypervisor generation" in error.message


def test_target_regions_rules(sdk):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    error = error_of(lambda: put_version(sdk, version_body(disk.id, ("eastus",))))
    assert error.error.code == "InvalidParameter"
    body = version_body(disk.id)
    body["properties"]["publishingProfile"]["targetRegions"][0]["regionalReplicaCount"] = 101
    error = error_of(lambda: put_version(sdk, body))
    assert error.error.code == "InvalidParameter"


def test_version_updates_regions_and_flags(sdk, emulator):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    sdk.compute.gallery_image_versions.begin_create_or_update(
        GROUP,
        "gallery",
        "nixos",
        "1.0.0",
        version_body(disk.id, excludeFromLatest=True, endOfLifeDate="2031-01-01T00:00:00Z"),
    ).result()
    emulator.settings.replication_seconds = 0.5
    poller = sdk.compute.gallery_image_versions.begin_update(
        GROUP,
        "gallery",
        "nixos",
        "1.0.0",
        {
            "properties": {
                "publishingProfile": {
                    "targetRegions": [{"name": "westeurope"}, {"name": "uksouth"}],
                    "excludeFromLatest": False,
                },
                "storageProfile": {"osDiskImage": {"source": {"id": disk.id}}},
            }
        },
    )
    during = sdk.compute.gallery_image_versions.get(
        GROUP, "gallery", "nixos", "1.0.0", expand="ReplicationStatus"
    )
    states = {s.region: s.state for s in during.replication_status.summary}
    assert states == {"westeurope": "Completed", "uksouth": "Replicating"}
    version = poller.result()
    assert version.publishing_profile.exclude_from_latest is False
    assert version.publishing_profile.end_of_life_date.year == 2031
    done = wait_replicated(sdk, "nixos", "1.0.0")
    assert {s.region for s in done.replication_status.summary} == {"westeurope", "uksouth"}


@pytest.mark.parametrize("safety", [None, {"allowDeletionOfReplicatedLocations": False}])
def test_replicated_regions_are_protected_by_default(sdk, safety):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    body = version_body(disk.id, ("westeurope", "eastus"))
    if safety is not None:
        body["properties"]["safetyProfile"] = safety
    put_version(sdk, body).result()
    update = {
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": "westeurope"}]},
            "storageProfile": {"osDiskImage": {"source": {"id": disk.id}}},
        }
    }
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.begin_update(
            GROUP, "gallery", "nixos", "1.0.0", update
        ).result()
    )
    assert error.status_code == 400
    assert error.error.code == "BadRequest"
    assert "Deletion of previously replicated locations is not allowed" in error.error.message
    # Allowed by the update itself, as the tool does for --remove-unlisted-regions.
    update["properties"]["safetyProfile"] = {"allowDeletionOfReplicatedLocations": True}
    version = sdk.compute.gallery_image_versions.begin_update(
        GROUP, "gallery", "nixos", "1.0.0", update
    ).result()
    assert [r.name for r in version.publishing_profile.target_regions] == ["westeurope"]


def test_version_update_needs_the_storage_profile(sdk):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    put_version(sdk, version_body(disk.id)).result()
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.begin_update(
            GROUP,
            "gallery",
            "nixos",
            "1.0.0",
            {"properties": {"publishingProfile": {"excludeFromLatest": True}}},
        )
    )
    assert error.error.code == "InvalidParameter"
    assert "storageProfile" in error.message


def test_version_source_cannot_change(sdk):
    make_definition(sdk)
    first = sdk.upload_disk(GROUP, "disk")
    second = sdk.upload_disk(GROUP, "disk2")
    put_version(sdk, version_body(first.id)).result()
    error = error_of(lambda: put_version(sdk, version_body(second.id)))
    assert error.error.code == "PropertyChangeNotAllowed"


def test_version_from_a_managed_image(sdk):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    image = sdk.create_image(GROUP, "image", disk.id, location=LOCATION)
    body = version_body(image.id)
    body["properties"]["storageProfile"] = {"source": {"id": image.id}}
    version = put_version(sdk, body).result()
    assert version.storage_profile.source.id == image.id


def test_image_generation_must_match_its_disk(sdk):
    disk = sdk.upload_disk(GROUP, "disk", generation="V1")
    error = error_of(
        lambda: sdk.create_image(GROUP, "image", disk.id, location=LOCATION, generation="V2")
    )
    assert error.error.code == "InvalidParameter"


def test_nested_resources_block_deletion(sdk):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    put_version(sdk, version_body(disk.id)).result()
    error = error_of(lambda: sdk.compute.galleries.begin_delete(GROUP, "gallery").result())
    assert error.error.code == "CannotDeleteResource"
    error = error_of(
        lambda: sdk.compute.gallery_images.begin_delete(GROUP, "gallery", "nixos").result()
    )
    assert error.error.code == "CannotDeleteResource"


def test_expand_accepts_only_known_values(sdk):
    make_definition(sdk)
    disk = sdk.upload_disk(GROUP, "disk")
    put_version(sdk, version_body(disk.id)).result()
    plain = sdk.compute.gallery_image_versions.get(GROUP, "gallery", "nixos", "1.0.0")
    assert plain.replication_status is None
    error = error_of(
        lambda: sdk.compute.gallery_image_versions.get(
            GROUP, "gallery", "nixos", "1.0.0", expand="Everything"
        )
    )
    assert error.error.code == "InvalidParameter"

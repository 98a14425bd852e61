"""Content-addressed names, provenance tags, and the pure parts of the Azure modules."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from nixos_azure_publish import __version__, nix
from nixos_azure_publish.azure import gallery, names, replication, version
from nixos_azure_publish.azure.clients import (
    DEFAULT_ENDPOINT,
    EMULATOR_POLLING_INTERVAL,
    AzureSettings,
    StaticTokenCredential,
    azure_error,
)
from nixos_azure_publish.azure.disk import DiskState, check_reusable, disk_body, group_of
from nixos_azure_publish.config import load_target
from nixos_azure_publish.errors import AzureError, UsageError

STORE_HASH = "0123456789abcdfghijklmnpqrsvwxyz"
SUB = "00000000-0000-0000-0000-000000000001"


def target(**over):
    data = {
        "name": "nixos-test",
        "resourceGroup": "rg",
        "location": "westeurope",
        "hyperVGeneration": "V2",
        "subscriptionId": SUB,
        "nixos": {"release": "25.05", "label": "25.05.1.abc"},
        "tags": {"team": "images"},
        "gallery": {"name": "gal"},
        "imageDefinition": {"name": "def", "publisher": "P", "offer": "O", "sku": "S"},
        "version": {"targetRegions": ["westeurope", {"name": "northeurope", "replicas": 3}]},
    }
    data.update(over)
    return load_target(data)


def test_store_path_of_finds_the_top_level_store_path():
    vhd = "/nix/store/abc-azure-image/nixos.vhd"
    assert nix.store_path_of(vhd, environ={}) == "/nix/store/abc-azure-image"
    assert nix.store_path_of("/nix/store/abc-disk.vhd", environ={}) == "/nix/store/abc-disk.vhd"
    assert nix.store_path_of("/var/images/disk.vhd", environ={}) is None
    assert nix.store_path_of("/nix/storefront/x", environ={}) is None
    assert nix.store_path_of("/s/abc-x/y.vhd", environ={"NIX_STORE_DIR": "/s"}) == "/s/abc-x"


def test_a_link_to_a_store_path_is_resolved(tmp_path):
    store = tmp_path / "store"
    image = store / f"{STORE_HASH}-nixos-image-azure" / "disk.vhd"
    image.parent.mkdir(parents=True)
    image.write_bytes(b"x")
    (tmp_path / "result").symlink_to(image.parent)
    environ = {"NIX_STORE_DIR": str(store)}
    link = tmp_path / "result" / "disk.vhd"
    assert nix.store_path_of(link, environ=environ) == str(image.parent)
    assert nix.store_path_of(tmp_path / "elsewhere.vhd", environ=environ) is None


def test_the_store_hash_is_read_only_from_a_real_store_name():
    assert nix.store_hash(f"/nix/store/{STORE_HASH}-img") == STORE_HASH
    assert nix.store_hash(f"/s/{STORE_HASH}-img/") == STORE_HASH
    assert nix.store_hash("/nix/store/abc-img") is None  # not 32 base-32 digits
    assert nix.store_hash(f"/nix/store/{STORE_HASH}") is None  # no name


def test_the_content_id_honours_nix_store_dir(tmp_path, monkeypatch):
    image = tmp_path / f"{STORE_HASH}-nixos-image-azure" / "disk.vhd"
    image.parent.mkdir()
    image.write_bytes(b"x")
    monkeypatch.setenv("NIX_STORE_DIR", str(tmp_path))
    content = names.content_id(image)
    assert (content.hash, content.store_path) == (STORE_HASH, str(image.parent))


def test_store_path_and_hash_come_from_the_store_path():
    path = f"/nix/store/{STORE_HASH}-nixos-image-azure/disk.vhd"
    assert nix.store_path_of(path) == f"/nix/store/{STORE_HASH}-nixos-image-azure"
    content = names.content_id(Path(path), store_path=None)
    assert content.hash == STORE_HASH
    assert content.store_path == f"/nix/store/{STORE_HASH}-nixos-image-azure"


def test_content_of_a_file_outside_the_store_is_a_digest_of_its_bytes(tmp_path):
    sparse = tmp_path / "sparse.vhd"
    with sparse.open("wb") as handle:
        handle.truncate(8 * 1024 * 1024)
        handle.seek(3 * 1024 * 1024 + 17)
        handle.write(b"nixos" * 100)
    dense = tmp_path / "dense.vhd"
    dense.write_bytes(sparse.read_bytes())  # the same bytes, no holes
    content = names.content_id(sparse)
    assert content.store_path is None
    assert len(content.hash) == 32
    assert content.source == f"sha256:{content.hash}"
    assert names.content_id(dense).hash == content.hash
    with dense.open("r+b") as handle:
        handle.seek(7 * 1024 * 1024)
        handle.write(b"x")
    assert names.content_id(dense).hash != content.hash
    with sparse.open("r+b") as handle:
        handle.truncate(9 * 1024 * 1024)  # more zeros: another disk size
    assert names.content_id(sparse).hash != content.hash


def test_names_are_valid_azure_disk_names():
    t = target(name="a" * 40)
    content = names.ContentId(hash=STORE_HASH, store_path=None)
    disk = names.upload_disk_name(t, content)
    assert disk == f"{'a' * 40}-{STORE_HASH}"
    assert len(disk) <= 80
    assert names.managed_image_name(t, content) == disk
    custom = target(managedImage={"enable": True, "name": "mine"})
    assert names.managed_image_name(custom, content) == "mine"


def test_tags_carry_provenance_and_user_tags():
    content = names.ContentId(hash=STORE_HASH, store_path=f"/nix/store/{STORE_HASH}-img")
    tags = names.resource_tags(target(), content, flake_revision="abc123")
    assert tags["team"] == "images"
    assert tags[names.TAG_CONTENT] == STORE_HASH
    assert tags[names.TAG_STORE_PATH] == f"/nix/store/{STORE_HASH}-img"
    assert tags[names.TAG_RELEASE] == "25.05"
    assert tags[names.TAG_LABEL] == "25.05.1.abc"
    assert tags[names.TAG_TOOL] == __version__
    assert tags[names.TAG_FLAKE_REV] == "abc123"
    assert names.TAG_FLAKE_REV not in names.resource_tags(target(), content)
    assert all(len(v) <= names.MAX_TAG_VALUE for v in tags.values())
    assert names.has_content(tags, content)
    assert not names.has_content({}, content)


def test_dates_become_rfc3339_date_times():
    assert names.arm_datetime("2099-01-01") == "2099-01-01T00:00:00+00:00"
    assert names.arm_datetime("2099-01-01T12:00:00+02:00") == "2099-01-01T12:00:00+02:00"


def test_resource_id():
    assert names.resource_id(SUB, "rg", "galleries", "g", "images", "d") == (
        f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d"
    )
    assert group_of(names.resource_id(SUB, "my-rg", "disks", "x")) == "my-rg"


def test_disk_body_is_an_upload_disk_of_the_exact_file_size():
    body = disk_body(target(), size=64 * 1024 * 1024 + 512, tags={"a": "b"})
    props = body["properties"]
    assert props["creationData"] == {"createOption": "Upload", "uploadSizeBytes": 67109376}
    assert props["hyperVGeneration"] == "V2"
    assert props["osType"] == "Linux"
    assert props["supportedCapabilities"] == {"architecture": "x64"}
    assert body["sku"] == {"name": "Standard_LRS"}


def disk_state(**over):
    base: dict[str, Any] = {
        "id": "/x/disks/d",
        "name": "d",
        "state": "ReadyToUpload",
        "size": 100,
        "tags": {names.TAG_CONTENT: STORE_HASH},
        "time_created": None,
    }
    base.update(over)
    return DiskState(**base)


def test_a_disk_with_other_content_or_size_is_refused():
    check_reusable(disk_state(), content_hash=STORE_HASH, size=100)
    with pytest.raises(AzureError, match="not tagged as holding this image"):
        check_reusable(disk_state(tags={}), content_hash=STORE_HASH, size=100)
    with pytest.raises(AzureError, match="created for 100 bytes"):
        check_reusable(disk_state(), content_hash=STORE_HASH, size=200)
    with pytest.raises(AzureError, match="Attached"):
        check_reusable(disk_state(state="Attached"), content_hash=STORE_HASH, size=100)


def test_disk_state_from_json():
    state = DiskState.from_json(
        {
            "id": "i",
            "name": "n",
            "tags": {names.TAG_UPLOAD: names.UPLOAD_COMPLETE},
            "properties": {
                "diskState": "Unattached",
                "creationData": {"createOption": "Upload", "uploadSizeBytes": 7},
                "timeCreated": "2026-01-02T03:04:05.1234567+00:00",
            },
        }
    )
    assert (state.state, state.size, state.uploaded, state.writable) == (
        "Unattached",
        7,
        True,
        False,
    )


def test_definition_body_always_states_generation_and_security():
    body = gallery.definition_body(target(), tags={})
    props = body["properties"]
    assert props["hyperVGeneration"] == "V2"
    assert props["architecture"] == "x64"
    assert {"name": "SecurityType", "value": "TrustedLaunchSupported"} in props["features"]
    assert props["identifier"] == {"publisher": "P", "offer": "O", "sku": "S"}
    v1 = gallery.definition_body(target(hyperVGeneration="V1"), tags={})
    assert {"name": "SecurityType", "value": "Standard"} in v1["properties"]["features"]


def test_definition_conflicts_name_each_difference():
    t = target()
    same = gallery.definition_body(t, tags={})
    assert gallery.definition_conflicts(same, t) == []
    other = gallery.definition_body(target(hyperVGeneration="V1"), tags={})
    problems = gallery.definition_conflicts(other, t)
    assert "hyperVGeneration is 'V1', the target needs 'V2'" in problems
    assert any(p.startswith("securityType") for p in problems)
    with pytest.raises(AzureError, match=r"disagrees with the target.*hyperVGeneration"):
        gallery.check_definition(other, t)
    # A definition made before hyperVGeneration existed is V1.
    legacy = {"properties": {"osType": "Linux", "osState": "Generalized"}}
    assert any("hyperVGeneration" in p for p in gallery.definition_conflicts(legacy, t))


def test_community_gallery_cannot_be_made_from_a_private_one():
    community = target(
        gallery={
            "name": "gal",
            "community": {
                "publicNamePrefix": "nixos",
                "publisherUri": "https://nixos.org",
                "publisherContact": "a@b.org",
                "eula": "MIT",
            },
        }
    )
    assert community.gallery is not None
    body = gallery.gallery_body(community.gallery, location="westeurope", tags={})
    assert body["properties"]["sharingProfile"]["permissions"] == "Community"
    with pytest.raises(AzureError, match="community sharing can only be chosen"):
        gallery.check_gallery({"properties": {}}, community.gallery)


def test_version_body_has_regions_replicas_and_source():
    t = target(
        version={
            "targetRegions": ["westeurope", {"name": "northeurope", "replicas": 3}],
            "endOfLifeDate": "2099-01-01",
            "excludeFromLatest": True,
        }
    )
    body = version.version_body(t, source_id="/disk", from_disk=True, tags={"k": "v"})
    profile = body["properties"]["publishingProfile"]
    assert profile["targetRegions"] == [
        {"name": "westeurope", "regionalReplicaCount": 1, "storageAccountType": "Standard_LRS"},
        {"name": "northeurope", "regionalReplicaCount": 3, "storageAccountType": "Standard_LRS"},
    ]
    assert profile["excludeFromLatest"] is True
    assert profile["endOfLifeDate"] == "2099-01-01T00:00:00+00:00"  # a date-time in the API
    assert profile["replicationMode"] == "Full"
    assert body["properties"]["storageProfile"] == {"osDiskImage": {"source": {"id": "/disk"}}}
    image = version.version_body(t, source_id="/image", from_disk=False, tags={})
    assert image["properties"]["storageProfile"] == {"source": {"id": "/image"}}


def test_version_state_reads_replication_per_region():
    state = replication.VersionState.from_json(
        {
            "id": "vid",
            "name": "1.2.3",
            "tags": {},
            "properties": {
                "provisioningState": "Succeeded",
                "publishingProfile": {"targetRegions": [{"name": "West Europe"}]},
                "replicationStatus": {
                    "aggregatedState": "InProgress",
                    "summary": [{"region": "West Europe", "state": "Replicating", "progress": 40}],
                },
            },
        }
    )
    assert state.regions == (replication.RegionStatus("westeurope", "Replicating", 40),)
    assert not state.replicated
    assert not state.failed
    assert version.drift(target(), state).added == ("northeurope",)
    assert replication.describe(state) == "1.2.3: Succeeded; westeurope Replicating 40%"


def test_drift_names_every_difference_from_the_target():
    state = replication.VersionState.from_json(
        {
            "id": "vid",
            "name": "1.2.3",
            "properties": {
                "provisioningState": "Succeeded",
                "publishingProfile": {
                    "replicaCount": 1,
                    "storageAccountType": "Standard_LRS",
                    "endOfLifeDate": "2030-01-01T00:00:00.0000000+00:00",
                    "targetRegions": [
                        {"name": "West Europe", "regionalReplicaCount": 2},
                        {"name": "East US", "storageAccountType": "Standard_ZRS"},
                    ],
                },
            },
        }
    )
    regions = ["westeurope", {"name": "northeurope", "replicas": 3}]
    same_eol = target(version={"targetRegions": regions, "endOfLifeDate": "2030-01-01"})
    change = version.drift(same_eol, state)
    assert change.added == ("northeurope",)
    assert change.changed == ("westeurope: replicas 2 -> 1",)
    assert change.extra == ("eastus",)
    assert change.end_of_life_date is None  # the same instant, written differently
    assert change.describe() == "add regions northeurope; westeurope: replicas 2 -> 1"
    assert change.describe(remove_extra=True, done=True) == (
        "added regions northeurope; westeurope: replicas 2 -> 1; removed regions eastus"
    )
    later = target(version={"targetRegions": regions, "endOfLifeDate": "2031-06-30"})
    assert version.drift(later, state).end_of_life_date == "2031-06-30T00:00:00+00:00"
    assert version.drift(later, state).update_needed


def test_settings_from_environment():
    env = {
        "NIXOS_AZURE_PUBLISH_ENDPOINT": "https://127.0.0.1:8443/",
        "NIXOS_AZURE_PUBLISH_EMULATOR": "1",
        "AZURE_SUBSCRIPTION_ID": SUB,
    }
    settings = AzureSettings.from_environ(subscription_id=None, environ=env)
    assert settings.endpoint == "https://127.0.0.1:8443"
    assert settings.emulator
    assert settings.subscription_id == SUB
    assert settings.polling_interval == EMULATOR_POLLING_INTERVAL
    real = AzureSettings.from_environ(subscription_id=SUB, environ={})
    assert (real.endpoint, real.emulator, real.connection_verify) == (DEFAULT_ENDPOINT, False, True)
    with pytest.raises(UsageError, match="no Azure subscription"):
        AzureSettings.from_environ(subscription_id=None, environ={})
    with pytest.raises(UsageError, match="https"):
        AzureSettings.from_environ(
            subscription_id=SUB, environ={"NIXOS_AZURE_PUBLISH_ENDPOINT": "http://x"}
        )
    with pytest.raises(UsageError, match="not a file"):
        AzureSettings.from_environ(
            subscription_id=SUB, environ={"NIXOS_AZURE_PUBLISH_CA_CERT": "/nonexistent.pem"}
        )


def test_static_token_is_valid_for_an_hour():
    token = StaticTokenCredential().get_token("scope")
    assert token.expires_on > dt.datetime.now(dt.UTC).timestamp() + 3000


def test_azure_errors_are_redacted():
    error = HttpResponseError(message="failed at https://x/blob?sv=1&sig=SECRETSIG")
    translated = azure_error(error, "doing it")
    assert "SECRETSIG" not in str(translated)
    assert translated.message.startswith("doing it failed")

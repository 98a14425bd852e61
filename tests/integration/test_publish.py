"""End-to-end publishes against the emulator (HTTPS ARM + Azurite) with the real SDK clients.

The publish command runs for real: in-process through ``main(argv)`` or as a
subprocess when a test must kill or interrupt it. Assertions read the
emulator's state through the real ``azure-mgmt-compute`` client, the disk's
blob through ``azure-storage-blob``, and the emulator's request log.
"""

from __future__ import annotations

import json
import signal
import time
from typing import TYPE_CHECKING, Any

import pytest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.compute.models import Disk, GalleryImageVersion
from azure.storage.blob import BlobClient

from nixos_azure_publish.azure import disk as azdisk
from nixos_azure_publish.azure import names
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.cli import main
from nixos_azure_publish.config import load_target_file, render_version_name
from nixos_azure_publish.errors import ExitCode
from tests.helpers.images import MiB, make_image
from tests.helpers.nix import example_env, run_example
from tests.helpers.publishing import (
    STEPS,
    assert_converged,
    compute,
    create_definition,
    disks,
    images,
    kill_at_step,
    run_publisher,
    versions,
    wait_for_line,
    wait_for_pages,
    writes,
)
from tests.helpers.targets import DEFINITION, GALLERY, GROUP, write_target

pytestmark = pytest.mark.usefixtures("state_home")

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator
    from tests.helpers.publishing import Cli


def test_fresh_publish_then_a_rerun_changes_nothing(fast, cli, tmp_path):
    image = make_image(tmp_path / "img")
    # Keep the disk so that its blob can be compared with the image byte for byte.
    target = write_target(tmp_path, image, cleanup={"deleteUploadDisk": False})
    state = str(tmp_path / "state")
    code, report = cli.publish("--config", str(target), "--state-dir", state)
    assert code == 0, report
    assert report["status"] == "published"
    client = compute(fast)

    definition = client.gallery_images.get(GROUP, GALLERY, DEFINITION).as_dict()["properties"]
    assert definition["hyperVGeneration"] == "V2"
    assert definition["architecture"] == "x64"
    assert {"name": "SecurityType", "value": "TrustedLaunchSupported"} in definition["features"]
    assert definition["identifier"] == {"publisher": "NixOS", "offer": "NixOS", "sku": "25.05-gen2"}

    (version,) = versions(client)
    assert version.name == report["version"]
    full = client.gallery_image_versions.get(
        GROUP, GALLERY, DEFINITION, version.name, expand="ReplicationStatus"
    ).as_dict()
    props = full["properties"]
    regions = {
        r["name"].replace(" ", "").lower(): r for r in props["publishingProfile"]["targetRegions"]
    }
    assert set(regions) == {"westeurope", "northeurope"}
    assert regions["northeurope"]["regionalReplicaCount"] == 2
    assert props["replicationStatus"]["aggregatedState"] == "Completed"
    assert {s["state"] for s in props["replicationStatus"]["summary"]} == {"Completed"}
    assert full["tags"]["nixos-azure-publish.store-hash"] == report["storeHash"]
    assert full["tags"]["nixos-azure-publish.nixos-release"] == "25.05"
    assert [r["state"] for r in report["regions"]] == ["Completed", "Completed"]

    (disk,) = disks(client)
    disk_json = disk.as_dict()
    assert disk_json["properties"]["diskState"] == "Unattached"  # write access revoked
    assert disk_json["tags"]["nixos-azure-publish.store-hash"] == report["storeHash"]
    # A Trusted Launch definition takes no disk as a version's source: a managed image of it,
    # kept here with the disk.
    (managed,) = images(client)
    assert props["storageProfile"]["source"]["id"].lower() == managed.id.lower()
    assert managed.storage_profile.os_disk.managed_disk.id.lower() == disk.id.lower()
    read = client.disks.begin_grant_access(
        GROUP, disk.name, {"access": "Read", "durationInSeconds": 600}
    ).result()
    try:
        blob = BlobClient.from_blob_url(str(read.access_sas)).download_blob().readall()
    finally:
        client.disks.begin_revoke_access(GROUP, disk.name).result()
    assert blob == image.read_bytes()
    assert report["upload"]["bytesSent"] == report["upload"]["dataBytes"] > 0
    assert report["upload"]["bytesSent"] < image.stat().st_size // 10  # holes are not sent

    again = cli.publish_again("--config", str(target), "--state-dir", state)
    assert again["headline"].startswith(f"already published as {version.name}")
    assert again["upload"] is None
    assert len(versions(client)) == 1


def test_published_disk_is_cleaned_up_and_markdown_summary_written(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=2)
    target = write_target(tmp_path, image, managedImage={"enable": True})
    summary = tmp_path / "summary.md"
    code, report = cli.publish("--config", str(target), summary=summary)
    assert code == 0, report
    client = compute(fast)
    assert disks(client) == []  # cleanup.deleteUploadDisk defaults to true
    (managed,) = images(client)  # enabled in the config: kept, and the version's source
    (version,) = versions(client)
    source = version.as_dict()["properties"]["storageProfile"]["source"]["id"]
    assert source.lower() == managed.id.lower()
    text = summary.read_text()
    assert text.startswith(f"## NixOS image nixos-test: published {report['version']}")
    assert "| northeurope | Completed | 100% | 2 | Standard_LRS |" in text


def test_a_trusted_launch_version_comes_from_a_managed_image_deleted_with_the_disk(
    fast, cli, tmp_path
):
    image = make_image(tmp_path / "img", seed=12)
    target = write_target(tmp_path, image)
    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    client = compute(fast)
    (version,) = versions(client)
    source = version.as_dict()["properties"]["storageProfile"]["source"]["id"]
    assert "/providers/Microsoft.Compute/images/" in source
    assert disks(client) == []
    assert images(client) == []
    (record,) = [r for r in report["resources"] if r["kind"] == "managed image"]
    assert record["action"] == "deleted"
    assert record["detail"] == "the version's source, deleted once the version held the image"


def test_definition_with_another_generation_fails_before_any_upload(fast, cli, tmp_path):
    create_definition(fast, GROUP, GALLERY, DEFINITION, generation="V1", security="Standard")
    client = compute(fast)
    before = len(fast.requests)
    target = write_target(tmp_path, make_image(tmp_path / "img"))
    code, report = cli.publish("--config", str(target), "--state-dir", str(tmp_path / "s"))
    assert code == ExitCode.AZURE
    message = report["error"]["message"]
    assert f"image definition {DEFINITION} exists and disagrees" in message
    assert "hyperVGeneration is 'V1', the target needs 'V2'" in message
    assert "new imageDefinition.name" in report["error"]["hint"]
    assert writes(fast, before) == []  # no disk, no grant, no upload
    assert disks(client) == []


def test_dry_run_on_empty_and_on_published_subscription_writes_nothing(fast, cli, tmp_path, capsys):
    image = make_image(tmp_path / "img", seed=3)
    target = write_target(tmp_path, image)
    state = str(tmp_path / "state")
    code, plan = cli.publish("--config", str(target), "--dry-run", "--state-dir", state)
    assert code == 0, plan
    assert writes(fast) == []
    assert plan["status"] == "planned"
    assert plan["upload"] is None
    actions = {(r["kind"], r["name"]): r["action"] for r in plan["resources"]}
    disk_name = f"nixos-test-{plan['storeHash']}"
    assert actions == {
        ("resource group", GROUP): "would-create",
        ("disk", disk_name): "would-create",
        ("gallery", GALLERY): "would-create",
        ("image definition", DEFINITION): "would-create",
        ("managed image", disk_name): "would-create",
        ("image version", plan["version"]): "would-create",
    }
    version_plan = next(r for r in plan["resources"] if r["kind"] == "image version")
    assert version_plan["detail"] == "westeurope x1, northeurope x2"

    code, done = cli.publish("--config", str(target), "--state-dir", state)
    assert code == 0, done
    before = len(fast.requests)
    capsys.readouterr()
    code = main(["publish", "--config", str(target), "--dry-run", "--state-dir", state])
    console = capsys.readouterr().out
    assert code == 0
    assert writes(fast, before) == []
    assert console.startswith(
        f"dry run: already published as {done['version']}; nothing would change"
    )
    assert f"exists        image version {done['version']}" in console
    assert "would-create" not in console


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_step_then_rerun_completes(fast, tmp_path, step):
    kill_at_step(fast, tmp_path, step, seed=4)


def test_two_publishers_of_the_same_image_make_one_version(fast, tmp_path):
    image = make_image(tmp_path / "img", seed=5)
    target = write_target(tmp_path, image)
    first = run_publisher(fast, target, tmp_path / "state-a")
    second = run_publisher(fast, target, tmp_path / "state-b")
    results = [p.communicate(timeout=120) for p in (first, second)]
    for proc, (_out, err) in zip((first, second), results, strict=True):
        assert proc.returncode == 0, err[-3000:]
    reports = [json.loads(out) for out, _ in results]
    assert reports[0]["version"] == reports[1]["version"]
    assert_converged(fast, reports[0])


def test_ctrl_c_during_upload_revokes_and_the_rerun_resumes(fast, tmp_path):
    # 64 MiB of data written one 4 MiB page at a time: still running when the signal comes.
    image = make_image(tmp_path / "img", seed=6, size_mib=96, data_mib=64)
    target = write_target(tmp_path, image, upload={"concurrency": 1})
    state = tmp_path / "state"
    proc = run_publisher(fast, target, state)
    wait_for_line(proc, "nixos_azure_publish.upload.engine: uploading")
    wait_for_pages(fast, 4 * MiB)  # some pages are written, not all
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err[-3000:]
    error = json.loads(out)["error"]
    assert error["kind"] == "interrupted"
    assert error["message"].startswith(
        "interrupted during step 'upload' (write access to the upload disk was revoked)"
    )
    assert "sig=" not in err.replace("sig=REDACTED", "")  # the write SAS never reaches a log
    client = compute(fast)
    states = {d.as_dict()["properties"]["diskState"] for d in disks(client)}
    assert "ActiveUpload" not in states  # access revoked

    rerun = run_publisher(fast, target, state)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err[-3000:]
    report = json.loads(out)
    assert report["status"] == "published"
    # The interrupted upload left its journal: only the rest is sent again.
    assert 0 < report["upload"]["bytesSent"] < report["upload"]["dataBytes"]
    assert_converged(fast, report)


def test_sigterm_is_handled_like_ctrl_c(fast, tmp_path):
    image = make_image(tmp_path / "img", seed=7, size_mib=96, data_mib=64)
    target = write_target(tmp_path, image, upload={"concurrency": 1})
    proc = run_publisher(fast, target, tmp_path / "state")
    wait_for_line(proc, "nixos_azure_publish.upload.engine: uploading")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err[-3000:]
    states = {d.as_dict()["properties"]["diskState"] for d in disks(compute(fast))}
    assert "ActiveUpload" not in states


def test_emulator_flag_starts_and_stops_its_own_emulator(tmp_path, monkeypatch, capsys):
    for key in ("NIXOS_AZURE_PUBLISH_ENDPOINT", "NIXOS_AZURE_PUBLISH_CA_CERT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    image = make_image(tmp_path / "img", seed=8)
    target = write_target(tmp_path, image, version={"targetRegions": ["westeurope"]})
    capsys.readouterr()
    code = main(
        ["publish", "--emulator", "--json", "--config", str(target), "--state-dir", str(tmp_path)]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err[-3000:]
    report = json.loads(captured.out)
    assert report["status"] == "published"
    assert report["regions"] == [
        {
            "region": "westeurope",
            "state": "Completed",
            "progress": 100,
            "replicas": 1,
            "storageAccountType": "Standard_LRS",
            "details": "",
        }
    ]


def test_the_main_job_publishes_the_example_image(tmp_path):
    report = run_example(example_env(tmp_path))
    assert report["status"] == "published"
    assert report["target"].startswith("nixos-example")
    assert {r["state"] for r in report["regions"]} == {"Completed"}
    assert report["upload"]["bytesSent"] > 0
    assert any(r["kind"] == "disk" and r["action"] == "deleted" for r in report["resources"])


def test_a_version_name_taken_by_another_image_moves_to_the_next_patch(fast, cli, tmp_path):
    # Image A is published and its disk kept; image B's upload disk is made by hand so
    # that we know the time its version name is rendered from, and a version of that
    # name holding image A is created first: B must not fail, nor reuse it.
    image_a = make_image(tmp_path / "a", seed=9)
    target_a = write_target(tmp_path / "a", image_a, cleanup={"deleteUploadDisk": False})
    code, report_a = cli.publish("--config", str(target_a))
    assert code == 0, report_a
    client = compute(fast)
    # Kept with the disk: the managed image A's version was made from.
    (image_id_a,) = [str(i.id) for i in client.images.list_by_resource_group(GROUP)]

    image_b = make_image(tmp_path / "b", seed=10)
    target_b = write_target(tmp_path / "b", image_b)
    content_b = names.content_id(image_b)
    loaded_b = load_target_file(target_b)
    disk_b = client.disks.begin_create_or_update(
        GROUP,
        names.upload_disk_name(loaded_b, content_b),
        Disk(
            azdisk.disk_body(
                loaded_b,
                size=image_b.stat().st_size,
                tags=names.resource_tags(loaded_b, content_b),
            )
        ),
    ).result()
    created = azversion.parse_time(disk_b.as_dict()["properties"]["timeCreated"])
    assert created is not None
    taken = render_version_name(loaded_b, store_hash=content_b.hash, now=created)
    client.gallery_image_versions.begin_create_or_update(
        GROUP,
        GALLERY,
        DEFINITION,
        taken,
        GalleryImageVersion(
            azversion.version_body(
                loaded_b,
                source_id=image_id_a,
                from_disk=False,
                tags={names.TAG_CONTENT: report_a["storeHash"]},
            )
        ),
    ).result()

    code, report_b = cli.publish("--config", str(target_b))
    assert code == 0, report_b
    major, minor, patch = taken.split(".")
    assert report_b["version"] == f"{major}.{minor}.{int(patch) + 1}"
    by_name = {v.name: v.as_dict()["tags"][names.TAG_CONTENT] for v in versions(client)}
    assert by_name[taken] == report_a["storeHash"]
    assert by_name[report_b["version"]] == content_b.hash


def test_a_target_without_a_gallery_uploads_a_disk_and_keeps_it(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=11)
    target = write_target(tmp_path, image, gallery=None, imageDefinition=None)
    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    assert report["status"] == "published"
    assert report["headline"] == "uploaded nixos-test into its disk (no gallery configured)"
    (disk,) = disks(compute(fast))
    assert disk.as_dict()["properties"]["diskState"] == "Unattached"
    cli.publish_again("--config", str(target))


def test_a_community_gallery_is_created_shared(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=12)
    community = {
        "publicNamePrefix": "nixos",
        "publisherUri": "https://nixos.org",
        "publisherContact": "images@example.org",
        "eula": "https://nixos.org/eula",
    }
    target = write_target(tmp_path, image, gallery={"name": GALLERY, "community": community})
    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    gallery = compute(fast).galleries.get(GROUP, GALLERY).as_dict()["properties"]
    sharing = gallery["sharingProfile"]
    assert sharing["permissions"] == "Community"
    assert sharing["communityGalleryInfo"]["communityGalleryEnabled"] is True
    assert sharing["communityGalleryInfo"]["publicNamePrefix"] == "nixos"
    # The report names what community users boot, on the rerun too.
    (public_name,) = sharing["communityGalleryInfo"]["publicNames"]
    expected = f"/CommunityGalleries/{public_name}/Images/{DEFINITION}/Versions/{report['version']}"
    assert report["communityImageId"] == expected
    code, again = cli.publish("--config", str(target))
    assert code == 0, again
    assert again["communityImageId"] == expected


def test_a_flake_target_is_built_with_nix_and_tagged_with_its_provenance(
    fast, cli, fixture_flake, monkeypatch
):
    flake = fixture_flake("publish")
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_FLAKE_REVISION", "0123abcd")
    args = ("--flake", flake, "--target", "default")
    code, report = cli.publish(*args)
    assert code == 0, report
    store_path = report["storePath"]
    assert store_path.startswith("/nix/store/")
    assert report["storeHash"] == store_path.removeprefix("/nix/store/")[:32]
    assert report["flakeRevision"] == "0123abcd"
    # The fixture target names its own subscription; the emulator serves any.
    client = ComputeManagementClient(
        fast.credential(), "00000000-0000-0000-0000-000000000000", **fast.client_kwargs()
    )
    (version,) = client.gallery_image_versions.list_by_gallery_image(
        "nixos-images", "fixture_gallery", "nixos-fixture"
    )
    tags = version.as_dict()["tags"]
    assert tags[names.TAG_STORE_PATH] == store_path
    assert tags[names.TAG_CONTENT] == report["storeHash"]
    assert tags[names.TAG_RELEASE] == "25.05"
    assert tags[names.TAG_LABEL] == "azure-25.05.20250612.abc1234"
    assert tags[names.TAG_FLAKE_REV] == "0123abcd"
    assert tags[names.TAG_TARGET] == "fixture-gen2"

    code, again = cli.publish(*args)
    assert code == 0, again
    assert again["status"] == "already-published"


def rerun_after_a_failed_version(cli: Cli, target: Path) -> tuple[str, dict[str, Any]]:
    """The failed version is there, its disk kept; the rerun once the fault is gone needs
    no upload. The failed version's name and the rerun's report."""
    client = compute(cli.emulator)
    (broken,) = versions(client)
    assert len(disks(client)) == 1  # kept: the rerun needs no upload

    cli.emulator.faults.reset()
    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    assert report["upload"] is None
    return str(broken.name), report


def actions(report: dict[str, Any]) -> set[tuple[str, str, str]]:
    """What a report says was done: (kind, name, action) of each resource."""
    return {(r["kind"], r["name"], r["action"]) for r in report["resources"]}


def test_a_version_that_failed_is_replaced_on_the_rerun(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=13)
    target = write_target(tmp_path, image)
    fast.faults.fail_lro = {"Microsoft.Compute/galleries/images/versions/write": "InternalError"}
    summary = tmp_path / "summary.md"
    code, failed = cli.publish("--config", str(target), summary=summary)
    assert code == ExitCode.AZURE, failed
    assert "failed" in failed["error"]["message"]
    # CI still gets a summary: what failed, and what was done before.
    text = summary.read_text()
    assert text.startswith(
        f"## NixOS image nixos-test: failed to publish to {GALLERY}/{DEFINITION}"
    )
    assert "| upload | done |" in text
    broken, report = rerun_after_a_failed_version(cli, target)
    (record,) = [r for r in report["resources"] if r["kind"] == "image version"]
    if record["name"] == broken:  # the same name again (it comes from the disk's time)
        assert record["detail"] == "replaces the failed version of that name"
    else:
        assert ("image version", broken, "deleted") in actions(report)
    assert record["action"] == "created"
    assert_converged(fast, report)


def test_a_region_that_fails_to_replicate_is_reported_and_the_rerun_replaces_the_version(
    fast, cli, tmp_path
):
    image = make_image(tmp_path / "img", seed=15)
    target = write_target(tmp_path, image)
    fast.faults.fail_replication["northeurope"] = "Replication failed: the storage is unavailable."
    code, failed = cli.publish("--config", str(target))
    assert code == ExitCode.AZURE, failed
    message = failed["error"]["message"]
    assert "failed to replicate to 1 of 2 regions" in message
    assert "northeurope: Replication failed: the storage is unavailable." in message
    assert failed["error"]["hint"] == (
        "Run again: a failed version of this image is deleted and published anew"
    )
    assert failed["error"]["rerunHelps"] is True
    broken, report = rerun_after_a_failed_version(cli, target)
    client = compute(fast)
    (version,) = versions(client)
    state = client.gallery_image_versions.get(
        GROUP, GALLERY, DEFINITION, version.name, expand="ReplicationStatus"
    )
    assert state.replication_status.aggregated_state == "Completed"
    assert [r["state"] for r in report["regions"]] == ["Completed", "Completed"]
    if version.name != broken:
        assert ("image version", broken, "deleted") in actions(report)
    assert_converged(fast, report)


def test_throttling_and_transient_errors_are_retried(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=14)
    target = write_target(tmp_path, image)
    fast.faults.seed = 7
    fast.faults.retry_after = 0.1
    fast.faults.throttle_rate = 0.15
    fast.faults.error_rate = 0.1
    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    answered = {r.status for r in fast.requests if r.fault}
    assert {429, 503} <= answered  # the faults really happened
    assert_converged(fast, report)


def test_regions_added_to_the_target_are_added_to_the_published_version(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=15)
    one = write_target(tmp_path / "one", image, version={"targetRegions": ["westeurope"]})
    code, first = cli.publish("--config", str(one))
    assert code == 0, first
    two = write_target(
        tmp_path / "two",
        image,
        version={"targetRegions": ["westeurope", {"name": "eastus", "replicas": 2}]},
    )
    before = len(fast.requests)
    code, plan = cli.publish("--config", str(two), "--dry-run")
    assert code == 0, plan
    assert writes(fast, before) == []
    assert {
        "kind": "image version",
        "name": first["version"],
        "action": "would-update",
    }.items() <= next(r for r in plan["resources"] if r["kind"] == "image version").items()

    code, second = cli.publish("--config", str(two))
    assert code == 0, second
    assert second["status"] == "published"
    assert second["version"] == first["version"]
    assert second["upload"] is None  # nothing uploaded again
    (record,) = [r for r in second["resources"] if r["kind"] == "image version"]
    assert (record["action"], record["detail"]) == ("updated", "added regions eastus")
    assert second["headline"] == f"published {first['version']} to {GALLERY}/{DEFINITION}"
    assert {(r["region"], r["state"]) for r in second["regions"]} == {
        ("westeurope", "Completed"),
        ("eastus", "Completed"),
    }
    (version,) = versions(compute(fast))
    regions = version.as_dict()["properties"]["publishingProfile"]["targetRegions"]
    by_name = {r["name"].replace(" ", "").lower(): r for r in regions}
    assert by_name["eastus"]["regionalReplicaCount"] == 2

    before = len(fast.requests)
    code, third = cli.publish("--config", str(two))
    assert code == 0, third
    assert third["status"] == "already-published"
    assert writes(fast, before) == []


def _region_settings(emulator: Emulator) -> dict[str, tuple[int, str]]:
    (version,) = versions(compute(emulator))
    regions = version.as_dict()["properties"]["publishingProfile"]["targetRegions"]
    return {
        r["name"].replace(" ", "").lower(): (r["regionalReplicaCount"], r["storageAccountType"])
        for r in regions
    }


def test_changed_replicas_and_storage_are_applied_to_the_published_version(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=18)
    two = {"targetRegions": ["westeurope", {"name": "northeurope", "replicas": 2}]}
    first_target = write_target(tmp_path / "one", image, version=two)
    code, first = cli.publish("--config", str(first_target))
    assert code == 0, first
    three = {
        "targetRegions": [
            "westeurope",
            {"name": "northeurope", "replicas": 3, "storageAccountType": "Standard_ZRS"},
        ]
    }
    target = write_target(tmp_path / "two", image, version=three)

    before = len(fast.requests)
    code, plan = cli.publish("--config", str(target), "--dry-run")
    assert code == 0, plan
    assert writes(fast, before) == []
    detail = "northeurope: replicas 2 -> 3; northeurope: storage Standard_LRS -> Standard_ZRS"
    assert ("image version", first["version"], "would-update", detail) in {
        (r["kind"], r["name"], r["action"], r["detail"]) for r in plan["resources"]
    }
    assert plan["headline"] == (
        f"dry run: already published as {first['version']};"
        f" would update image version {first['version']}"
    )
    # The report says what Azure holds, not what the target asks.
    assert {(r["region"], r["replicas"]) for r in plan["regions"]} == {
        ("westeurope", 1),
        ("northeurope", 2),
    }

    code, second = cli.publish("--config", str(target))
    assert code == 0, second
    assert second["status"] == "published"
    assert second["upload"] is None
    (record,) = [r for r in second["resources"] if r["kind"] == "image version"]
    assert (record["action"], record["detail"]) == ("updated", detail)
    assert _region_settings(fast) == {
        "westeurope": (1, "Standard_LRS"),
        "northeurope": (3, "Standard_ZRS"),
    }
    assert {(r["region"], r["replicas"]) for r in second["regions"]} == {
        ("westeurope", 1),
        ("northeurope", 3),
    }
    before = len(fast.requests)
    code, third = cli.publish("--config", str(target))
    assert code == 0, third
    assert third["status"] == "already-published"
    assert writes(fast, before) == []


def test_a_region_dropped_from_the_target_is_kept_unless_removal_is_asked_for(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=19)
    code, first = cli.publish("--config", str(write_target(tmp_path / "one", image)))
    assert code == 0, first
    fewer = write_target(tmp_path / "two", image, version={"targetRegions": ["westeurope"]})

    before = len(fast.requests)
    code, kept = cli.publish("--config", str(fewer))
    assert code == 0, kept
    assert writes(fast, before) == []
    assert kept["status"] == "already-published"
    (record,) = [r for r in kept["resources"] if r["kind"] == "image version"]
    assert (record["action"], record["detail"]) == (
        "kept",
        "regions northeurope are no longer in the target; kept",
    )
    assert set(_region_settings(fast)) == {"westeurope", "northeurope"}

    code, plan = cli.publish("--config", str(fewer), "--dry-run", "--remove-unlisted-regions")
    assert code == 0, plan
    assert plan["headline"].endswith(f"would update image version {first['version']}")

    code, removed = cli.publish("--config", str(fewer), "--remove-unlisted-regions")
    assert code == 0, removed
    (record,) = [r for r in removed["resources"] if r["kind"] == "image version"]
    assert (record["action"], record["detail"]) == ("updated", "removed regions northeurope")
    # Azure refuses the removal unless the update allows it (the emulator's rule, tested
    # in test_emulator_galleries): the tool's update does.
    assert set(_region_settings(fast)) == {"westeurope"}


def test_emulator_flag_publishes_into_the_running_emulator_it_finds_exported(
    fast, cli, tmp_path, capsys
):
    # As after `eval "$(emulator serve --detach)"`: a rerun must meet the first run's work,
    # so --emulator uses that emulator instead of starting a throwaway one.
    image = make_image(tmp_path / "img", seed=21)
    target = write_target(tmp_path, image)
    code, first = cli.publish("--config", str(target), "--emulator")
    assert code == 0, first
    assert first["status"] == "published"
    assert [v.name for v in versions(compute(fast))] == [first["version"]]
    capsys.readouterr()
    assert main(["--json", "publish", "--config", str(target), "--emulator"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "already-published"
    assert f"using the running emulator at {fast.endpoint}" in captured.err


def test_a_definition_identifier_taken_by_another_definition_fails_before_any_write(
    fast, cli, tmp_path
):
    image = make_image(tmp_path / "img", seed=22)
    code, first = cli.publish("--config", str(write_target(tmp_path / "a", image)))
    assert code == 0, first
    other = {"name": "nixos-other", "publisher": "NixOS", "offer": "NixOS", "sku": "25.05-gen2"}
    target = write_target(
        tmp_path / "b", make_image(tmp_path / "b", seed=23), imageDefinition=other
    )
    expected = (
        "imageDefinition: the identifier NixOS/NixOS/25.05-gen2 belongs to definition"
        f" '{DEFINITION}' of gallery {GALLERY}; identifiers are unique in a gallery, so change"
        f" publisher, offer or sku, or set imageDefinition.name to '{DEFINITION}' to publish"
        " into it"
    )
    for dry_run in (["--dry-run"], []):
        before = len(fast.requests)
        code, failed = cli.publish("--config", str(target), *dry_run)
        assert code == ExitCode.USAGE, failed
        assert failed["error"]["message"] == expected
        assert failed["error"]["rerunHelps"] is False
        assert writes(fast, before) == []  # nothing created, nothing uploaded
    assert len(disks(compute(fast))) == 0


def test_a_region_the_subscription_does_not_offer_fails_before_any_write(fast, cli, tmp_path):
    # 'marsnorth' resembles no known region, so only Azure can say it does not exist.
    image = make_image(tmp_path / "img", seed=24)
    target = write_target(tmp_path, image, version={"targetRegions": ["westeurope", "marsnorth"]})
    for dry_run in (["--dry-run"], []):
        before = len(fast.requests)
        code, failed = cli.publish("--config", str(target), *dry_run)
        assert code == ExitCode.USAGE, failed
        assert failed["error"]["message"] == (
            "version.targetRegions[1]: region 'marsnorth' is not available to subscription"
            f" {fast.subscription_id}"
        )
        assert writes(fast, before) == []
    assert "Microsoft.Resources/subscriptions/locations/read" in fast.requests.actions()


def test_a_fixed_version_name_holding_another_image_fails_before_any_upload(fast, cli, tmp_path):
    fixed = {"name": "1.0.0", "targetRegions": ["westeurope"]}
    first = write_target(tmp_path / "a", make_image(tmp_path / "a", seed=16), version=fixed)
    code, report = cli.publish("--config", str(first))
    assert code == 0, report
    other = write_target(tmp_path / "b", make_image(tmp_path / "b", seed=17), version=fixed)
    before = len(fast.requests)
    code, failed = cli.publish("--config", str(other))
    assert code == ExitCode.AZURE
    assert (
        failed["error"]["message"] == "image version 1.0.0 already exists and holds another image"
    )
    assert "version.name" in failed["error"]["hint"]
    assert writes(fast, before) == []  # refused before any disk or upload

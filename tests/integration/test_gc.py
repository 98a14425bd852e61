"""``gc`` against the emulator: retention on its own and the target's leftovers, nothing else."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.azure import names
from nixos_azure_publish.azure.vm import TAG_SMOKE_RUN
from nixos_azure_publish.emulator.testing import clients
from tests.helpers.publishing import (
    compute,
    images,
    network,
    versions,
    writes,
)
from tests.helpers.targets import GROUP, write_target

pytestmark = pytest.mark.usefixtures("state_home")

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator


def _create(begin: Any, name: str, tags: dict[str, str], **body: Any) -> None:
    """Create a resource of the target's group as someone else would (a dict body)."""
    begin(GROUP, name, {"location": "westeurope", "tags": tags, **body}).result()


def _vnet(emulator: Emulator, name: str, tags: dict[str, str]) -> None:
    address_space = {"addressPrefixes": ["10.213.0.0/24"]}
    begin = network(emulator).virtual_networks.begin_create_or_update
    _create(begin, name, tags, properties={"addressSpace": address_space})


def _disk(emulator: Emulator, name: str, tags: dict[str, str]) -> None:
    creation = {"createOption": "Upload", "uploadSizeBytes": 20 * 1024**2 + 512}
    _create(
        compute(emulator).disks.begin_create_or_update,
        name,
        tags,
        sku={"name": "Standard_LRS"},
        properties={"osType": "Linux", "hyperVGeneration": "V2", "creationData": creation},
    )


def _kinds(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(i["kind"], i["name"]) for i in items}


def test_gc_deletes_retention_victims_and_old_leftovers_only(emulator, cli, tmp_path):
    emulator.settings.replication_seconds = 0.1
    made = []
    for seed in (71, 72):
        _, report = cli.publish_seed(seed, regions=("westeurope",), managedImage={"enable": True})
        made.append((str(report["version"]), str(report["storeHash"])))
    (old_version, old_hash), (new_version, new_hash) = made
    # The gc target: the same destination, keeping the newest version only.
    gc_target = write_target(
        tmp_path / "gc",
        tmp_path / "nothing.vhd",
        version={"targetRegions": ["westeurope"]},
        retention={"keepVersions": 1},
        smokeTest={"enable": True},
    )
    ours = {names.TAG_TARGET: "nixos-test"}
    # An upload disk a publish left (ReadyToUpload), one being written, another target's.
    _disk(emulator, "nixos-test-leftover", {**ours, names.TAG_CONTENT: "a" * 32})
    _disk(emulator, "nixos-test-writing", {**ours, names.TAG_CONTENT: "b" * 32})
    compute(emulator).disks.begin_grant_access(
        GROUP, "nixos-test-writing", {"access": "Write", "durationInSeconds": 3600}
    ).result()
    _disk(emulator, "other-target", {names.TAG_TARGET: "other", names.TAG_CONTENT: "c" * 32})
    # Smoke-test throwaways: one run from two days ago, one running now.
    two_days_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(days=2)).isoformat()
    _vnet(
        emulator,
        "smoke-old-vnet",
        {**ours, TAG_SMOKE_RUN: "nixos-test.old", names.TAG_CREATED: two_days_ago},
    )
    now = dt.datetime.now(dt.UTC).isoformat()
    _vnet(
        emulator,
        "smoke-new-vnet",
        {**ours, TAG_SMOKE_RUN: "nixos-test.new", names.TAG_CREATED: now},
    )

    # A dry run lists and writes nothing; with the default age only the old run is a leftover.
    before = len(emulator.requests)
    code, plan, _ = cli.on("gc", gc_target, "--dry-run")
    assert code == 0, plan
    assert writes(emulator, before) == []
    assert plan["dryRun"] is True
    assert _kinds(plan["wouldDelete"]) == {
        ("image version", old_version),
        ("smoke test", "vnet smoke-old-vnet"),
    }
    kept = {i["name"]: i["reason"] for i in plan["kept"]}
    # Its version goes, but it was made minutes ago (its tag says when).
    assert kept[f"nixos-test-{old_hash}"] == "younger than a day"
    assert kept["nixos-test-leftover"] == "younger than a day"
    assert kept["nixos-test-writing"].startswith("write access is open (ActiveUpload)")
    assert kept[f"nixos-test-{new_hash}"] == f"version {new_version} holds its image"
    assert kept["vnet smoke-new-vnet"] == "younger than a day"
    assert "other-target" not in kept

    # For real, with every leftover old enough.
    code, done, _ = cli.on("gc", gc_target, "--older-than", "0")
    assert code == 0, done
    assert _kinds(done["deleted"]) == {
        ("image version", old_version),
        ("managed image", f"nixos-test-{old_hash}"),
        ("smoke test", "vnet smoke-old-vnet"),
        ("smoke test", "vnet smoke-new-vnet"),
        ("disk", "nixos-test-leftover"),
    }
    client = compute(emulator)
    assert {v.name for v in versions(client)} == {new_version}
    assert {i.name for i in images(client)} == {f"nixos-test-{new_hash}"}
    assert {d.name for d in client.disks.list_by_resource_group(GROUP)} == {
        "nixos-test-writing",
        "other-target",
    }
    assert [v.name for v in network(emulator).virtual_networks.list(GROUP)] == []

    # A rerun has nothing left to delete and writes nothing.
    before = len(emulator.requests)
    code, text, _ = cli.on("gc", gc_target, as_json=False)
    assert code == 0, text
    assert text.startswith("nothing to delete for target nixos-test")
    assert writes(emulator, before) == []


def test_gc_keeps_upload_disks_when_the_target_keeps_them(emulator, cli, tmp_path):
    target = write_target(tmp_path, tmp_path / "nothing.vhd", cleanup={"deleteUploadDisk": False})
    # No resource group yet: nothing to do, and no error.
    code, done, _ = cli.on("gc", target)
    assert code == 0, done
    assert done == {
        "target": "nixos-test",
        "resourceGroup": GROUP,
        "dryRun": False,
        "deleted": [],
        "kept": [],
    }
    clients(emulator).create_group(GROUP, "westeurope")
    _disk(
        emulator, "nixos-test-kept", {names.TAG_TARGET: "nixos-test", names.TAG_CONTENT: "d" * 32}
    )
    code, done, _ = cli.on("gc", target, "--older-than", "0")
    assert code == 0, done
    assert done["deleted"] == []
    assert {i["name"]: i["reason"] for i in done["kept"]} == {
        "nixos-test-kept": "cleanup.deleteUploadDisk is false"
    }

"""``status`` against the emulator: versions, replication, tags and what `latest` is."""

from __future__ import annotations

import pytest

from nixos_azure_publish.cli import main
from tests.helpers.images import make_image
from tests.helpers.publishing import update_version, writes
from tests.helpers.targets import DEFINITION, write_target

pytestmark = pytest.mark.usefixtures("state_home")


def test_status_lists_versions_replication_tags_and_latest(emulator, cli):
    emulator.settings.replication_seconds = 0.1
    target, one = cli.publish_seed(61)
    _, two = cli.publish_seed(62, version={"excludeFromLatest": True, "replicaCount": 2})
    first, second = str(one["version"]), str(two["version"])

    before = len(emulator.requests)
    code, status, _ = cli.on("status", target)
    assert code == 0, status
    assert writes(emulator, before) == []  # read-only
    assert status["exists"] is True
    assert status["definition"] == DEFINITION
    assert [v["name"] for v in status["versions"]] == sorted(
        [first, second], key=lambda n: tuple(map(int, n.split(".")))
    )
    by_name = {v["name"]: v for v in status["versions"]}
    # The second is newer but excluded from latest: latest stays the first.
    assert status["latest"] == first
    assert status["latestByRegion"] == {"northeurope": first, "westeurope": first}
    assert by_name[second]["excludeFromLatest"] is True
    assert by_name[first]["excludeFromLatest"] is False
    assert status["settled"] is True
    v = by_name[second]
    assert v["replicationState"] == "Completed"
    assert {r["region"]: (r["state"], r["progress"]) for r in v["regions"]} == {
        "westeurope": ("Completed", 100),
        "northeurope": ("Completed", 100),
    }
    assert {r["replicas"] for r in v["regions"]} == {2}
    assert v["replicaCount"] == 2
    assert v["storageAccountType"] == "Standard_LRS"
    assert v["created"]
    assert v["tags"]["nixosLabel"] == "25.05.20250612.abc1234"
    assert v["tags"]["target"] == "nixos-test"
    assert v["tags"]["storePath"].startswith("sha256:")

    # The same as text.
    code, text, _ = cli.on("status", target, as_json=False)
    assert code == 0
    assert f"latest: {first}" in text
    assert f"{second}  Succeeded/Completed" in text
    assert "excluded from latest" in text
    assert "northeurope: Completed 100%, 2 replica(s), Standard_LRS" in text


def test_status_of_a_definition_that_does_not_exist(cli, tmp_path):
    image = make_image(tmp_path / "img", seed=63)
    target = write_target(tmp_path, image)
    code, status, _ = cli.on("status", target)
    assert code == 0, status
    assert status["exists"] is False
    assert status["versions"] == []
    assert status["latest"] is None
    code, text, _ = cli.on("status", target, as_json=False)
    assert "does not exist yet" in text


def test_status_watch_follows_replication_until_it_settles(emulator, cli):
    emulator.settings.replication_seconds = 0.1
    target, report = cli.publish_seed(64)
    # Add a region by hand: it replicates for a while.
    emulator.settings.replication_seconds = 1.5
    regions = [{"name": "westeurope"}, {"name": "northeurope"}, {"name": "eastus"}]
    update_version(
        emulator, report["version"], {"publishingProfile": {"targetRegions": regions}}, wait=False
    )
    code, status, err = cli.on("status", target, "--watch", "--interval", "0.1")
    assert code == 0, status
    assert status["settled"] is True
    (version,) = status["versions"]
    assert {r["region"]: r["state"] for r in version["regions"]}["eastus"] == "Completed"
    # Progress was shown on stderr while it moved.
    assert "eastus: Replicating" in err


def test_status_takes_exactly_one_destination(tmp_path, capsys):
    assert main(["status"]) == 2
    assert "exactly one of --config FILE and --flake REF" in capsys.readouterr().err
    assert main(["status", "--config", str(tmp_path / "t.json"), "--target", "x"]) == 2
    assert "--target needs --flake" in capsys.readouterr().err

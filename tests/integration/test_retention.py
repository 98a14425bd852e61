"""Retention against the emulator: only our older versions go, never the new one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.azure import names
from tests.helpers.images import make_image
from tests.helpers.publishing import (
    compute,
    update_version,
    versions,
    writes,
)
from tests.helpers.targets import DEFINITION, GALLERY, GROUP, write_target

pytestmark = pytest.mark.usefixtures("state_home")

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator
    from tests.helpers.publishing import Cli


def _publish(cli: Cli, seed: int, *extra: str, **overrides: Any) -> tuple[str, dict[str, Any]]:
    """Publish a fresh image to one region; its version and report."""
    _, report = cli.publish_seed(seed, *extra, regions=("westeurope",), **overrides)
    return str(report["version"]), report


def _names(emulator: Emulator) -> set[str]:
    return {v.name for v in versions(compute(emulator))}


def _untag(emulator: Emulator, name: str) -> None:
    """Make a version look hand-made: none of our tags."""
    update_version(emulator, name, {}, tags={"owner": "someone else"})


def _set_end_of_life(emulator: Emulator, name: str, when: str) -> None:
    update_version(emulator, name, {"publishingProfile": {"endOfLifeDate": when}})


def test_keep_versions_deletes_exactly_our_older_versions(emulator, cli, tmp_path):
    emulator.settings.replication_seconds = 0.1
    first, _ = _publish(cli, 41)
    second, _ = _publish(cli, 42)
    third, _ = _publish(cli, 43)
    _untag(emulator, first)  # not ours any more: never deleted
    assert _names(emulator) == {first, second, third}

    # A dry run lists what would go and writes nothing.
    before = len(emulator.requests)
    image = make_image(tmp_path / "p44" / "img", seed=44, size_mib=24)
    target = write_target(
        tmp_path / "p44",
        image,
        version={"targetRegions": ["westeurope"]},
        retention={"keepVersions": 2},
    )
    code, plan = cli.publish("--config", str(target), "--dry-run")
    assert code == 0, plan
    assert writes(emulator, before) == []
    would = [
        r["name"]
        for r in plan["resources"]
        if r["action"] == "would-delete" and r["kind"] == "image version"
    ]
    # The new version is not there yet: the two newest of ours stay (third and the new one).
    assert would == [second]

    code, report = cli.publish("--config", str(target))
    assert code == 0, report
    fourth = str(report["version"])
    deleted = [
        r["name"]
        for r in report["resources"]
        if r["action"] == "deleted" and r["kind"] == "image version"
    ]
    assert deleted == [second]
    assert _names(emulator) == {first, third, fourth}
    retention = {s["name"]: s for s in report["steps"]}["retention"]
    assert retention["detail"] == f"deleted {second}"

    # A rerun of the same image deletes nothing more and writes nothing.
    cli.publish_again("--config", str(target))


def test_versions_past_their_end_of_life_are_deleted(emulator, cli):
    emulator.settings.replication_seconds = 0.1
    old, _ = _publish(cli, 51)
    later, _ = _publish(cli, 52)
    _set_end_of_life(emulator, old, "2020-01-01T00:00:00Z")
    _set_end_of_life(emulator, later, "2099-01-01T00:00:00Z")
    new, report = _publish(cli, 53, retention={"deleteAfterEndOfLife": True})
    deleted = [
        r for r in report["resources"] if r["action"] == "deleted" and r["kind"] == "image version"
    ]
    assert [r["name"] for r in deleted] == [old]
    assert "end of life 2020-01-01" in deleted[0]["detail"]
    assert _names(emulator) == {later, new}
    # Our tags were what made it a candidate.
    tags = compute(emulator).gallery_image_versions.get(GROUP, GALLERY, DEFINITION, new).tags or {}
    assert tags[names.TAG_TARGET] == "nixos-test"

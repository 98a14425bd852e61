"""``import`` against the emulator: community and gallery sources, reruns, dry runs, conflicts.

A maintainer publishes into a community gallery (and another gallery, for
version-id sources) with the real ``publish`` command; the user's own target
names another resource group, gallery and definition.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.errors import ExitCode
from tests.integration.test_publish import make_image, publish, write_target, writes
from tests.integration.test_status import run

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

COMMUNITY = {
    "publicNamePrefix": "nixos",
    "publisherUri": "https://nixos.org",
    "publisherContact": "images@example.org",
    "eula": "https://nixos.org/eula",
}
MINE = "my-images"
MY_GALLERY = "my_gallery"
MY_DEFINITION = "nixos"


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def release(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seed: int,
    **version: Any,
) -> dict[str, Any]:
    """The maintainers publish a version into their community gallery; its report."""
    folder = tmp_path / f"release{seed}"
    image = make_image(folder / "img", seed=seed, size_mib=24)
    target = write_target(
        folder,
        image,
        gallery={"name": "test_gallery", "community": COMMUNITY},
        version={"targetRegions": ["westeurope", "northeurope"], **version},
    )
    code, report = publish(emulator, monkeypatch, capsys, "--config", str(target))
    assert code == 0, report
    return report


def my_target(tmp_path: Path, **overrides: Any) -> Path:
    """The user's target: their own group, gallery and definition; no image."""
    data: dict[str, Any] = {
        "name": "imported",
        "resourceGroup": MINE,
        "location": "northeurope",
        "hyperVGeneration": "V2",
        "gallery": {"name": MY_GALLERY},
        "imageDefinition": {
            "name": MY_DEFINITION,
            "publisher": "me",
            "offer": "NixOS",
            "sku": "25.05",
        },
        "version": {"targetRegions": ["northeurope"]},
    }
    data.update(overrides)
    path = tmp_path / "mine" / "target.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def community_image(report: dict[str, Any]) -> str:
    """The community image of a release, without its version."""
    return str(report["communityImageId"]).rsplit("/Versions/", 1)[0]


def test_a_dry_run_resolves_latest_and_writes_nothing(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 81)
    release(emulator, tmp_path, monkeypatch, capsys, 82, excludeFromLatest=True)
    target = my_target(tmp_path)
    before = len(emulator.requests)
    code, plan, _ = run(
        emulator,
        monkeypatch,
        capsys,
        "--json",
        "import",
        community_image(first),
        "--config",
        str(target),
        "--dry-run",
    )
    assert code == 0, plan
    assert writes(emulator, before) == []
    assert plan["status"] == "planned"
    # The second release is newer but excluded from latest: latest is the first.
    assert plan["source"] == f"{community_image(first)}@{first['version']}"
    assert plan["upload"]["bytesSent"] == 0
    actions = {(r["kind"], r["name"]): r["action"] for r in plan["resources"]}
    assert actions[("resource group", MINE)] == "would-create"
    assert actions[("image definition", MY_DEFINITION)] == "would-create"
    steps = {s["name"]: s["detail"] for s in plan["steps"]}
    assert steps["resolve source"].startswith(f"community {community_image(first)} version")
    assert "(V2, x64, TrustedLaunchSupported)" in steps["resolve source"]


def test_a_target_that_contradicts_the_source_is_refused_before_any_write(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 83)
    target = my_target(
        tmp_path,
        hyperVGeneration="V1",
        imageDefinition={
            "name": MY_DEFINITION,
            "publisher": "me",
            "offer": "NixOS",
            "sku": "25.05",
            "securityType": "Standard",
        },
    )
    before = len(emulator.requests)
    code, error, err = run(
        emulator,
        monkeypatch,
        capsys,
        "--json",
        "import",
        community_image(first),
        "--config",
        str(target),
    )
    assert code == ExitCode.USAGE, error
    assert writes(emulator, before) == []
    assert "hyperVGeneration: the target says V1, the source is V2" in err
    assert "imageDefinition.securityType: the target says Standard" in err


def test_an_unknown_source_is_a_usage_error(emulator, tmp_path, monkeypatch, capsys):
    target = my_target(tmp_path)
    for source in ("/CommunityGalleries/x/Images/y/Versions/1.2", "ftp://example.org/a.vhd"):
        code, _, err = run(emulator, monkeypatch, capsys, "import", source, "--config", str(target))
        assert code == ExitCode.USAGE
        assert err.startswith("error: ")


def test_a_missing_community_version_says_so(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 84)
    target = my_target(tmp_path)
    code, _, err = run(
        emulator,
        monkeypatch,
        capsys,
        "import",
        community_image(first) + "/Versions/9.9.9",
        "--config",
        str(target),
        "--dry-run",
    )
    assert code == ExitCode.AZURE
    assert "/Versions/9.9.9 is not found in northeurope" in err

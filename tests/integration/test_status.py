"""``status`` against the emulator: versions, replication, tags and what `latest` is."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish.cli import main
from tests.helpers.images import make_image
from tests.helpers.publishing import compute, publish, writes
from tests.helpers.targets import DEFINITION, GALLERY, GROUP, write_target

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def run(
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *args: str,
) -> tuple[int, Any, str]:
    """``ARGS`` in-process against the emulator; exit code, JSON stdout (or text), stderr."""
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    out = captured.out
    try:
        return code, json.loads(out), captured.err
    except ValueError:
        return code, out, captured.err


def publish_seed(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seed: int,
    **version: Any,
) -> tuple[Path, str]:
    folder = tmp_path / f"p{seed}"
    image = make_image(folder / "img", seed=seed, size_mib=24)
    target = write_target(
        folder, image, version={"targetRegions": ["westeurope", "northeurope"], **version}
    )
    code, report = publish(emulator, monkeypatch, capsys, "--config", str(target))
    assert code == 0, report
    return target, str(report["version"])


def test_status_lists_versions_replication_tags_and_latest(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    target, first = publish_seed(emulator, tmp_path, monkeypatch, capsys, 61)
    _, second = publish_seed(
        emulator, tmp_path, monkeypatch, capsys, 62, excludeFromLatest=True, replicaCount=2
    )

    before = len(emulator.requests)
    code, status, _ = run(
        emulator, monkeypatch, capsys, "--json", "status", "--config", str(target)
    )
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
    code, text, _ = run(emulator, monkeypatch, capsys, "status", "--config", str(target))
    assert code == 0
    assert f"latest: {first}" in text
    assert f"{second}  Succeeded/Completed" in text
    assert "excluded from latest" in text
    assert "northeurope: Completed 100%, 2 replica(s), Standard_LRS" in text


def test_status_of_a_definition_that_does_not_exist(emulator, tmp_path, monkeypatch, capsys):
    image = make_image(tmp_path / "img", seed=63)
    target = write_target(tmp_path, image)
    code, status, _ = run(
        emulator, monkeypatch, capsys, "--json", "status", "--config", str(target)
    )
    assert code == 0, status
    assert status["exists"] is False
    assert status["versions"] == []
    assert status["latest"] is None
    code, text, _ = run(emulator, monkeypatch, capsys, "status", "--config", str(target))
    assert "does not exist yet" in text


def test_status_watch_follows_replication_until_it_settles(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    target, name = publish_seed(emulator, tmp_path, monkeypatch, capsys, 64)
    # Add a region by hand: it replicates for a while.
    emulator.settings.replication_seconds = 1.5
    client = compute(emulator)
    body = client.gallery_image_versions.get(GROUP, GALLERY, DEFINITION, name).as_dict()
    storage = body["properties"]["storageProfile"]
    # The source as created (a disk, or a managed image): sent back unchanged.
    profile = (
        {"source": storage["source"]}
        if storage.get("source")
        else {"osDiskImage": {"source": storage["osDiskImage"]["source"]}}
    )
    begin: Any = client.gallery_image_versions.begin_update  # a dict body; typed for models
    begin(
        GROUP,
        GALLERY,
        DEFINITION,
        name,
        {
            "properties": {
                "publishingProfile": {
                    "targetRegions": [
                        {"name": "westeurope"},
                        {"name": "northeurope"},
                        {"name": "eastus"},
                    ]
                },
                "storageProfile": profile,
            }
        },
        polling=False,
    )
    code, status, err = run(
        emulator,
        monkeypatch,
        capsys,
        "--json",
        "status",
        "--config",
        str(target),
        "--watch",
        "--interval",
        "0.1",
    )
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

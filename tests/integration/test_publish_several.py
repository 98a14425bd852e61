"""Several targets in one publish, against the emulator: concurrent, one upload per image.

The publish command runs in-process through ``main(argv)``; assertions read the
emulator's state with the real SDK clients and its request log.
"""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import pytest
from azure.mgmt.compute import ComputeManagementClient

from nixos_azure_publish.azure import names
from nixos_azure_publish.azure.clients import AzureSettings, make_clients
from nixos_azure_publish.errors import ExitCode
from nixos_azure_publish.pipeline import PublishOptions
from nixos_azure_publish.pipeline.multi import publish_many
from nixos_azure_publish.selection import TargetSelection
from tests.helpers.images import MiB, make_image
from tests.helpers.publishing import grants, run_publisher, wait_for_line, wait_for_pages
from tests.helpers.targets import GROUP, write_target

if TYPE_CHECKING:
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator
    from tests.helpers.publishing import Cli

OTHER_GROUP = "nixos-images-other"

pytestmark = pytest.mark.usefixtures("state_home")


def run(cli: Cli, *args: str) -> tuple[int, dict[str, Any], str]:
    """``--json publish ARGS`` in-process: exit code, JSON report (``{}`` if none), stderr."""
    cli.monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    code, report, err = cli.run("--json", "publish", *args)
    return code, report or {}, err


def target_file(folder: Path, image: Path, name: str, **overrides: Any) -> Path:
    """A target of its own name and definition (each target publishes its own definition)."""
    data: dict[str, Any] = {
        "name": name,
        "imageDefinition": {"name": name, "publisher": "NixOS", "offer": "NixOS", "sku": name},
    }
    data.update(overrides)
    return write_target(folder / name, image, **data)


def four_targets(tmp_path: Path) -> list[Path]:
    """Four targets over two images: a and b share one (b in another resource group),
    c and d the other."""
    one = make_image(tmp_path / "img1", seed=21)
    two = make_image(tmp_path / "img2", seed=22)
    return [
        target_file(tmp_path, one, "a"),
        target_file(tmp_path, one, "b", resourceGroup=OTHER_GROUP),
        target_file(tmp_path, two, "c"),
        target_file(tmp_path, two, "d"),
    ]


def configs(paths: list[Path]) -> list[str]:
    return [arg for path in paths for arg in ("--config", str(path))]


def client(emulator: Emulator) -> ComputeManagementClient:
    return ComputeManagementClient(
        emulator.credential(), emulator.subscription_id, **emulator.client_kwargs()
    )


def test_four_targets_of_two_images_upload_twice_and_each_gets_its_version(fast, cli, tmp_path):
    paths = four_targets(tmp_path)
    code, report, _ = run(cli, *configs(paths))
    assert code == 0, [t.get("error") for t in report.get("targets", [])] or report
    assert report["status"] == "published"
    assert report["exitCode"] == 0
    assert [t["target"] for t in report["targets"]] == ["a", "b", "c", "d"]
    assert {t["status"] for t in report["targets"]} == {"published"}
    assert report["uploads"] == 2, [(t["target"], t["steps"]) for t in report["targets"]]
    assert len(grants(fast)) == 2
    by_name = {t["target"]: t for t in report["targets"]}
    assert by_name["a"]["storeHash"] == by_name["b"]["storeHash"]
    assert by_name["c"]["storeHash"] == by_name["d"]["storeHash"]
    # Each pair: one uploaded, the other made its version from that disk.
    for first, second in (("a", "b"), ("c", "d")):
        uploaded = [n for n in (first, second) if by_name[n]["upload"] is not None]
        assert len(uploaded) == 1, (first, second)
        (other,) = {first, second} - set(uploaded)
        disk = f"{uploaded[0]}-{by_name[other]['storeHash']}"
        assert ("disk", disk, "reused") in {
            (r["kind"], r["name"], r["action"]) for r in by_name[other]["resources"]
        }
    compute = client(fast)
    for name, group in (("a", GROUP), ("b", OTHER_GROUP), ("c", GROUP), ("d", GROUP)):
        (version,) = compute.gallery_image_versions.list_by_gallery_image(
            group, "test_gallery", name
        )
        tags = version.tags or {}
        assert tags[names.TAG_CONTENT] == by_name[name]["storeHash"]
        assert tags[names.TAG_TARGET] == name
    # The shared disks went once every target that used them held a replicated version.
    assert list(compute.disks.list_by_resource_group(GROUP)) == []
    assert list(compute.disks.list_by_resource_group(OTHER_GROUP)) == []

    before = len(fast.requests)
    code, again, _ = run(cli, *configs(paths))
    assert code == 0, again
    assert again["status"] == "already-published"
    assert again["uploads"] == 0
    assert grants(fast, before) == []


def test_the_run_exits_with_the_worst_code_and_reports_every_target(fast, cli, tmp_path):
    good = target_file(tmp_path, make_image(tmp_path / "img", seed=23), "good")
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "bad",
                "resourceGroup": "rg",
                "location": "westeurop",
                "hyperVGeneration": "V2",
            }
        )
    )
    summary = tmp_path / "summary.md"
    code, report, err = run(cli, "--config", str(good), "--config", str(bad),
        "--summary", str(summary),
    )  # fmt: skip
    assert code == ExitCode.USAGE
    assert report["status"] == "failed"
    assert report["exitCode"] == ExitCode.USAGE
    first, second = report["targets"]
    assert (first["target"], first["status"], first["exitCode"]) == ("good", "published", 0)
    assert (second["target"], second["status"], second["exitCode"]) == (str(bad), "failed", 2)
    assert "unknown region 'westeurop'" in second["error"]
    assert "1 of 2 targets did not publish" in err
    text = summary.read_text()
    assert text.startswith("## NixOS images: 2 targets: 1 published, 1 failed")
    assert "## NixOS image good: published" in text
    assert f"## NixOS image {bad}: failed" in text


def test_a_dry_run_of_several_targets_plans_one_upload_per_image_and_writes_nothing(
    fast, cli, tmp_path
):
    paths = four_targets(tmp_path)
    # A target without a gallery publishes its own disk: it would upload its own.
    image = make_image(tmp_path / "img1", seed=21)
    paths.append(write_target(tmp_path / "p", image, name="p", gallery=None, imageDefinition=None))
    before = len(fast.requests)
    code, report, _ = run(cli, *configs(paths), "--dry-run")
    assert code == 0, [t.get("error") for t in report.get("targets", [])] or report
    assert report["status"] == "planned"
    assert [r.method for r in list(fast.requests)[before:] if r.method != "GET"] == []
    upload_steps = [next(s for s in t["steps"] if s["name"] == "upload") for t in report["targets"]]
    would_upload = [s for s in upload_steps if s["detail"].startswith("would upload")]
    assert len(would_upload) == 3, upload_steps
    assert upload_steps[-1]["detail"].startswith("would upload")


def test_the_console_summary_lists_every_target(fast, cli, tmp_path, monkeypatch):
    paths = four_targets(tmp_path)[2:]
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    code, out, err = cli.run("publish", *configs(paths), "--jobs", "1")
    assert code == 0, err
    head = out.splitlines()[:3]
    assert head[0].startswith("2 targets: 2 published (1 upload,")
    assert head[1].split()[:2] == ["c", "published"]
    assert head[2].split()[:2] == ["d", "published"]


def test_a_shared_disk_is_kept_while_a_target_that_used_it_has_no_replicated_version(
    fast, tmp_path, monkeypatch
):
    """The library call: target b makes its version from a's disk, then its replication
    times out (b's own option); a is done, but the disk stays for b's rerun."""
    image = make_image(tmp_path / "img", seed=24)
    paths = [target_file(tmp_path, image, "a"), target_file(tmp_path, image, "b")]
    environ = {**fast.environ}
    settings = AzureSettings.from_environ(subscription_id=None, environ=environ)
    clients = make_clients(settings)

    def options_for(publish):
        timeout = 0.0 if publish.target.name == "b" else 60.0
        return PublishOptions(state_dir=tmp_path / "state", replication_timeout=timeout)

    selection = TargetSelection(configs=tuple(paths), jobs=1)
    run_report = publish_many(
        selection.sources(),
        image=None,
        environ=environ,
        clients_for=lambda _: clients,
        options_for=options_for,
        jobs=selection.jobs,
    )
    a, b = run_report.targets
    assert (a.status, b.status) == ("published", "failed")
    assert run_report.exit_code == ExitCode.AZURE
    assert run_report.uploads == 1
    disk = f"a-{a.store_hash}"
    (kept,) = client(fast).disks.list_by_resource_group(GROUP)
    assert kept.name == disk
    cleanup = next(s for s in a.steps if s.name == "cleanup")
    assert cleanup.detail == "keeping the upload disk: target b still needs it"

    # The rerun finds b's version, which finished replicating meanwhile; a's disk goes
    # (so a's run changed something: published, as a publish alone would say).
    second = publish_many(
        selection.sources(),
        image=None,
        environ=environ,
        clients_for=lambda _: clients,
        options_for=lambda _: PublishOptions(state_dir=tmp_path / "state"),
        jobs=2,
    )
    changes = {
        t.target: [(r.kind, r.action) for r in t.resources if r.action not in {"reused", "exists"}]
        for t in second.targets
    }
    assert ("disk", "deleted") in changes["a"], changes
    assert {kind for t in changes.values() for kind, action in t if action != "deleted"} == set()
    for t in second.targets:  # a target whose run deleted something changed Azure
        assert t.status == ("published" if changes[t.target] else "already-published"), changes
    assert second.uploads == 0
    assert list(client(fast).disks.list_by_resource_group(GROUP)) == []


def test_ctrl_c_interrupts_every_target_revokes_and_the_rerun_resumes(fast, tmp_path):
    # 64 MiB of data each, one 4 MiB page at a time: still uploading when the signal comes.
    one = make_image(tmp_path / "img1", seed=25, size_mib=96, data_mib=64)
    two = make_image(tmp_path / "img2", seed=26, size_mib=96, data_mib=64)
    slow = {"upload": {"concurrency": 1}}
    paths = [
        target_file(tmp_path, one, "a", **slow),
        target_file(tmp_path, one, "b", **slow),
        target_file(tmp_path, two, "c", **slow),
    ]
    state = tmp_path / "state"
    proc = run_publisher(fast, paths[0], state, *configs(paths[1:]))
    wait_for_line(proc, "] uploading /")
    wait_for_pages(fast, 4 * MiB)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, err[-3000:]
    report = json.loads(out)
    assert report["status"] == "interrupted"
    assert {t["status"] for t in report["targets"]} == {"interrupted"}
    assert "sig=" not in err.replace("sig=REDACTED", "")
    states = {
        d.as_dict()["properties"]["diskState"]
        for d in client(fast).disks.list_by_resource_group(GROUP)
    }
    assert states
    assert "ActiveUpload" not in states  # every upload's access was revoked

    rerun = run_publisher(fast, paths[0], state, *configs(paths[1:]))
    out, err = rerun.communicate(timeout=180)
    assert rerun.returncode == 0, err[-3000:]
    again = json.loads(out)
    assert again["uploads"] == 2
    sent = [t["upload"]["bytesSent"] for t in again["targets"] if t["upload"]]
    data = [t["upload"]["dataBytes"] for t in again["targets"] if t["upload"]]
    assert sum(sent) < sum(data)  # the interrupted uploads resumed
    assert list(client(fast).disks.list_by_resource_group(GROUP)) == []


def test_several_flake_targets_are_built_and_published(fast, cli, fixture_flake):
    flake = fixture_flake("publish")
    args = ("--flake", flake, "--target", "default", "--target", "gen.1")
    code, report, _ = run(cli, *args)
    assert code == 0, [t.get("error") for t in report.get("targets", [])] or report
    first, second = report["targets"]
    assert (first["target"], second["target"]) == ("fixture-gen2", "fixture-gen1")
    assert (first["status"], second["status"]) == ("published", "published")
    assert first["storeHash"] == second["storeHash"]
    # Another subscription, and gen.1 has no gallery (its disk is what it publishes).
    assert report["uploads"] == 2


def test_one_image_for_another_generation_or_architecture_is_uploaded_again(fast, cli, tmp_path):
    # A disk has one generation and one architecture, and a version's source must match
    # its definition's in both.
    image = make_image(tmp_path / "img", seed=28)
    paths = [
        target_file(tmp_path, image, "a"),
        target_file(tmp_path, image, "b"),
        target_file(tmp_path, image, "arm", architecture="Arm64"),
        target_file(tmp_path, image, "gen1", hyperVGeneration="V1"),
    ]
    code, report, _ = run(cli, *configs(paths))
    assert code == 0, [t.get("error") for t in report.get("targets", [])] or report
    assert report["uploads"] == 3
    uploaded = {t["target"] for t in report["targets"] if t["upload"] is not None}
    assert {"arm", "gen1"} <= uploaded


def test_a_target_without_a_gallery_keeps_its_own_disk(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=27)
    with_gallery = target_file(tmp_path, image, "a")
    plain = write_target(
        tmp_path / "plain", image, name="plain", gallery=None, imageDefinition=None
    )
    code, report, _ = run(cli, *configs([with_gallery, plain]))
    assert code == 0, [t.get("error") for t in report.get("targets", [])] or report
    assert report["uploads"] == 2
    (kept,) = client(fast).disks.list_by_resource_group(GROUP)
    assert kept.name == f"plain-{report['targets'][0]['storeHash']}"


def test_all_targets_lists_every_flake_target_with_the_worst_exit_code(fast, cli, fixture_flake):
    flake = fixture_flake("publish")
    code, report, _ = run(cli, "--flake", flake, "--all-targets", "--dry-run")
    by_label = {t["target"]: t for t in report["targets"]}
    assert len(report["targets"]) == 14, sorted(by_label)  # every azurePublish attribute
    assert by_label["fixture-gen2"]["status"] == "planned"
    assert by_label["broken-build"]["exitCode"] == ExitCode.NIX
    assert by_label["no-image"]["exitCode"] == ExitCode.USAGE
    # A usage error (a target to fix) is worse than a failed build.
    assert code == report["exitCode"] == ExitCode.USAGE
    assert report["status"] == "failed"


def test_a_target_that_used_anothers_disk_reports_only_its_own_cleanup(fast, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=29)
    paths = [
        target_file(tmp_path, image, "a"),
        target_file(tmp_path, image, "b", cleanup={"deleteUploadDisk": False}),
    ]
    code, report, _ = run(cli, *configs(paths), "--jobs", "1")
    assert code == 0, [t.get("error") for t in report.get("targets", [])] or report
    a, b = report["targets"]
    disk = f"a-{a['storeHash']}"
    assert ("disk", disk, "deleted") in {
        (r["kind"], r["name"], r["action"]) for r in a["resources"]
    }
    # b keeps upload disks of its own, but it has none: a's disk is a's to delete.
    assert [(r["name"], r["action"]) for r in b["resources"] if r["kind"] == "disk"] == [
        (disk, "reused")
    ]
    assert list(client(fast).disks.list_by_resource_group(GROUP)) == []

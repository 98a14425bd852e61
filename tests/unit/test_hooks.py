"""The hooks as Hydra and Nix run them: which builds become which jobs in the spool.

Hydra's build records here have the shape of Hydra's RunCommand plugin
(``makeJsonPayload``: event, build, finished, project, jobset, job, drvPath,
buildStatus, nixName, system, outputs, products, metrics). Store paths are
directories under a temporary "store" holding what the builds would hold.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from nixos_azure_publish.__main__ import main
from nixos_azure_publish.errors import ConfigError
from nixos_azure_publish.hooks.spool import Spool
from nixos_azure_publish.hooks.targets import hydra_job_matches, load_targets

GEN2 = "nixos:release-25.05:azure.x86_64-linux"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "store"
    root.mkdir()
    return root


def output(store: Path, name: str, *files: str) -> str:
    path = store / name
    path.mkdir()
    for file in files:
        (path / file).write_bytes(b"x")
    return str(path)


@pytest.fixture
def targets(tmp_path: Path) -> Path:
    path = tmp_path / "targets.json"
    path.write_text(
        json.dumps(
            {
                "targets": {
                    "gen2": {"config": str(tmp_path / "gen2.json"), "hydraJobs": [GEN2]},
                    "all-azure": {
                        "flake": "github:example/images",
                        "target": "azure",
                        "hydraJobs": ["nixos:*:azure.x86_64-linux", "images"],
                    },
                    "no-hydra": {"config": str(tmp_path / "other.json")},
                }
            }
        )
    )
    return path


def hydra_record(
    store: Path,
    *,
    status: int = 0,
    project: str = "nixos",
    jobset: str = "release-25.05",
    job: str = "azure.x86_64-linux",
    outputs: list[dict[str, str]] | None = None,
    build: int = 281_234_567,
) -> dict[str, Any]:
    out = outputs
    if out is None:
        path = output(store, "0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d-nixos-image-azure", "nixos.vhd")
        out = [{"name": "out", "path": path}]
    return {
        "event": "buildFinished",
        "build": build,
        "finished": True,
        "timestamp": 1_749_700_000,
        "project": project,
        "jobset": jobset,
        "job": job,
        "drvPath": "/nix/store/9z8y7x6w5v4u3t2s1r0q9p8o7n6m5l4k-nixos-image-azure.drv",
        "startTime": 1_749_700_100,
        "stopTime": 1_749_700_900,
        "buildStatus": status,
        "nixName": "nixos-image-azure-25.05.20250612.abc1234-x86_64-linux",
        "system": "x86_64-linux",
        "homepage": None,
        "description": None,
        "license": None,
        "outputs": out,
        # Hydra's product points at the raw image, which the build deleted after converting.
        "products": [
            {
                "productNr": 1,
                "type": "file",
                "subtype": "image",
                "fileSize": 3_221_225_472,
                "sha256hash": "0" * 64,
                "path": str(store / "gone-nixos.img"),
                "name": "nixos.img",
                "defaultPath": "",
            }
        ],
        "metrics": [],
    }


def run_hydra(
    tmp_path: Path, record: dict[str, Any] | str, targets: Path, *, spool: Path | None = None
) -> int:
    path = tmp_path / "hydra.json"
    path.write_text(record if isinstance(record, str) else json.dumps(record))
    where = spool or tmp_path / "spool"
    return main(
        ["hydra-hook", "--hydra-json", str(path), "--spool", str(where), "--targets", str(targets)]
    )


def queued(tmp_path: Path) -> list[tuple[str, str | None, str]]:
    spool = Spool(tmp_path / "spool")
    return sorted((r.job.store_path, r.job.target, r.job.source) for r in spool.records("queue"))


# --- hydra-hook -------------------------------------------------------------------------------


def test_a_succeeded_build_is_queued_once_per_matching_target(tmp_path, store, targets, capsys):
    record = hydra_record(store)
    assert run_hydra(tmp_path, record, targets) == 0
    path = record["outputs"][0]["path"]
    assert queued(tmp_path) == [(path, "all-azure", "hydra"), (path, "gen2", "hydra")]
    job = Spool(tmp_path / "spool").records("queue")[0].job
    assert job.hydra_job == GEN2
    assert job.hydra_build == 281_234_567
    assert job.drv_path == record["drvPath"]
    assert "queued" in capsys.readouterr().out


def test_products_pointing_at_a_deleted_img_are_ignored(tmp_path, store, targets):
    record = hydra_record(store)
    assert not Path(record["products"][0]["path"]).exists()
    assert run_hydra(tmp_path, record, targets) == 0
    assert {p for p, _, _ in queued(tmp_path)} == {record["outputs"][0]["path"]}


@pytest.mark.parametrize(
    ("status", "meaning"),
    [(1, "failed"), (2, "dependency failed"), (3, "aborted"), (6, "failed with output")],
)
def test_a_build_that_did_not_succeed_is_skipped(tmp_path, store, targets, capsys, status, meaning):  # noqa: PLR0917
    assert run_hydra(tmp_path, hydra_record(store, status=status), targets) == 0, meaning
    assert queued(tmp_path) == []
    assert f"buildStatus {status}" in capsys.readouterr().out


def test_a_job_matching_no_pattern_is_skipped(tmp_path, store, targets, capsys):
    record = hydra_record(store, job="tests.boot.x86_64-linux")
    assert run_hydra(tmp_path, record, targets) == 0
    assert queued(tmp_path) == []
    assert "matches no target" in capsys.readouterr().out


def test_a_pattern_with_missing_fields_matches_the_whole_project(tmp_path, store, targets):
    # "images" means images:*:* (Hydra's own rule), here for the all-azure target only.
    record = hydra_record(store, project="images", jobset="main", job="whatever")
    assert run_hydra(tmp_path, record, targets) == 0
    assert [t for _, t, _ in queued(tmp_path)] == ["all-azure"]


def test_outputs_without_a_vhd_are_skipped(tmp_path, store, targets, capsys):
    raw = output(store, "1111-nixos-image-raw", "nixos.img")
    record = hydra_record(store, outputs=[{"name": "out", "path": raw}])
    assert run_hydra(tmp_path, record, targets) == 0
    assert queued(tmp_path) == []
    assert "no output holds a .vhd" in capsys.readouterr().out


def test_only_the_outputs_holding_a_vhd_are_queued(tmp_path, store, targets):
    image = output(store, "2222-nixos-image-azure", "nixos-image-azure-25.05.vhd")
    docs = output(store, "3333-nixos-image-azure-doc", "README")
    outputs = [{"name": "doc", "path": docs}, {"name": "out", "path": image}]
    assert run_hydra(tmp_path, hydra_record(store, outputs=outputs), targets) == 0
    assert {p for p, _, _ in queued(tmp_path)} == {image}


def test_the_same_build_delivered_twice_is_one_job(tmp_path, store, targets, capsys):
    record = hydra_record(store)
    assert run_hydra(tmp_path, record, targets) == 0
    assert run_hydra(tmp_path, record, targets) == 0
    assert len(queued(tmp_path)) == 2  # two targets, once each
    assert "already in the spool (queue)" in capsys.readouterr().out


def test_a_build_already_published_is_not_queued_again(tmp_path, store, targets):
    record = hydra_record(store)
    assert run_hydra(tmp_path, record, targets) == 0
    spool = Spool(tmp_path / "spool")
    while (claim := spool.claim(worker="test")) is not None:
        spool.finish(claim, state="done", entry={"status": "published"})
    assert run_hydra(tmp_path, record, targets) == 0
    assert queued(tmp_path) == []
    assert spool.counts()["done"] == 2


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{not json", "is not JSON"),
        ("[1, 2]", "is not a JSON object"),
        (json.dumps({"event": "buildFinished", "project": "nixos"}), "no valid 'jobset'"),
        ("", "is not JSON"),
    ],
)
def test_a_malformed_record_is_one_clear_line(tmp_path, targets, capsys, text, says):
    assert run_hydra(tmp_path, text, targets) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert says in err
    assert queued(tmp_path) == []


def test_an_output_without_a_path_is_malformed(tmp_path, store, targets, capsys):
    record = hydra_record(store, outputs=[{"name": "out"}])
    assert run_hydra(tmp_path, record, targets) == 2
    assert "an output without a path" in capsys.readouterr().err


def test_the_record_comes_from_hydra_json(tmp_path, store, targets, monkeypatch):
    path = tmp_path / "record.json"
    path.write_text(json.dumps(hydra_record(store)))
    monkeypatch.setenv("HYDRA_JSON", str(path))
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_SPOOL", str(tmp_path / "spool"))
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_TARGETS", str(targets))
    assert main(["hydra-hook"]) == 0
    assert len(queued(tmp_path)) == 2


def test_without_hydra_json_it_says_what_to_do(tmp_path, targets, monkeypatch, capsys):
    monkeypatch.delenv("HYDRA_JSON", raising=False)
    assert main(["hydra-hook", "--spool", str(tmp_path / "s"), "--targets", str(targets)]) == 2
    assert "$HYDRA_JSON is not set" in capsys.readouterr().err


# --- post-build-hook --------------------------------------------------------------------------


def run_post_build(tmp_path: Path, monkeypatch, out_paths: str | None, **kw: Any) -> int:
    if out_paths is None:
        monkeypatch.delenv("OUT_PATHS", raising=False)
    else:
        monkeypatch.setenv("OUT_PATHS", out_paths)
    monkeypatch.setenv("DRV_PATH", kw.get("drv", "/nix/store/aaaa-image.drv"))
    return main(["post-build-hook", "--spool", str(kw.get("spool", tmp_path / "spool"))])


def test_each_output_holding_a_vhd_is_queued_for_the_worker_to_match(tmp_path, store, monkeypatch):
    image = output(store, "4444-nixos-image-azure", "nixos.vhd")
    other = output(store, "5555-hello-2.12", "bin")
    assert run_post_build(tmp_path, monkeypatch, f"{other} {image}") == 0
    assert queued(tmp_path) == [(image, None, "post-build")]
    record = Spool(tmp_path / "spool").records("queue")[0]
    assert record.job.drv_path == "/nix/store/aaaa-image.drv"


def test_a_vhd_output_that_is_a_file_is_queued(tmp_path, store, monkeypatch):
    file = store / "6666-disk.vhd"
    file.write_bytes(b"x")
    assert run_post_build(tmp_path, monkeypatch, str(file)) == 0
    assert queued(tmp_path) == [(str(file), None, "post-build")]


def test_several_outputs_and_repeats(tmp_path, store, monkeypatch):
    one = output(store, "7777-a", "a.vhd")
    two = output(store, "8888-b", "b.vhd")
    assert run_post_build(tmp_path, monkeypatch, f"  {one}\t{two} {one}\n") == 0
    assert [p for p, _, _ in queued(tmp_path)] == sorted([one, two])


@pytest.mark.parametrize(
    "out_paths", [None, "", "   ", "relative/path.vhd", "/nonexistent/9999-gone"]
)
def test_nothing_to_enqueue_is_exit_0(tmp_path, store, monkeypatch, capsys, out_paths):
    assert run_post_build(tmp_path, monkeypatch, out_paths) == 0
    assert queued(tmp_path) == []
    assert "nothing to publish" in capsys.readouterr().out


def test_a_spool_it_cannot_write_is_the_one_failure(tmp_path, store, monkeypatch, capsys):
    image = output(store, "aaaa-nixos-image-azure", "nixos.vhd")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert run_post_build(tmp_path, monkeypatch, image, spool=blocker / "spool") == 2
    err = capsys.readouterr().err
    assert "cannot create the spool" in err
    assert len(err.strip().splitlines()) == 1


def test_no_spool_configured_fails_clearly(tmp_path, store, monkeypatch, capsys):
    image = output(store, "bbbb-nixos-image-azure", "nixos.vhd")
    monkeypatch.setenv("OUT_PATHS", image)
    monkeypatch.delenv("NIXOS_AZURE_PUBLISH_SPOOL", raising=False)
    assert main(["post-build-hook"]) == 2
    assert "no spool directory" in capsys.readouterr().err


# --- the installed script: hooks do not load the whole CLI --------------------------------


def test_the_hook_path_imports_no_azure_sdk(tmp_path, store, targets):
    record = tmp_path / "hydra.json"
    record.write_text(json.dumps(hydra_record(store)))
    probe = (
        "import sys\n"
        "from nixos_azure_publish.__main__ import main\n"
        f"code = main(['hydra-hook', '--hydra-json', {str(record)!r}, '--spool',"
        f" {str(tmp_path / 'spool')!r}, '--targets', {str(targets)!r}])\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(('azure', 'nixos_azure_publish.cli',"
        " 'jinja2', 'urllib3')))\n"
        "print(code, heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert result.stdout.strip().splitlines()[-1] == "0 []"


def test_the_hooks_are_in_the_full_cli_too(tmp_path, store, targets, monkeypatch):
    from nixos_azure_publish.cli import main as cli_main  # noqa: PLC0415

    record = tmp_path / "hydra.json"
    record.write_text(json.dumps(hydra_record(store)))
    code = cli_main(
        [
            "hydra-hook",
            "--hydra-json",
            str(record),
            "--spool",
            str(tmp_path / "spool"),
            "--targets",
            str(targets),
        ]
    )
    assert code == 0
    assert len(queued(tmp_path)) == 2


# --- the targets file -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "job", "matches"),
    [
        ("nixos:release-25.05:azure", "nixos:release-25.05:azure", True),
        ("nixos:*:azure", "nixos:trunk:azure", True),
        ("nixos", "nixos:trunk:azure", True),
        ("nixos:trunk", "nixos:trunk:anything.x86_64-linux", True),
        ("*:*:*", "a:b:c", True),
        ("nixos:*:azure", "nixos:trunk:azure.x86_64-linux", False),
        ("nix*:*:*", "nixos:trunk:azure", False),  # no partial wildcards, as in Hydra
        ("a:b:c:d", "a:b:c", False),
    ],
)
def test_hydra_job_matching_follows_hydra(pattern, job, matches):
    assert hydra_job_matches(pattern, job) is matches


def test_a_bad_targets_file_lists_every_problem(tmp_path):
    path = tmp_path / "targets.json"
    path.write_text(
        json.dumps(
            {
                "targets": {
                    "both": {"config": "/a.json", "flake": "."},
                    "neither": {"hydraJobs": ["nix*:trunk:azure"]},
                    "typo": {"config": "/b.json", "hydrajobs": []},
                }
            }
        )
    )
    with pytest.raises(ConfigError) as info:
        load_targets(path)
    assert str(info.value).endswith("4 problems. Fix each one below and run again")
    text = "\n".join(info.value.problems)
    assert "targets.both: give exactly one of config" in text
    assert "targets.neither: give exactly one" in text
    assert "targets.neither.hydraJobs[0]" in text
    assert "targets.typo.hydrajobs: unknown field" in text


# --- enqueue and worker: the command line ----------------------------------------------------


def test_enqueue_by_hand_is_deduplicated_too(tmp_path, store, capsys):
    from nixos_azure_publish.cli import main as cli_main  # noqa: PLC0415

    image = output(store, "cccc-nixos-image-azure", "nixos.vhd")
    spool = str(tmp_path / "spool")
    assert cli_main(["--json", "enqueue", "--spool", spool, "--target", "gen2", image]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["alreadyIn"] is None
    assert cli_main(["enqueue", "--spool", spool, "--target", "gen2", image]) == 0
    assert "already in the spool (queue)" in capsys.readouterr().out
    assert queued(tmp_path) == [(image, "gen2", "cli")]


def test_a_worker_without_targets_says_how_to_give_them(tmp_path, monkeypatch, capsys):
    from nixos_azure_publish.cli import main as cli_main  # noqa: PLC0415

    monkeypatch.delenv("NIXOS_AZURE_PUBLISH_TARGETS", raising=False)
    assert cli_main(["worker", "--spool", str(tmp_path / "spool"), "--once"]) == 2
    err = capsys.readouterr().err
    assert "no targets file" in err
    assert "--targets FILE" in err


def test_a_worker_with_nothing_to_do_says_so(tmp_path, targets, capsys):
    from nixos_azure_publish.cli import main as cli_main  # noqa: PLC0415

    args = ["--json", "worker", "--spool", str(tmp_path / "spool"), "--targets", str(targets)]
    assert cli_main([*args, "--once"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"handled": 0, "spool": {"queue": 0, "running": 0, "done": 0, "failed": 0}}

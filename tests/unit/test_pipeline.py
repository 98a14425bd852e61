"""The pipeline's order and its pure decisions; the publish command's usage errors."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace
from typing import Any, cast

import click
import pytest

from nixos_azure_publish import pipeline
from nixos_azure_publish.azure import clients, names
from nixos_azure_publish.azure import version as azversion
from nixos_azure_publish.azure.disk import DiskState
from nixos_azure_publish.cli import cli, main
from nixos_azure_publish.cli.publish_cmd import publish_command
from nixos_azure_publish.config import load_target
from nixos_azure_publish.pipeline import checks
from nixos_azure_publish.pipeline.context import skipped
from nixos_azure_publish.report import PublishReport

HASH = "0123456789abcdfghijklmnpqrsvwxyz"


def test_every_check_that_needs_no_upload_runs_before_the_upload():
    order = [step.name for step in pipeline.STEPS]
    assert order == [
        "check image",
        "discover",
        "ensure group",
        "ensure upload disk",
        "upload",
        "ensure gallery",
        "ensure definition",
        "managed image",
        "create version",
        "replicate",
        "smoke test",
        "cleanup",
        "retention",
    ]


def test_arm_timestamps_with_seven_fraction_digits_parse():
    parsed = azversion.parse_time("2026-01-02T03:04:05.1234567+00:00")
    assert parsed == dt.datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)
    assert azversion.parse_time("2026-01-02T03:04:05Z") == dt.datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC
    )
    assert azversion.parse_time("yesterday") is None
    assert azversion.parse_time(None) is None


def context(tmp_path, *, disk_time: str | None, journal: dict[str, Any] | None = None):
    target = load_target(
        {
            "name": "t",
            "resourceGroup": "rg",
            "location": "westeurope",
            "hyperVGeneration": "V2",
            "gallery": {"name": "g"},
            "imageDefinition": {"name": "d", "publisher": "p", "offer": "o", "sku": "s"},
        }
    )
    ctx = pipeline.Context(
        input=pipeline.PublishInput(target=target, image_path=tmp_path / "x.vhd"),
        clients=cast("Any", None),  # choosing a name needs no Azure
        options=pipeline.PublishOptions(
            now=lambda: dt.datetime(2030, 5, 6, 7, 8, 9, tzinfo=dt.UTC)
        ),
        report=PublishReport(target="t"),
        journal_path=tmp_path / "journal.json",
        journal=journal or {},
    )
    ctx.content = names.ContentId(hash=HASH, store_path=None)
    if disk_time is not None:
        ctx.disk = DiskState(
            id="/d", name="t-x", state="ReadyToUpload", size=1, tags={}, time_created=disk_time
        )
    return ctx


def test_version_name_comes_from_the_shared_disk_so_publishers_agree(tmp_path):
    # The default template is date based: the disk's creation time is what two
    # publishers of one image (and every rerun) have in common.
    assert checks.version_name(context(tmp_path, disk_time="2026-11-25T21:40:05.1234567Z")) == (
        "2026.1125.214005"
    )
    assert checks.version_name(context(tmp_path, disk_time=None)) == "2030.506.70809"
    resumed = context(tmp_path, disk_time=None, journal={"startedAt": "2027-01-01T00:00:01+00:00"})
    assert checks.version_name(resumed) == "2027.101.1"


def test_publish_takes_exactly_one_source(capsys):
    assert main(["publish"]) == 2
    assert "give exactly one of --config FILE and --flake REF" in capsys.readouterr().err
    assert main(["publish", "--config", "a.json", "--flake", "."]) == 2
    capsys.readouterr()
    assert main(["publish", "--config", "a.json", "--target", "x"]) == 2
    assert "--target needs --flake" in capsys.readouterr().err


def test_missing_config_file_is_a_usage_error(tmp_path, capsys):
    assert main(["publish", "--config", str(tmp_path / "none.json")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_publish_is_registered_and_every_option_has_help():
    assert cli.get_command(click.Context(cli), "publish") is publish_command
    for param in publish_command.params:
        if isinstance(param, click.Option):
            assert param.help, param.name
    assert publish_command.help


def test_emulator_flag_and_env_contract_names():
    assert clients.ENV_ENDPOINT == "NIXOS_AZURE_PUBLISH_ENDPOINT"
    assert clients.ENV_CA_CERT == "NIXOS_AZURE_PUBLISH_CA_CERT"
    assert clients.ENV_EMULATOR == "NIXOS_AZURE_PUBLISH_EMULATOR"
    assert any(p.name == "emulator" for p in publish_command.params)


@pytest.mark.parametrize("detail", ["not needed: already published", "no gallery configured"])
def test_steps_that_had_nothing_to_do_are_reported_as_skipped(tmp_path, detail):
    class Idle(pipeline.Step):
        name = "idle"

        def run(self, ctx):
            ctx.content = names.ContentId(hash=HASH, store_path=None)
            return skipped(detail)

    given = context(tmp_path, disk_time=None)
    settings = SimpleNamespace(subscription_id="00000000-0000-0000-0000-000000000000")
    runner = pipeline.Pipeline(
        given.input,
        clients=cast("Any", SimpleNamespace(settings=settings)),  # an idle step needs no Azure
        options=pipeline.PublishOptions(state_dir=tmp_path, now=given.options.now),
        steps=(Idle,),
    )
    runner.run()
    (record,) = runner.report.steps
    assert (record.name, record.status, record.detail) == ("idle", "skipped", detail)
    assert runner.ctx.journal["steps"].keys() == {"idle"}

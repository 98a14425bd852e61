"""The CLI as a user meets it: exit codes, one-line errors, JSON output, help text."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import click
import pytest
from click.testing import CliRunner

from nixos_azure_publish import __version__
from nixos_azure_publish.azure import clients
from nixos_azure_publish.cli import cli, main
from nixos_azure_publish.cli.publish_cmd import publish_command
from nixos_azure_publish.cli.upload_cmd import SAS_ENV, TerminalProgress
from nixos_azure_publish.errors import AzureError, ExitCode

if TYPE_CHECKING:
    from pathlib import Path

VALID = {
    "name": "nixos-test",
    "resourceGroup": "rg",
    "location": "westeurope",
    "hyperVGeneration": "V2",
}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def write(tmp_path: Path, data: object, name: str = "target.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def test_version(runner):
    result = runner.invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"nixos-azure-publish, version {__version__}"


def test_config_check_valid_prints_effective_config(runner, tmp_path):
    result = runner.invoke(cli, ["config", "check", "--config", write(tmp_path, VALID)])
    assert result.exit_code == 0, result.output
    effective = json.loads(result.stdout)
    assert effective["architecture"] == "x64"
    assert effective["version"]["targetRegions"] == [
        {"name": "westeurope", "replicas": 1, "storageAccountType": "Standard_LRS"}
    ]
    assert "target 'nixos-test' is valid" in result.stderr


def test_config_check_invalid_is_one_line_and_exit_2(runner, tmp_path):
    path = write(tmp_path, {**VALID, "location": "West Europe", "version": {"replicaCount": 0}})
    result = runner.invoke(cli, ["config", "check", "--config", path])
    assert result.exit_code == int(ExitCode.USAGE) == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines == [
        f"error: {path}: 2 problems. Fix each one below and run again",
        (
            "  location: must be an Azure region name like 'westeurope' (did you mean"
            " 'westeurope'?), not 'West Europe'"
        ),
        "  version.replicaCount: must be 1..100, not 0",
    ]
    assert "Traceback" not in result.output


def test_config_check_lists_problems_next_to_an_unknown_key(runner, tmp_path):
    path = write(tmp_path, {**VALID, "colour": "blue", "location": "westeurop"})
    result = runner.invoke(cli, ["config", "check", "--config", path])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0] == f"error: {path}: 2 problems. Fix each one below and run again"
    assert lines[1].startswith("  colour: unknown key; known keys: name, resourceGroup,")
    assert lines[2:] == ["  location: unknown region 'westeurop' (did you mean westeurope?)"]


def test_json_mode_prints_the_error_as_json_on_stdout(runner, tmp_path):
    path = write(tmp_path, {**VALID, "colour": "blue"})
    result = runner.invoke(cli, ["--json", "config", "check", "--config", path])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "config"
    assert error["exitCode"] == 2
    assert "colour: unknown key" in error["message"]


def test_missing_config_file(runner, tmp_path):
    result = runner.invoke(cli, ["config", "check", "--config", str(tmp_path / "nope.json")])
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_missing_required_option_is_a_usage_error(runner):
    result = runner.invoke(cli, ["config", "check"])
    assert result.exit_code == 2
    assert "Missing option '--config'" in result.stderr


def test_unknown_command(runner):
    result = runner.invoke(cli, ["pubish"])
    assert result.exit_code == 2
    assert "No such command 'pubish'" in result.stderr


def test_schema_is_json(runner):
    result = runner.invoke(cli, ["config", "schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["$defs"]["PublishTarget"]["type"] == "object"


def test_image_option_overrides(runner, tmp_path):
    result = runner.invoke(
        cli, ["config", "check", "--config", write(tmp_path, VALID), "--image", "/tmp/x.vhd"]
    )
    assert json.loads(result.stdout)["image"] == "/tmp/x.vhd"


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_every_command_and_option_has_help():
    commands = list(_commands(cli))
    assert commands, "no commands registered"
    for path, command in commands:
        assert (command.help or "").strip(), f"{' '.join(path)} has no help text"
        for param in command.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"{' '.join(path)} {param.opts} has no help"


def test_help_runs_for_every_command(runner):
    for path, _command in _commands(cli):
        result = runner.invoke(cli, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


# A throwaway command that raises what a real command might, to test rendering.
@click.command("raise-for-test", hidden=True)
@click.argument("what")
def _raise_for_test(what: str) -> None:
    """Raise an error, for tests."""
    if what == "azure":
        raise AzureError(
            "grant failed for https://md-x.blob.core.windows.net/d/abcd?sv=2024&sig=SECRET123%3D",
            hint="Check the role assignment",
        )
    if what == "interrupt":
        raise KeyboardInterrupt
    msg = "boom"
    raise RuntimeError(msg)


@pytest.fixture
def raising_command():
    cli.add_command(_raise_for_test)
    yield
    del cli.commands["raise-for-test"]


@pytest.mark.usefixtures("raising_command")
def test_expected_error_is_redacted_one_line_with_its_code(capsys):
    assert main(["raise-for-test", "azure"]) == int(ExitCode.AZURE) == 4
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "SECRET123" not in err
    assert err.startswith("error: grant failed for https://md-x.blob.core.windows.net/d/abcd?sv=")
    assert "sig=REDACTED" in err
    assert err.strip().endswith("Check the role assignment")


@pytest.mark.usefixtures("raising_command")
def test_verbose_shows_the_traceback_without_secrets(capsys):
    assert main(["-v", "raise-for-test", "azure"]) == 4
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert "SECRET123" not in err


@pytest.mark.usefixtures("raising_command")
def test_interrupt_exit_code(capsys):
    assert main(["raise-for-test", "interrupt"]) == int(ExitCode.INTERRUPTED) == 130
    assert "error: interrupted" in capsys.readouterr().err


@pytest.mark.usefixtures("raising_command")
def test_unexpected_error_is_a_bug_with_a_traceback():
    # Bugs are not hidden: they propagate (the console script prints the traceback, exit 1).
    with pytest.raises(RuntimeError, match="boom"):
        main(["raise-for-test", "bug"])


def test_main_returns_usage_code(capsys):
    assert main(["config", "check"]) == 2
    assert "Missing option" in capsys.readouterr().err


def test_main_returns_zero(capsys, tmp_path):
    assert main(["config", "check", "--config", write(tmp_path, VALID)]) == 0


@click.command("fail-with-details", hidden=True)
def _fail_with_details() -> None:
    """Raise an error with details, for tests."""
    raise AzureError(
        "the build failed\n on two lines",
        hint="Read the log",
        details="last 2 log lines:\n> one\n> two",
    )


def test_details_come_indented_below_the_one_line(capsys):
    cli.add_command(_fail_with_details)
    try:
        assert main(["fail-with-details"]) == 4
    finally:
        del cli.commands["fail-with-details"]
    assert capsys.readouterr().err.splitlines() == [
        "error: the build failed on two lines. Read the log",
        "  last 2 log lines:",
        "  > one",
        "  > two",
    ]


@pytest.mark.parametrize(("verbose", "shown"), [([], False), (["-v"], True), (["-vv"], True)])
def test_azure_sdk_warnings_need_verbose(runner, tmp_path, verbose, shown):
    # The SDK speaks through `logging`: DefaultAzureCredential warns with one line per
    # credential it tried. A command that logs such a record stands in for a failed login,
    # which cannot be produced here without reaching Azure's identity endpoints.
    @cli.command("sdk-warning-probe", hidden=True)
    def probe() -> None:
        logging.getLogger("azure.identity._credentials.default").warning(
            "DefaultAzureCredential failed to retrieve a token from the included credentials."
        )

    try:
        result = runner.invoke(cli, [*verbose, "sdk-warning-probe"])
    finally:
        cli.commands.pop("sdk-warning-probe")
    assert result.exit_code == 0
    assert ("DefaultAzureCredential failed" in result.stderr) is shown


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "--json", "{missing}"],
        ["convert", "--json", "{missing}", "{out}"],
        ["publish", "--json", "--config", "{missing}"],
    ],
)
def test_a_commands_own_json_flag_renders_its_errors_as_json_too(argv, tmp_path, capsys):
    # Each command's --json is the global one: its output and its errors are JSON on stdout.
    missing, out = tmp_path / "none.vhd", tmp_path / "out.vhd"
    code = main([arg.format(missing=missing, out=out) for arg in argv])
    assert code in {ExitCode.USAGE, ExitCode.INVALID_IMAGE}
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert str(missing.name) in error["message"]
    assert captured.err.startswith("error: ")  # the one line on stderr stays


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


def test_publish_is_registered():
    assert cli.get_command(click.Context(cli), "publish") is publish_command


def test_emulator_flag_and_env_contract_names():
    assert clients.ENV_ENDPOINT == "NIXOS_AZURE_PUBLISH_ENDPOINT"
    assert clients.ENV_CA_CERT == "NIXOS_AZURE_PUBLISH_CA_CERT"
    assert clients.ENV_EMULATOR == "NIXOS_AZURE_PUBLISH_EMULATOR"
    assert any(p.name == "emulator" for p in publish_command.params)


def test_every_command_takes_json_and_quiet_after_its_name_and_shows_an_example(runner):
    leaves = [(p, c) for p, c in _commands(cli) if not isinstance(c, click.Group)]
    assert len(leaves) >= 8
    for path, command in leaves:
        opts = {opt for param in command.params for opt in getattr(param, "opts", [])}
        assert {"--json", "-q", "--quiet"} <= opts, path
        help_text = runner.invoke(cli, [*path, "--help"]).output
        assert "Example" in help_text, path
        assert "nixos-azure-publish " in help_text.split("Example", 1)[1], path


def test_json_after_the_command_renders_config_problems_as_json(runner, tmp_path):
    path = write(tmp_path, {**VALID, "location": "westeurop"})
    result = runner.invoke(cli, ["config", "check", "--config", path, "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error["kind"] == "config"
    assert error["message"] == (
        f"{path}: location: unknown region 'westeurop' (did you mean westeurope?)"
    )
    assert error["rerunHelps"] is False


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_prints_only_the_result(runner, tmp_path, where):
    path = write(tmp_path, VALID)
    args = ["config", "check", "--config", path]
    argv = ["-q", *args] if where == "before" else [*args, "--quiet"]
    result = runner.invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["name"] == "nixos-test"
    assert result.stderr == ""
    noisy = runner.invoke(cli, args)
    assert "is valid" in noisy.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--config", "a.json", "--all-targets"], "--all-targets needs --flake"),
        (["--flake", ".", "--all-targets", "--target", "a"], "--all-targets and --target together"),
        (["--config", "a.json", "--config", "b.json", "--flake", "."], "exactly one of --config"),
        (["--config", "a.json", "--config", "a.json"], "--config a.json is given twice"),
        (["--flake", ".", "--target", "a", "--target", "b", "--jobs", "0"], "--jobs must be"),
    ],
)
def test_several_targets_usage_errors_change_nothing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(["publish", *argv]) == 2
    assert message in capsys.readouterr().err


def test_an_empty_target_is_refused_not_taken_for_the_default(capsys):
    # Nothing is evaluated: an empty name is refused before Nix runs.
    assert main(["publish", "--flake", ".", "--target", ""]) == 2
    assert "--target must not be empty" in capsys.readouterr().err


def test_inspect_takes_a_store_path_holding_one_vhd_as_publish_does(tmp_path, capsys):
    out = tmp_path / "store-output"
    out.mkdir()
    (out / "nixos-image-azure-25.05-x86_64-linux.vhd").write_bytes(b"\0" * 1024)
    assert main(["--json", "inspect", str(out)]) == 3  # found, and judged: too small
    data = json.loads(capsys.readouterr().out)
    assert data["path"].endswith("nixos-image-azure-25.05-x86_64-linux.vhd")


@pytest.mark.parametrize(
    "argv",
    [
        ["inspect", "{missing}"],
        ["convert", "{missing}", "{out}"],
        ["upload", "{missing}", "--sas-url", "https://h/c/b?sig=x"],
        ["publish", "--config", "{target}", "--image", "{missing}"],
        ["config", "check", "--config", "{missing}"],
        ["publish", "--config", "{missing}"],
    ],
)
def test_a_missing_input_file_exits_2_everywhere(tmp_path, capsys, argv):
    target = write(tmp_path, VALID)
    missing, out = tmp_path / "none.vhd", tmp_path / "out.vhd"
    code = main([a.format(missing=missing, out=out, target=target) for a in argv])
    assert code == 2, capsys.readouterr()
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"gallery": {"name": "g", "community": {
                "publicNamePrefix": "nixo",
                "publisherUri": "https://nixos.org",
                "publisherContact": "images@example.org",
                "eula": "https://nixos.org/eula",
            }}, "imageDefinition": {"name": "d", "publisher": "P", "offer": "O", "sku": "S"}},
            "gallery.community.publicNamePrefix: must be 5-16 letters and digits, not 'nixo'",
        ),
        (
            {"gallery": {"name": "g"},
             "imageDefinition": {"name": "d", "publisher": "P", "offer": "O", "sku": "S"},
             "smokeTest": {"enable": True, "location": "eastus"}},
            "smokeTest.location: eastus is not one of the target regions (westeurope)",
        ),
    ],
    ids=["public-name-prefix", "smoke-location"],
)  # fmt: skip
def test_config_check_refuses_what_publish_would_refuse(runner, tmp_path, change, expected):
    result = runner.invoke(
        cli, ["config", "check", "--config", write(tmp_path, {**VALID, **change})]
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert expected in result.stderr.splitlines()[0]


# --------------------------------------------------------------------------- upload


@pytest.fixture
def no_sas_in_env(monkeypatch):
    monkeypatch.delenv(SAS_ENV, raising=False)


@pytest.mark.usefixtures("no_sas_in_env")
def test_without_a_sas_url_it_says_how_to_give_one(tmp_path, capsys):
    image = tmp_path / "disk.vhd"
    image.write_bytes(b"")
    assert main(["upload", str(image)]) == 2
    err = capsys.readouterr().err
    assert "no SAS URL given" in err
    assert "--sas-url-file" in err


@pytest.mark.usefixtures("no_sas_in_env")
def test_sas_url_and_file_together_are_refused(tmp_path, capsys):
    sas_file = tmp_path / "sas"
    sas_file.write_text("https://h/c/b?sig=x")
    (tmp_path / "d.vhd").write_bytes(b"")
    argv = ["upload", str(tmp_path / "d.vhd"), "--sas-url", "https://h/c/b?sig=y"]
    assert main([*argv, "--sas-url-file", str(sas_file)]) == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.usefixtures("no_sas_in_env")
def test_a_sas_url_that_is_not_a_url_is_refused_without_echoing_it(tmp_path, capsys):
    (tmp_path / "d.vhd").write_bytes(b"")
    assert main(["upload", str(tmp_path / "d.vhd"), "--sas-url", "sv=1&sig=TopSecret"]) == 2
    err = capsys.readouterr().err
    assert "must start with https://" in err
    assert "TopSecret" not in err


def test_terminal_progress_draws_a_bar_with_rate_and_eta(capsys):
    ticks = iter([100.0, 102.0, 102.0, 104.0, 104.0])
    bar = TerminalProgress(width=10, interval=0, clock=lambda: next(ticks))
    bar.start(100 * 1024**2)
    bar.update(50 * 1024**2, 50 * 1024**2)
    bar.finish(100 * 1024**2, 100 * 1024**2)
    err = capsys.readouterr().err
    first, last = err.split("\n")[0].split("\r")[1:]
    assert first.startswith("[#####.....] uploaded 50.0 MiB; 50.0 of 100.0 MiB done (50%)")
    assert "25.0 MiB/s, ETA 0:02" in first
    assert last.startswith("[##########] uploaded 100.0 MiB")
    assert err.endswith("\n")

"""nix.py without running Nix: the command line, error summaries, a missing binary."""

from __future__ import annotations

import pytest

from nixos_azure_publish import nix
from nixos_azure_publish.errors import ExitCode, NixError


def test_every_command_enables_flakes_for_old_nix(monkeypatch):
    monkeypatch.delenv("NIXOS_AZURE_PUBLISH_NIX", raising=False)
    assert nix.command_line(["eval", "--json", ".#x"]) == [
        "nix",
        "--extra-experimental-features",
        "nix-command flakes",
        "eval",
        "--json",
        ".#x",
    ]


def test_the_nix_binary_can_be_chosen(monkeypatch):
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_NIX", "/opt/nix/bin/nix")
    assert nix.command_line(["build"])[0] == "/opt/nix/bin/nix"


def test_summary_keeps_the_error_and_its_indented_details():
    tail = (
        "building '/nix/store/x-image.drv'...\n"
        "error: builder for '/nix/store/x-image.drv' failed with exit code 3;\n"
        "       last 1 log lines:\n"
        "       > the disk is full\n"
        "(use '--show-trace' to show detailed location information)"
    )
    assert nix._summary(tail) == (
        "builder for '/nix/store/x-image.drv' failed with exit code 3",
        "last 1 log lines:\n> the disk is full",
    )


def test_summary_without_an_error_line_is_the_last_line():
    assert nix._summary("one\ntwo") == ("two", "")
    assert nix._summary("") == ("(no output on stderr)", "")


@pytest.mark.parametrize("call", [lambda: nix.eval_json(".#x"), lambda: nix.build(".#x")])
def test_a_missing_nix_binary_is_a_nix_error_with_what_to_do(monkeypatch, tmp_path, call):
    monkeypatch.setenv("NIXOS_AZURE_PUBLISH_NIX", str(tmp_path / "no-such-nix"))
    with pytest.raises(NixError, match="command was not found") as info:
        call()
    assert not isinstance(info.value, nix.NixCommandError)
    assert info.value.exit_code == ExitCode.NIX
    assert "Install Nix" in (info.value.hint or "")
    assert "--config FILE --image PATH" in (info.value.hint or "")


def test_nix_not_on_path_is_the_same_clear_error(monkeypatch, tmp_path):
    monkeypatch.delenv("NIXOS_AZURE_PUBLISH_NIX", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NixError, match="the `nix` command was not found"):
        nix.eval_json(".#x")


def test_the_rerun_command_leaves_out_secret_settings():
    line = nix.rerun_command(
        ["nix", "eval"], {"NIX_CONFIG": "access-tokens = github.com=ghp_0123456789\nsubstituters ="}
    )
    assert "ghp_0123456789" not in line
    assert "access-tokens = REDACTED" in line
    assert "substituters =" in line
    assert nix.rerun_command(["nix", "eval"], {}) == "nix eval"


def test_colours_are_stripped():
    assert nix.strip_ansi("\x1b[31;1merror:\x1b[0m attribute \x1b[35;1m'x'\x1b[0m") == (
        "error: attribute 'x'"
    )

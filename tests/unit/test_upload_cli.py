"""`upload` command: argument handling and the terminal progress bar (no network)."""

from __future__ import annotations

import pytest

from nixos_azure_publish.cli import main
from nixos_azure_publish.cli.upload_cmd import SAS_ENV, TerminalProgress


@pytest.fixture(autouse=True)
def _no_sas_in_env(monkeypatch):
    monkeypatch.delenv(SAS_ENV, raising=False)


def test_without_a_sas_url_it_says_how_to_give_one(tmp_path, capsys):
    image = tmp_path / "disk.vhd"
    image.write_bytes(b"")
    assert main(["upload", str(image)]) == 2
    err = capsys.readouterr().err
    assert "no SAS URL given" in err
    assert "--sas-url-file" in err


def test_sas_url_and_file_together_are_refused(tmp_path, capsys):
    sas_file = tmp_path / "sas"
    sas_file.write_text("https://h/c/b?sig=x")
    (tmp_path / "d.vhd").write_bytes(b"")
    argv = ["upload", str(tmp_path / "d.vhd"), "--sas-url", "https://h/c/b?sig=y"]
    assert main([*argv, "--sas-url-file", str(sas_file)]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_sas_url_that_is_not_a_url_is_refused_without_echoing_it(tmp_path, capsys):
    (tmp_path / "d.vhd").write_bytes(b"")
    assert main(["upload", str(tmp_path / "d.vhd"), "--sas-url", "sv=1&sig=TopSecret"]) == 2
    err = capsys.readouterr().err
    assert "must start with https://" in err
    assert "TopSecret" not in err


def test_a_missing_image_is_a_usage_error(tmp_path, capsys):
    assert main(["upload", str(tmp_path / "d.vhd"), "--sas-url", "https://h/c/b?sig=y"]) == 2
    assert f"the image {tmp_path / 'd.vhd'} does not exist" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    assert main(["upload", "--help"]) == 0
    out = capsys.readouterr().out
    for option in ("--sas-url-file", "--concurrency", "--verify", "--backend", "--checksum",
                   "--journal-dir", "--no-journal", "--ca-cert", "--timeout"):  # fmt: skip
        assert option in out


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

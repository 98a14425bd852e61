"""The session's secrets scan (tests/secretscan.py) sees what it must, and only that.

Each test here plants a secret where the scan must look and then takes its
finding back, so that the session still passes: if the scan missed it, the
test fails instead.
"""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from nixos_azure_publish.emulator.azurite import ACCOUNT_KEY
from tests import secretscan

SAS = "https://acct.blob.core.windows.net/c/b?sv=2025-01-05&sr=b&sp=w&sig=Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MA%3D%3D"


def taken_back(before: int) -> list[secretscan.Finding]:
    """The findings since *before*, removed from the session's list."""
    found = secretscan.SCANNER.findings[before:]
    del secretscan.SCANNER.findings[before:]
    return found


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        (f"GET {SAS}", "SAS signature"),
        ("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.x.y", "bearer token"),
        (f"DefaultEndpointsProtocol=http;AccountKey={ACCOUNT_KEY};", "account key"),
        ("client_secret='Q~abcdefghijklmnopqrstuvwxyz'", "client secret"),
        ("AZURE_CLIENT_SECRET=s3cr3tValue.with-dots", "client secret"),
        ("token emulator-token in a header dump", "bearer token"),
    ],
)
def test_each_kind_of_secret_is_found(text, kind):
    before = len(secretscan.SCANNER.findings)
    secretscan.SCANNER.scan(text, "planted")
    found = taken_back(before)
    assert kind in {f.kind for f in found}
    assert all("REDACTED" in f.excerpt for f in found)  # the report never repeats it


@pytest.mark.parametrize(
    "text",
    [
        "GET https://acct.blob.core.windows.net/c/b?sv=2025-01-05&sig=REDACTED",
        "Authorization: Bearer REDACTED",
        "AccountKey=REDACTED;BlobEndpoint=http://127.0.0.1",
        "the signature (sig=) never reaches a log",
        "client_secret: <from your vault>",
    ],
)
def test_redacted_text_and_placeholders_are_not_secrets(text):
    before = len(secretscan.SCANNER.findings)
    secretscan.SCANNER.scan(text, "planted")
    assert taken_back(before) == []


def test_a_client_secret_from_the_environment_is_found_as_it_is(monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "an-unusual-secret-value")
    before = len(secretscan.SCANNER.findings)
    secretscan.SCANNER.scan("something printed an-unusual-secret-value", "planted")
    assert [f.kind for f in taken_back(before)] == ["client secret"]


def test_log_records_captured_output_and_subprocesses_are_scanned(capsys):
    planted = SAS.replace("Zm9v", "cGxh")  # its own signature: its hits are told apart
    secretscan.SCANNER.planted.add(planted.split("sig=")[1])
    before = len(secretscan.SCANNER.planted_hits)
    logging.getLogger("nixos_azure_publish.planted").error("uploading to %s", planted)
    print(planted)  # noqa: T201 - output a test reads with capsys
    capsys.readouterr()
    subprocess.run(
        [sys.executable, "-c", f"print({planted!r})"], capture_output=True, check=True, text=True
    )
    sources = {f.where.split(": ", 1)[1] for f in secretscan.SCANNER.planted_hits[before:]}
    assert {
        "log record nixos_azure_publish.planted",
        "captured stdout",
        "subprocess stdout",
    } <= sources


def test_files_under_the_temp_directory_are_scanned(tmp_path):
    (tmp_path / "report.json").write_text(f'{{"url": "{SAS}"}}')
    (tmp_path / "disk.vhd").write_text(SAS)  # images are not text
    before = len(secretscan.SCANNER.findings)
    secretscan.SCANNER.scan_tree(tmp_path)
    assert [f.where.rsplit(" ", 1)[1] for f in taken_back(before)] == ["report.json"]
    (tmp_path / "report.json").unlink()
    (tmp_path / "disk.vhd").unlink()


def test_an_emulator_store_is_the_server_side_and_not_scanned(tmp_path):
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "emulator-cert.pem").write_text("certificate")
    (tmp_path / "state.json").write_text(f'{{"accessSAS": "{SAS}"}}')
    before = len(secretscan.SCANNER.findings)
    secretscan.SCANNER.scan_tree(tmp_path)
    assert taken_back(before) == []
    (tmp_path / "state.json").unlink()


def test_the_emulator_request_log_and_recording_are_scanned(emulator):
    from nixos_azure_publish.emulator.testing import clients  # noqa: PLC0415

    emulator.app.record_traffic()
    sdk = clients(emulator)
    sdk.create_group("images", "westeurope")
    sdk.upload_disk("images", "upload")  # grants (a SAS in an answer), writes, revokes
    before = len(secretscan.SCANNER.findings)
    secretscan.SCANNER.scan_emulator(emulator)
    assert taken_back(before) == []  # the emulator keeps no secret in its logs
    assert any("beginGetAccess" in (r.action or "") for r in emulator.requests)

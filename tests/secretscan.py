"""The session's secrets scan: no SAS signature, bearer token, client secret or key, anywhere.

Collected from the whole test session: every log record (as any handler would
receive it), every captured output (``capsys``, subprocesses' ``communicate``,
the report sections pytest keeps), the emulator's request log and recorded
exchanges, and at the end every text file the tests wrote under pytest's temp
directory (reports, summaries, journals, spools). Any hit makes the session fail
with a list of where it was seen, the secret itself masked.

The patterns are independent of the package's own redaction (``redact.py``):
a shape that the package forgets must still be caught here. Literal secrets
known to the session (the emulator's token, the storage account key, any
``AZURE_CLIENT_SECRET``) are searched for as they are.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from _pytest.capture import CaptureFixture

from nixos_azure_publish.emulator.azurite import ACCOUNT_KEY
from nixos_azure_publish.emulator.credential import TOKEN

if TYPE_CHECKING:
    import types

    from nixos_azure_publish.emulator.server import Emulator

MASK = "REDACTED"
# A value that is a placeholder, not a secret.
_PLACEHOLDER = r"(?!REDACTED|\*\*\*|<|\{|\$)"
PATTERNS: dict[str, re.Pattern[str]] = {
    "SAS signature": re.compile(r"(?:[?&]|%26|\b)sig=" + _PLACEHOLDER + r"[A-Za-z0-9%+/=]{16,}"),
    "bearer token": re.compile(r"\bBearer\s+" + _PLACEHOLDER + r"[A-Za-z0-9\-._~+/]{8,}=*"),
    "account key": re.compile(r"\bAccountKey=" + _PLACEHOLDER + r"[A-Za-z0-9+/]{20,}=*"),
    "client secret": re.compile(
        r"(?i)\b(?:client_secret|AZURE_CLIENT_SECRET)['\"]?\s*[=:]\s*['\"]?"
        + _PLACEHOLDER
        + r"[A-Za-z0-9~._\-]{8,}"
    ),
}
# Files under the temp directory that are not ours to judge: Azurite's own storage and
# debug log (the storage service's side, like Azure's own servers), and images.
_SKIP_PARTS = ("azurite", "emulator-azurite")
_SKIP_SUFFIXES = (".vhd", ".raw", ".img", ".qcow2", ".vhdx")
_MAX_FILE = 4 * 1024 * 1024


@dataclass
class Finding:
    where: str
    kind: str
    excerpt: str


@dataclass
class Scanner:
    findings: list[Finding] = field(default_factory=list)
    scanned: int = 0
    current: str = "session"
    literals: dict[str, str] = field(default_factory=dict)
    planted: set[str] = field(default_factory=set)
    """Fake secrets the scan's own tests plant; found, they go to ``planted_hits``."""
    planted_hits: list[Finding] = field(default_factory=list)
    inputs: set[Path] = field(default_factory=set)
    """Files a test wrote to hand a secret to the tool (a SAS file), not the tool's output."""

    def holds_secret(self, path: Path) -> Path:
        """Mark *path* as an input that holds a secret on purpose; return it."""
        self.inputs.add(path.resolve())
        return path

    def literal_secrets(self) -> dict[str, str]:
        found = {"account key": ACCOUNT_KEY, "bearer token": TOKEN, **self.literals}
        secret = os.environ.get("AZURE_CLIENT_SECRET")
        if secret and len(secret) >= 6:
            found["client secret"] = secret
        return found

    def scan(self, text: str | bytes | None, source: str) -> None:
        if not text:
            return
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        self.scanned += 1
        where = f"{self.current}: {source}"
        for kind, pattern in PATTERNS.items():
            for match in pattern.finditer(text):
                self._found(where, kind, text, match.start(), match.end())
        for kind, secret in self.literal_secrets().items():
            at = text.find(secret)
            if at >= 0:
                self._found(where, kind, text, at, at + len(secret))

    def _found(self, where: str, kind: str, text: str, start: int, end: int) -> None:
        excerpt = text[max(0, start - 60) : start] + MASK + text[end : end + 20]
        if any(secret in text[start:end] or text[start:end] in secret for secret in self.planted):
            self.planted_hits.append(Finding(where, kind, " ".join(excerpt.split())))
        elif len(self.findings) < 200:
            self.findings.append(Finding(where, kind, " ".join(excerpt.split())))

    def scan_emulator(self, emulator: Emulator) -> None:
        """The emulator's request log and, when recording, every exchange it answered."""
        for record in list(emulator.requests):
            self.scan(repr(record), "emulator request log")
        if emulator.app.traffic is not None:
            for exchange in emulator.app.traffic.exchanges:
                self.scan(repr(exchange), "emulator recording")

    def scan_tree(self, root: Path) -> None:
        for path in root.rglob("*"):
            if any(part in _SKIP_PARTS for part in path.parts) or path.suffix in _SKIP_SUFFIXES:
                continue
            if path.resolve() in self.inputs or _in_emulator_store(path):
                continue
            try:
                if not path.is_file() or path.is_symlink() or path.stat().st_size > _MAX_FILE:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            if b"\0" in data[:4096]:
                continue  # binary
            self.scan(data, f"file {path.relative_to(root)}")


def _in_emulator_store(path: Path) -> bool:
    """A file of an emulator's ``--state-dir`` (beside its ``tls/``): the server's own
    store, which keeps the grants it handed out as Azure's back end does; not a log."""
    return path.name == "state.json" and (path.parent / "tls" / "emulator-cert.pem").exists()


SCANNER = Scanner()


class _RecordScanner(logging.Handler):
    """Sees every record that reaches the root logger, before any handler redacts it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is not this scan's business
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            text += "\n" + record.exc_text
        SCANNER.scan(text, f"log record {record.name}")


_HANDLER = _RecordScanner(level=logging.NOTSET)
_original_readouterr = CaptureFixture.readouterr
_original_communicate = subprocess.Popen.communicate


def _readouterr(self: CaptureFixture[Any]) -> Any:
    result = _original_readouterr(self)
    SCANNER.scan(result.out, "captured stdout")
    SCANNER.scan(result.err, "captured stderr")
    return result


def _communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
    out, err = _original_communicate(self, *args, **kwargs)
    if _called_from_the_package():
        # The package reading a child's output (azcopy, nix) is not yet output: where
        # it goes (a log, an error) is scanned there, after the package redacted it.
        return out, err
    SCANNER.scan(out, "subprocess stdout")
    SCANNER.scan(err, "subprocess stderr")
    return out, err


def _called_from_the_package() -> bool:
    frame: types.FrameType | None = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == "subprocess":
        frame = frame.f_back  # subprocess.run calls communicate
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return str(name).startswith("nixos_azure_publish.")


def install() -> None:
    logging.getLogger().addHandler(_HANDLER)
    CaptureFixture.readouterr = _readouterr  # type: ignore[method-assign]
    subprocess.Popen.communicate = _communicate  # type: ignore[method-assign]


def keep_installed() -> None:
    """The CLI replaces root handlers it owns only; put ours back if a test removed it."""
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)


def report(session: pytest.Session) -> None:
    basetemp = session.config._tmp_path_factory.getbasetemp()  # type: ignore[attr-defined]
    SCANNER.current = "end of session"
    SCANNER.scan_tree(Path(basetemp))
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter is not None else print
    if reporter is not None:
        reporter.write_line("")  # after the progress line
    write(f"secrets scan: {SCANNER.scanned} texts scanned, {len(SCANNER.findings)} secrets found")
    if SCANNER.findings:
        for finding in SCANNER.findings:
            write(f"  {finding.kind} in {finding.where}: ...{finding.excerpt}...")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

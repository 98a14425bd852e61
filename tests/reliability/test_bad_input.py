"""The bad-input corpus: every way a user can hand the tool something wrong.

Each case runs the real command line (in-process, through ``main``) against a
running emulator and must end with exactly one ``error:`` line, the documented
exit code (README "Exit codes"), no traceback, and no write request (PUT, POST,
PATCH, DELETE) reaching the emulator: bad input changes nothing in Azure.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish import vhd
from nixos_azure_publish.cli import main
from nixos_azure_publish.emulator.server import run_emulator
from nixos_azure_publish.errors import ExitCode
from tests import secretscan
from tests.helpers.images import make_dynamic, make_fixed, make_image, patch_footer
from tests.helpers.publishing import WRITES
from tests.helpers.targets import write_target
from tests.reliability import figures

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from nixos_azure_publish.emulator.azurite import Azurite
    from nixos_azure_publish.emulator.server import Emulator

MIB = 1024 * 1024
USAGE, IMAGE, AZURE, NIX = ExitCode.USAGE, ExitCode.INVALID_IMAGE, ExitCode.AZURE, ExitCode.NIX


@pytest.fixture(scope="module")
def quiet_emulator(emulator_azurite: Azurite) -> Iterator[Emulator]:
    """One emulator for the whole corpus: its request log must never see a write."""
    with run_emulator(azurite=emulator_azurite) as running:
        running.app.record_traffic()
        yield running
        secretscan.SCANNER.scan_emulator(running)


@dataclass
class Inputs:
    """What a case builds its command line from."""

    tmp: Path
    good_image: Path

    def target(self, image: Path | None = None, **overrides: Any) -> str:
        folder = self.tmp / f"t{len(list(self.tmp.glob('t*')))}"
        return str(write_target(folder, image or self.good_image, **overrides))

    def raw_target(self, text: str, suffix: str = ".json") -> str:
        path = self.tmp / f"raw{suffix}"
        path.write_text(text, encoding="utf-8")
        return str(path)

    def publish(self, image: Path | str, **overrides: Any) -> list[str]:
        return [
            "publish",
            "--config",
            self.target(**overrides),
            "--image",
            str(image),
            "--state-dir",
            str(self.tmp / "state"),
        ]

    def file(self, name: str, data: bytes = b"") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


def fixed(c: Inputs, size: int = 24 * MIB, **fields: int | bytes) -> Path:
    """A fixed VHD whose footer has *fields* changed (checksum fixed unless given)."""
    path = make_fixed(c.tmp / "bad.vhd", size, {0: b"\x01" * 4096})
    if fields:
        with path.open("r+b") as handle:
            handle.seek(-512, os.SEEK_END)
            footer = handle.read(512)
            handle.seek(-512, os.SEEK_END)
            handle.write(patch_footer(footer, **fields))
    return path


def appended(c: Inputs) -> Path:
    path = fixed(c)
    with path.open("ab") as handle:
        handle.truncate(path.stat().st_size + 4 * MIB)
    return path


def truncated(c: Inputs) -> Path:
    path = fixed(c)
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size - 100)
    return path


def qcow2(c: Inputs) -> Path:
    head = b"QFI\xfb" + b"\0" * 20 + struct.pack(">Q", 24 * MIB)
    return c.file("disk.qcow2", head.ljust(4096, b"\0"))


def fifo(c: Inputs) -> Path:
    path = c.tmp / "fifo.vhd"
    os.mkfifo(path)
    return path


def loop(c: Inputs) -> Path:
    path = c.tmp / "loop.vhd"
    path.symlink_to(path)
    return path


def unreadable(c: Inputs) -> Path:
    if os.geteuid() == 0:
        pytest.skip("root reads every file")
    path = fixed(c)
    path.chmod(0)
    return path


def huge_sparse_raw(c: Inputs) -> Path:
    """A 15 TiB sparse raw disk: refused at once, without reading it."""
    path = c.tmp / "huge.raw"
    with path.open("wb") as handle:
        handle.truncate(15 << 40)
    return path


def store_dir(c: Inputs, *names: str) -> Path:
    folder = c.tmp / "out"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


Case = tuple[str, "Callable[[Inputs], list[str]]", int, str]

VHD_CASES: list[Case] = [
    ("empty", lambda c: c.publish(c.file("e.vhd")), IMAGE, "empty"),
    ("raw", lambda c: c.publish(c.file("r.img", b"\1" * MIB * 21)), IMAGE, "raw disk image"),
    ("qcow2", lambda c: c.publish(qcow2(c)), IMAGE, "qcow2"),
    ("vhdx", lambda c: c.publish(c.file("d.vhdx", b"vhdxfile".ljust(8192, b"\0"))), IMAGE, "VHDX"),
    (
        "dynamic",
        lambda c: c.publish(make_dynamic(c.tmp / "d.vhd", 24 * MIB, {0: b"\1" * 512})),
        IMAGE,
        "dynamic VHD",
    ),
    ("differencing", lambda c: c.publish(fixed(c, disk_type=4)), IMAGE, "differencing"),
    ("bad-cookie", lambda c: c.publish(fixed(c, cookie=b"conectiX")), IMAGE, "cookie"),
    ("bad-checksum", lambda c: c.publish(fixed(c, checksum=1)), IMAGE, "checksum"),
    ("bad-disk-type", lambda c: c.publish(fixed(c, disk_type=7)), IMAGE, "disk type"),
    ("size-mismatch", lambda c: c.publish(fixed(c, current_size=30 * MIB)), IMAGE, "footer says"),
    (
        "size-not-mib",
        lambda c: c.publish(make_fixed(c.tmp / "n.vhd", 24 * MIB + 512)),
        IMAGE,
        "whole number",
    ),
    ("too-small", lambda c: c.publish(make_fixed(c.tmp / "s.vhd", 8 * MIB)), IMAGE, "minimum"),
    ("too-large", lambda c: c.publish(fixed(c, current_size=33 << 40)), IMAGE, "maximum"),
    ("footer-not-at-end", lambda c: c.publish(appended(c)), IMAGE, "appended"),
    ("truncated", lambda c: c.publish(truncated(c)), IMAGE, "truncated"),
    ("footer-cut-short", lambda c: c.publish(c.file("f.vhd", b"conectix" * 8)), IMAGE, "cut short"),
    ("fifo", lambda c: c.publish(fifo(c)), IMAGE, "not a regular file"),
    ("device", lambda c: c.publish("/dev/zero"), IMAGE, "not a regular file"),
    ("symlink-loop", lambda c: c.publish(loop(c)), USAGE, "symbolic link loop"),
    ("missing", lambda c: c.publish(c.tmp / "nope.vhd"), USAGE, "does not exist"),
    ("no-permission", lambda c: c.publish(unreadable(c)), IMAGE, "permission denied"),
    ("huge-sparse-raw", lambda c: c.publish(huge_sparse_raw(c)), IMAGE, "raw disk image"),
    ("dir-without-vhd", lambda c: c.publish(store_dir(c, "disk.img")), IMAGE, "no .vhd file"),
    ("dir-with-two-vhds", lambda c: c.publish(store_dir(c, "a.vhd", "b.vhd")), IMAGE, "2 .vhd"),
    (
        "convert-empty",
        lambda c: ["convert", str(c.file("e.vhd")), str(c.tmp / "o.vhd")],
        IMAGE,
        "empty",
    ),
    ("inspect-dir", lambda c: ["inspect", str(c.tmp)], IMAGE, "no .vhd file"),
    ("convert-onto-itself", lambda c: ["convert", str(fixed(c)), str(fixed(c))], IMAGE, ""),
]


def bad(c: Inputs, **overrides: Any) -> list[str]:
    return c.publish(c.good_image, **overrides)


def config(case: str, needle: str, /, **overrides: Any) -> Case:
    """A publish of the good image whose target has *overrides*: a usage error saying *needle*."""
    return (case, lambda c: bad(c, **overrides), USAGE, needle)


def gallery(**fields: Any) -> dict[str, Any]:
    return {"gallery": {"name": "test_gallery", **fields}}


COMMUNITY = {
    "publicNamePrefix": "nixos",
    "publisherUri": "https://nixos.org",
    "publisherContact": "a@b.org",
    "eula": "MIT",
}

CONFIG_CASES: list[Case] = [
    config("name", "name: must be 1-40", name="Nixos_Test"),
    config("resource-group", "resourceGroup:", resourceGroup="rg."),
    config("location-typo", "did you mean westeurope", location="westeurop"),
    config("subscription", "subscriptionId:", subscriptionId="not-a-guid"),
    config("tag-name", "tags.a<b", tags={"a<b": "x"}),
    config("tag-value", "at most 256", tags={"a": "x" * 300}),
    config("too-many-tags", "tags:", tags={f"t{i}": "x" for i in range(60)}),
    config("gallery-name", "gallery.name:", **gallery(name="my-gallery")),
    config(
        "community-prefix",
        "publicNamePrefix",
        **gallery(community={**COMMUNITY, "publicNamePrefix": "n!"}),
    ),
    config(
        "community-contact",
        "publisherContact",
        **gallery(community={**COMMUNITY, "publisherContact": "nobody"}),
    ),
    config("community-eula", "eula", **gallery(community={**COMMUNITY, "eula": " "})),
    config(
        "definition-name",
        "imageDefinition.name:",
        imageDefinition={"name": "-x", "publisher": "a", "offer": "b", "sku": "c"},
    ),
    config(
        "definition-sku",
        "imageDefinition.sku:",
        imageDefinition={"name": "x", "publisher": "a", "offer": "b", "sku": "c d"},
    ),
    config(
        "security-gen1",
        "needs hyperVGeneration V2",
        hyperVGeneration="V1",
        imageDefinition={
            "name": "x",
            "publisher": "a",
            "offer": "b",
            "sku": "c",
            "securityType": "TrustedLaunch",
        },
    ),
    config("arm64-gen1", "Arm64", architecture="Arm64", hyperVGeneration="V1"),
    config("gallery-only", "imageDefinition:", imageDefinition=None),
    config("replicas", "replicaCount", version={"replicaCount": 0}),
    config("region-twice", "listed twice", version={"targetRegions": ["westeurope", "westeurope"]}),
    config("own-region-missing", "own region", version={"targetRegions": ["northeurope"]}),
    config("no-regions", "at least one", version={"targetRegions": []}),
    config("end-of-life-past", "in the past", version={"endOfLifeDate": "2001-01-01"}),
    config("end-of-life-garbage", "ISO 8601", version={"endOfLifeDate": "soon"}),
    config(
        "shallow-multi-region",
        "Shallow",
        version={"replicationMode": "Shallow", "targetRegions": ["westeurope", "northeurope"]},
    ),
    config("retention", "keepVersions", retention={"keepVersions": 0}),
    config("smoke-timeout", "timeoutSeconds", smokeTest={"enable": True, "timeoutSeconds": 5}),
    config("smoke-regex", "regular expression", smokeTest={"enable": True, "expect": "(("}),
    # wrong types and unknown keys
    config("type-name-int", "name", name=5),
    config("type-regions-str", "", version={"targetRegions": "westeurope"}),
    config("type-tags-list", "tags", tags=["a"]),
    config("type-replicas-str", "replica", version={"replicaCount": "two"}),
    config("unknown-key", "galery", galery={"name": "x"}),
    config("unknown-nested-key", "targetRegion", version={"targetRegion": []}),
    # templates
    config("template-raises", "template", version={"name": "{{ 1 / 0 }}.0.0"}),
    config("template-undefined", "template", version={"name": "{{ nope }}.0.0"}),
    config("template-huge", "template", version={"name": "{{ '9' * 100000000 }}.1.1"}),
    config("template-huge-power", "template", version={"name": "{{ 10 ** 99999999 }}.1.1"}),
    config("template-escape", "template", version={"name": "{{ ''.__class__.__mro__ }}"}),
    config("template-not-version", "Major.Minor", version={"name": "1.2"}),
    # the file itself
    ("json-syntax", lambda c: ["publish", "--config", c.raw_target('{"name": ')], USAGE, "JSON"),
    (
        "toml-syntax",
        lambda c: ["publish", "--config", c.raw_target("a = ", ".toml")],
        USAGE,
        "TOML",
    ),
    ("not-an-object", lambda c: ["publish", "--config", c.raw_target("[1, 2]")], USAGE, ""),
    (
        "binary",
        lambda c: ["config", "check", "--config", str(c.file("b.json", b"\xff\xfe"))],
        USAGE,
        "cannot read",
    ),
    ("config-device", lambda _: ["config", "check", "--config", "/dev/zero"], USAGE, "larger"),
    ("config-dir", lambda c: ["config", "check", "--config", str(c.tmp)], USAGE, "directory"),
    ("config-missing", lambda c: ["publish", "--config", str(c.tmp / "n.json")], USAGE, ""),
]

CLI_CASES: list[Case] = [
    ("no-source", lambda _: ["publish"], USAGE, "exactly one of --config"),
    ("both-sources", lambda c: ["publish", "--config", c.target(), "--flake", "."], USAGE, ""),
    ("unknown-option", lambda _: ["publish", "--bogus"], USAGE, "No such option"),
    ("unknown-command", lambda _: ["frobnicate"], USAGE, "No such command"),
    ("missing-argument", lambda _: ["inspect"], USAGE, "Missing argument"),
    ("upload-bad-url", lambda c: ["upload", str(c.good_image), "not-a-url"], USAGE, ""),
    (
        "upload-sas-not-https",
        lambda c: ["upload", str(c.good_image), "ftp://x/y?sig=SECRETSIG"],
        USAGE,
        "",
    ),
    ("flake-with-attribute", lambda _: ["publish", "--flake", ".#azurePublish.x"], USAGE, ""),
    ("empty-target", lambda _: ["publish", "--flake", ".", "--target", ""], USAGE, "--target"),
    (
        "hydra-json-missing",
        lambda c: ["hydra-hook", "--hydra-json", str(c.tmp / "n.json"), "--spool", str(c.tmp)],
        USAGE,
        "",
    ),
    (
        "hydra-json-garbage",
        lambda c: [
            "hydra-hook",
            "--hydra-json",
            str(c.file("h.json", b"{")),
            "--spool",
            str(c.tmp),
            "--targets",
            c.raw_target("{}"),
        ],
        USAGE,
        "",
    ),
]

CASES = VHD_CASES + CONFIG_CASES + CLI_CASES


@pytest.fixture(scope="module")
def good_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image(tmp_path_factory.mktemp("good"), seed=11)


def run_case(
    argv: list[str],
    emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, list[str], list[str]]:
    """Exit code, stderr lines, and the write requests the emulator saw."""
    for key, value in emulator.environ.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    before = len(emulator.requests)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    seen = [f"{r.method} {r.path}" for r in list(emulator.requests)[before:] if r.method in WRITES]
    return code, err.splitlines(), seen


def check(code: int, lines: list[str], writes: list[str], expected: int, needle: str) -> None:
    text = "\n".join(lines)
    assert "Traceback" not in text, text
    errors = [line for line in lines if line.lower().startswith("error")]
    assert len(errors) == 1, text  # one line says what is wrong and what to do
    assert code == expected, text
    assert needle in errors[0] or needle in text, text
    assert writes == [], writes  # nothing reached Azure


@pytest.mark.parametrize(
    ("argv", "expected", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(  # noqa: PLR0917
    argv, expected, needle, quiet_emulator, good_image, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    inputs = Inputs(tmp_path, good_image)
    check(*run_case(argv(inputs), quiet_emulator, monkeypatch, capsys), expected, needle)


FLAKE_CASES = [
    ("eval-error", NIX, "this target does not evaluate"),
    ("impure", NIX, "currentSystem"),
    ("nope", NIX, "has no publish target 'nope'"),
    ("no-vhd", IMAGE, "no .vhd file"),
    ("two-vhds", IMAGE, "2 .vhd files"),
    ("no-image", USAGE, "image: is not set"),
    ("broken-build", NIX, "the image build failed on purpose"),
]


@pytest.mark.parametrize(
    ("target", "expected", "needle"), FLAKE_CASES, ids=[c[0] for c in FLAKE_CASES]
)
def test_bad_flake_target(  # noqa: PLR0917
    target, expected, needle, fixture_flake, quiet_emulator, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    ref = fixture_flake("publish")
    argv = ["publish", "--flake", ref, "--target", target, "--state-dir", str(tmp_path / "s")]
    check(*run_case(argv, quiet_emulator, monkeypatch, capsys), expected, needle)


def test_the_corpus_is_large_and_covers_every_vhd_problem_code():
    figures.record(
        "bad input: corpus",
        method="fast: every case in CI",
        runs=1,
        failures=0,
        cases=len(CASES) + len(FLAKE_CASES),
    )
    assert len(CASES) + len(FLAKE_CASES) >= 60
    codes = {
        "not-vhd",
        "dynamic",
        "differencing",
        "bad-cookie",
        "bad-checksum",
        "bad-disk-type",
        "size-mismatch",
        "size-not-mib",
        "too-small",
        "too-large",
        "footer-not-at-end",
        "truncated",
        "empty",
    }
    names = {c[0] for c in VHD_CASES}
    assert codes - {"not-vhd"} <= names
    assert {"raw", "qcow2", "vhdx"} <= names


def test_json_errors_say_the_same_in_one_object(
    quiet_emulator, good_image, tmp_path, monkeypatch, capsys
):
    """With --json the error is one JSON object on stdout, with the documented exit code."""
    inputs = Inputs(tmp_path, good_image)
    for key, value in quiet_emulator.environ.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    code = main(["--json", *bad(inputs, name="Bad_Name")])
    out = capsys.readouterr().out
    error = json.loads(out)["error"]
    assert code == error["exitCode"] == USAGE
    assert error["rerunHelps"] is False
    assert vhd  # the image helpers above come from the package's own VHD module

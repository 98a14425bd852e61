"""Fixtures that start real services on loopback and always stop them."""

from __future__ import annotations

import functools
import platform
import shutil
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from azure.core.exceptions import HttpResponseError

from nixos_azure_publish.emulator import speccheck
from nixos_azure_publish.emulator.azurite import Azurite, run_azurite
from nixos_azure_publish.emulator.server import Emulator, run_emulator
from tests import secretscan
from tests.conftest import REPO, require_tool
from tests.helpers.nix import nix_config, nix_eval
from tests.helpers.publishing import Cli

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from nixos_azure_publish.emulator.router import Router


def error_of(call: Callable[[], object]) -> Any:
    """The HttpResponseError that *call* raises (tests read .error.code and .message)."""
    with pytest.raises(HttpResponseError) as info:
        call()
    return info.value


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[Azurite]:
    """A fresh Azurite blob service (HTTP) on a free loopback port, with its own storage."""
    with run_azurite(location=tmp_path / "azurite", log_file=tmp_path / "azurite.log") as service:
        yield service


# --- Nix fixture flakes (tests/fixtures/flakes) ---------------------------------------------

FIXTURE_FLAKES = Path(__file__).resolve().parent.parent / "fixtures" / "flakes"


@functools.cache
def nix_offline_config() -> str:
    """The NIX_CONFIG of scripts/nix-config (offline; no build users where Nix has none).

    Asked without the caller's NIX_CONFIG, since the tests replace it with this.
    """
    return nix_config(None).strip()


@pytest.fixture
def nix_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Real Nix, offline: skip when `nix` is missing (fail in CI)."""
    require_tool("nix")
    monkeypatch.setenv("NIX_CONFIG", nix_offline_config())
    monkeypatch.delenv("NIXOS_AZURE_PUBLISH_NIX", raising=False)


@pytest.fixture
def fixture_flake(tmp_path: Path, nix_env: None) -> Callable[[str], str]:
    """Copy a fixture flake (with the repository's nix/lib.nix) to a temp dir; its `path:` ref.

    Copied rather than used in place: Nix sees only git-tracked files of a flake in a repo.
    Each copy gets a fresh @nonce@, so its images are really built, never found in the
    store from an earlier test.
    """
    tools = [require_tool(name) for name in ("qemu-img", "truncate", "cp", "mkdir", "chmod")]
    search_path = ":".join(dict.fromkeys(str(Path(tool).parent) for tool in tools))
    system = {"x86_64": "x86_64-linux", "aarch64": "aarch64-linux"}.get(platform.machine())
    if system is None:
        pytest.skip(f"fixture flakes build for Linux x86_64 or aarch64, not {platform.machine()}")

    def copy(name: str) -> str:
        dest = tmp_path / "flakes" / name
        shutil.copytree(FIXTURE_FLAKES / name, dest)
        shutil.copy(FIXTURE_FLAKES.parent.parent.parent / "nix" / "lib.nix", dest / "lib.nix")
        flake = dest / "flake.nix"
        text = flake.read_text(encoding="utf-8")
        for key, value in (
            ("system", system),
            ("path", search_path),
            ("nonce", uuid.uuid4().hex),
            ("python", sys.executable),
        ):
            text = text.replace(f"@{key}@", value)
        flake.write_text(text, encoding="utf-8")
        return f"path:{dest}"

    return copy


@pytest.fixture
def publish_flake(fixture_flake: Callable[[str], str]) -> str:
    """The fixture flake ``publish`` (targets of every kind, some broken on purpose)."""
    return fixture_flake("publish")


STUB_NIXPKGS = FIXTURE_FLAKES / "nixpkgs-stub"


@pytest.fixture
def flake_with_nixpkgs(tmp_path: Path, nix_env: None) -> Callable[..., Callable[..., object]]:
    """This repository's flake with nixpkgs replaced by the stand-in of a release.

    ``flake_with_nixpkgs("24.11")("azurePublish.default")`` evaluates an attribute to JSON;
    ``check=False`` returns the failed process instead. The copies live in
    tmp_path/<release>/{repo,nixpkgs}.
    """

    def prepare(release: str) -> Callable[..., object]:
        root = tmp_path / release
        dest = root / "repo"
        if not dest.exists():
            dest.mkdir(parents=True)
            shutil.copy(REPO / "flake.nix", dest / "flake.nix")
            shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")
            for folder in ("nix", "templates"):
                shutil.copytree(REPO / folder, dest / folder)
            (dest / "nixos_azure_publish").mkdir()
            shutil.copy(REPO / "nixos_azure_publish" / "__init__.py", dest / "nixos_azure_publish")
            shutil.copytree(STUB_NIXPKGS, root / "nixpkgs")
            (root / "nixpkgs" / "release.nix").write_text(f'"{release}"\n', encoding="utf-8")

        def run(attr: str, *extra: str, check: bool = True) -> Any:
            return nix_eval(
                "--no-write-lock-file",
                "--override-input",
                "nixpkgs",
                f"path:{root / 'nixpkgs'}",
                *extra,
                f"path:{dest}#{attr}",
                check=check,
            )

        return run

    return prepare


# --- The local Azure emulator (nixos_azure_publish.emulator) ---------------------------------


@pytest.fixture(scope="session")
def emulator_azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    """One Azurite for every emulator of the session (each disk has its own container)."""
    location = tmp_path_factory.mktemp("emulator-azurite")
    with run_azurite(location=location, log_file=location / "azurite.log") as service:
        yield service


@pytest.fixture
def emulator(emulator_azurite: Azurite) -> Iterator[Emulator]:
    """The local Azure: a fresh HTTPS Resource Manager over Azurite, fast LROs; always stopped.

    ``emulator.requests`` logs every call; ``emulator.faults`` and ``emulator.settings``
    may be changed while a test runs. Its traffic is checked against Azure's API specs
    at the end of the session (see ``pytest_sessionfinish`` below).
    """
    with run_emulator(azurite=emulator_azurite) as running:
        traffic = running.app.record_traffic()
        yield running
        secretscan.SCANNER.scan_emulator(running)
    _SPEC_TRAFFIC.router = running.app.router
    # What the emulator accepted must be valid per the specs, and so must its answers;
    # requests it refused are often broken on purpose, so only 2xx exchanges are kept,
    # and only those of an api-version the shipped specs describe.
    _SPEC_TRAFFIC.exchanges += [
        e
        for e in traffic.exchanges
        if e["liveResponse"]["statusCode"].startswith("2") and speccheck.has_spec(e)
    ]


@dataclass
class _SpecTraffic:
    router: Router | None = None
    exchanges: list[dict[str, Any]] = field(default_factory=list)


_SPEC_TRAFFIC = _SpecTraffic()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Validate every 2xx exchange the emulator fixture saw this session with oav."""
    del exitstatus
    oav = REPO / "node_modules" / ".bin" / "oav"
    if _SPEC_TRAFFIC.router is None or not _SPEC_TRAFFIC.exchanges or not oav.exists():
        return
    with tempfile.TemporaryDirectory(prefix="spec-traffic-") as work:
        result = speccheck.validate(
            _SPEC_TRAFFIC.exchanges,
            router=_SPEC_TRAFFIC.router,
            oav=str(oav),
            work=Path(work),
        )
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter is not None else print
    write(
        f"emulator traffic of this session: {result.exchanges} operations validated against "
        f"Azure's API specs ({len(result.operations)} distinct)"
    )
    if result.problems:
        write("spec violations in accepted requests or in the emulator's answers:")
        for problem in result.problems:
            write(f"  {problem}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Journals go to the test's own directory, also in subprocesses (they inherit it).

    Modules that publish use it for every test: ``pytestmark = pytest.mark.usefixtures(...)``.
    """
    home = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home


@pytest.fixture
def cli(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    """The CLI in-process against the emulator (see ``tests.helpers.publishing.Cli``)."""
    return Cli(emulator, tmp_path, monkeypatch, capsys)


@pytest.fixture
def fast(emulator: Emulator) -> Emulator:
    """The emulator, replicating versions in 0.2 s instead of seconds."""
    emulator.settings.replication_seconds = 0.2
    return emulator

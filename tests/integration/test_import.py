"""``import`` against the emulator: community and gallery sources, reruns, dry runs, conflicts.

A maintainer publishes into a community gallery (and another gallery, for
version-id sources) with the real ``publish`` command; the user's own target
names another resource group, gallery and definition.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import shutil
import ssl
import threading
from typing import TYPE_CHECKING, Any

import pytest

from nixos_azure_publish import vhd
from nixos_azure_publish.errors import ExitCode
from tests.integration.test_publish import compute, make_image, publish, write_target, writes
from tests.integration.test_status import run

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from nixos_azure_publish.emulator.server import Emulator

COMMUNITY = {
    "publicNamePrefix": "nixos",
    "publisherUri": "https://nixos.org",
    "publisherContact": "images@example.org",
    "eula": "https://nixos.org/eula",
}
MINE = "my-images"
MY_GALLERY = "my_gallery"
MY_DEFINITION = "nixos"


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


def release(
    emulator: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    seed: int,
    **version: Any,
) -> dict[str, Any]:
    """The maintainers publish a version into their community gallery; its report."""
    folder = tmp_path / f"release{seed}"
    image = make_image(folder / "img", seed=seed, size_mib=24)
    target = write_target(
        folder,
        image,
        gallery={"name": "test_gallery", "community": COMMUNITY},
        version={"targetRegions": ["westeurope", "northeurope"], **version},
    )
    code, report = publish(emulator, monkeypatch, capsys, "--config", str(target))
    assert code == 0, report
    return report


def my_target(tmp_path: Path, **overrides: Any) -> Path:
    """The user's target: their own group, gallery and definition; no image."""
    data: dict[str, Any] = {
        "name": "imported",
        "resourceGroup": MINE,
        "location": "northeurope",
        "hyperVGeneration": "V2",
        "gallery": {"name": MY_GALLERY},
        "imageDefinition": {
            "name": MY_DEFINITION,
            "publisher": "me",
            "offer": "NixOS",
            "sku": "25.05",
        },
        "version": {"targetRegions": ["northeurope"]},
    }
    data.update(overrides)
    path = tmp_path / "mine" / "target.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def community_image(report: dict[str, Any]) -> str:
    """The community image of a release, without its version."""
    return str(report["communityImageId"]).rsplit("/Versions/", 1)[0]


def test_a_dry_run_resolves_latest_and_writes_nothing(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 81)
    release(emulator, tmp_path, monkeypatch, capsys, 82, excludeFromLatest=True)
    target = my_target(tmp_path)
    before = len(emulator.requests)
    code, plan, _ = run(
        emulator,
        monkeypatch,
        capsys,
        "--json",
        "import",
        community_image(first),
        "--config",
        str(target),
        "--dry-run",
    )
    assert code == 0, plan
    assert writes(emulator, before) == []
    assert plan["status"] == "planned"
    # The second release is newer but excluded from latest: latest is the first.
    assert plan["source"] == f"{community_image(first)}@{first['version']}"
    assert plan["upload"]["bytesSent"] == 0
    actions = {(r["kind"], r["name"]): r["action"] for r in plan["resources"]}
    assert actions[("resource group", MINE)] == "would-create"
    assert actions[("image definition", MY_DEFINITION)] == "would-create"
    code, text, _ = run(
        emulator, monkeypatch, capsys, "import", community_image(first), "--config", str(target),
        "--dry-run",
    )  # fmt: skip
    assert f"source:        {community_image(first)}@{first['version']}" in text
    steps = {s["name"]: s["detail"] for s in plan["steps"]}
    assert steps["resolve source"].startswith(f"community {community_image(first)} version")
    assert "(V2, x64, TrustedLaunchSupported)" in steps["resolve source"]


def test_a_target_that_contradicts_the_source_is_refused_before_any_write(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 83)
    target = my_target(
        tmp_path,
        hyperVGeneration="V1",
        imageDefinition={
            "name": MY_DEFINITION,
            "publisher": "me",
            "offer": "NixOS",
            "sku": "25.05",
            "securityType": "Standard",
        },
    )
    before = len(emulator.requests)
    code, error, err = run(
        emulator,
        monkeypatch,
        capsys,
        "--json",
        "import",
        community_image(first),
        "--config",
        str(target),
    )
    assert code == ExitCode.USAGE, error
    assert writes(emulator, before) == []
    assert "hyperVGeneration: the target says V1, the source is V2" in err
    assert "imageDefinition.securityType: the target says Standard" in err


def test_an_unknown_source_is_a_usage_error(emulator, tmp_path, monkeypatch, capsys):
    target = my_target(tmp_path)
    for source in ("/CommunityGalleries/x/Images/y/Versions/1.2", "ftp://example.org/a.vhd"):
        code, _, err = run(emulator, monkeypatch, capsys, "import", source, "--config", str(target))
        assert code == ExitCode.USAGE
        assert err.startswith("error: ")


def test_a_missing_community_version_says_so(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 84)
    target = my_target(tmp_path)
    code, _, err = run(
        emulator,
        monkeypatch,
        capsys,
        "import",
        community_image(first) + "/Versions/9.9.9",
        "--config",
        str(target),
        "--dry-run",
    )
    assert code == ExitCode.AZURE
    assert "/Versions/9.9.9 is not found in northeurope" in err


class _VhdHandler(http.server.BaseHTTPRequestHandler):
    """Serves one file with HEAD, GET and single byte ranges, as a web server or blob does."""

    path_served: Path
    requests: list[str]

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        del format, args

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(length))
        self.send_header("ETag", '"v1"')
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()

    def do_HEAD(self) -> None:
        self.requests.append(f"HEAD {self.path}")
        self._headers(200, self.path_served.stat().st_size, {})

    def do_GET(self) -> None:
        self.requests.append(f"GET {self.path} {self.headers.get('Range', '')}")
        size = self.path_served.stat().st_size
        wanted = self.headers.get("Range")
        with self.path_served.open("rb") as handle:
            if wanted:
                lo, hi = (int(x) for x in wanted.removeprefix("bytes=").split("-"))
                handle.seek(lo)
                self._headers(206, hi - lo + 1, {"Content-Range": f"bytes {lo}-{hi}/{size}"})
                self.wfile.write(handle.read(hi - lo + 1))
                return
            self._headers(200, size, {})
            shutil.copyfileobj(handle, self.wfile)


@contextlib.contextmanager
def https_file(emulator: Emulator, path: Path) -> Iterator[tuple[str, list[str]]]:
    """*path* served over HTTPS with the emulator's certificate (which the tool trusts)."""
    seen: list[str] = []
    handler = type("Handler", (_VhdHandler,), {"path_served": path, "requests": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(emulator.ca_cert, emulator.ca_cert.parent / "emulator-key.pem")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/nixos.vhd?token=SECRET", seen
    finally:
        server.shutdown()
        server.server_close()


def test_an_https_url_is_streamed_once_and_a_rerun_is_a_no_op(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    image = make_image(tmp_path / "img", seed=85, size_mib=24, data_mib=2)
    data = sum(e.length for e in vhd.data_extents(image))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    target = my_target(tmp_path)
    with https_file(emulator, image) as (url, seen):
        before = len(emulator.requests)
        code, plan, _ = run(
            emulator, monkeypatch, capsys, "--json", "import", url, "--config", str(target),
            "--sha256", digest, "--dry-run",
        )  # fmt: skip
        assert code == 0, plan
        assert plan["status"] == "planned"
        assert writes(emulator, before) == []
        assert not [r for r in seen if r.startswith("GET") and not r.endswith(tuple("0123456789"))]
        code, report, err = run(
            emulator, monkeypatch, capsys, "--json", "import", url, "--config", str(target),
            "--sha256", digest,
        )  # fmt: skip
        assert code == 0, report
        assert "SECRET" not in json.dumps(report) + err
        assert report["status"] == "published"
        assert (
            report["source"]
            == f"https://127.0.0.1:{url.split(':')[2].split('/')[0]}/nixos.vhd@{digest}"
        )
        # Only the data went through, and the whole file was read once.
        assert 0 < report["upload"]["bytesSent"] <= data
        full_reads = [r for r in seen if r.startswith("GET") and r.endswith(" ")]
        assert len(full_reads) == 1
        version = compute(emulator).gallery_image_versions.get(
            MINE, MY_GALLERY, MY_DEFINITION, report["version"]
        )
        assert (version.tags or {})["nixos-azure-publish.source-version"] == digest
        # The upload disk is gone once the version holds the image.
        assert list(compute(emulator).disks.list_by_resource_group(MINE)) == []
        # status shows where it came from; gc has nothing to take.
        code, status, _ = run(
            emulator, monkeypatch, capsys, "--json", "status", "--config", str(target)
        )
        assert code == 0, status
        (shown,) = status["versions"]
        assert shown["tags"]["source"] == url.split("?")[0]
        assert shown["tags"]["sourceVersion"] == digest
        assert status["latest"] == report["version"]
        code, gc, _ = run(
            emulator,
            monkeypatch,
            capsys,
            "--json",
            "gc",
            "--config",
            str(target),
            "--older-than",
            "0",
        )
        assert code == 0, gc
        assert gc["deleted"] == []

        before = len(emulator.requests)
        code, again, _ = run(
            emulator, monkeypatch, capsys, "--json", "import", url, "--config", str(target),
            "--sha256", digest,
        )  # fmt: skip
        assert code == 0, again
        assert again["status"] == "already-published"
        assert again["version"] == report["version"]
        assert writes(emulator, before) == []
        assert len([r for r in seen if r.startswith("GET") and r.endswith(" ")]) == 1


def test_a_wrong_sha256_publishes_nothing(emulator, tmp_path, monkeypatch, capsys):
    image = make_image(tmp_path / "img", seed=86, size_mib=24)
    target = my_target(tmp_path)
    with https_file(emulator, image) as (url, _):
        code, _, err = run(
            emulator, monkeypatch, capsys, "import", url, "--config", str(target),
            "--sha256", "0" * 64,
        )  # fmt: skip
    assert code == ExitCode.INVALID_IMAGE, err
    assert "not the expected 0000" in err
    # The upload disk stays unfinished (not marked complete): a rerun replaces it.
    (disk,) = compute(emulator).disks.list_by_resource_group(MINE)
    assert "nixos-azure-publish.upload" not in (disk.tags or {})


def test_an_expired_source_sas_is_reported_as_such_before_any_write(
    emulator, tmp_path, monkeypatch, capsys
):
    target = my_target(tmp_path)
    url = "https://acct.blob.core.windows.net/c/nixos.vhd?se=2020-01-01T00:00:00Z&sig=SECRET"
    before = len(emulator.requests)
    code, _, err = run(emulator, monkeypatch, capsys, "import", url, "--config", str(target))
    assert code != 0
    assert "the SAS of https://acct.blob.core.windows.net/c/nixos.vhd expired at 2020-01-01" in err
    assert "SECRET" not in err
    assert writes(emulator, before) == []


def test_a_source_not_replicated_to_the_target_region_is_refused(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 90)
    target = my_target(tmp_path, location="eastus", version={"targetRegions": ["eastus"]})
    before = len(emulator.requests)
    code, _, err = run(
        emulator, monkeypatch, capsys, "import", first["definitionId"], "--config", str(target)
    )
    assert code == ExitCode.AZURE
    assert "replicated to eastus" in err
    assert writes(emulator, before) == []

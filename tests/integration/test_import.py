"""``import`` against the emulator: community and gallery sources, reruns, dry runs, conflicts.

A maintainer publishes into a community gallery (and another gallery, for
version-id sources) with the real ``publish`` command; the user's own target
names another resource group, gallery and definition.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING, Any, ClassVar

import pytest
from azure.core.exceptions import HttpResponseError
from azure.storage.blob import BlobClient

from nixos_azure_publish import vhd
from nixos_azure_publish.emulator.testing import clients
from nixos_azure_publish.errors import ExitCode
from tests.helpers.images import make_image
from tests.helpers.importing import (
    MINE,
    MY_DEFINITION,
    MY_GALLERY,
    VhdHandler,
    community_image,
    https_file,
    my_target,
    release,
)
from tests.helpers.publishing import compute, create_definition, run, writes
from tests.helpers.targets import GROUP

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator

pytestmark = pytest.mark.usefixtures("state_home")


def test_a_dry_run_resolves_latest_and_writes_nothing(emulator, cli, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 81)
    release(emulator, tmp_path, monkeypatch, capsys, 82, excludeFromLatest=True)
    target = my_target(tmp_path)
    before = len(emulator.requests)
    code, plan, _ = cli.on("import", target, community_image(first), "--dry-run")
    assert code == 0, plan
    assert writes(emulator, before) == []
    assert plan["status"] == "planned"
    # The second release is newer but excluded from latest: latest is the first.
    assert plan["source"] == f"{community_image(first)}@{first['version']}"
    assert plan["upload"]["bytesSent"] == 0
    actions = {(r["kind"], r["name"]): r["action"] for r in plan["resources"]}
    assert actions[("resource group", MINE)] == "would-create"
    assert actions[("image definition", MY_DEFINITION)] == "would-create"
    code, text, _ = cli.on("import", target, community_image(first), "--dry-run", as_json=False)
    assert f"source:        {community_image(first)}@{first['version']}" in text
    steps = {s["name"]: s["detail"] for s in plan["steps"]}
    assert steps["resolve source"].startswith(f"community {community_image(first)} version")
    assert "(V2, x64, TrustedLaunchSupported)" in steps["resolve source"]


def test_a_target_that_contradicts_the_source_is_refused_before_any_write(
    emulator, cli, tmp_path, monkeypatch, capsys
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
    code, error, err = cli.on("import", target, community_image(first))
    assert code == ExitCode.USAGE, error
    assert writes(emulator, before) == []
    assert "hyperVGeneration: the target says V1, the source is V2" in err
    assert "imageDefinition.securityType: the target says Standard" in err


def test_an_unknown_source_is_a_usage_error(cli, tmp_path):
    target = my_target(tmp_path)
    for source in ("/CommunityGalleries/x/Images/y/Versions/1.2", "ftp://example.org/a.vhd"):
        code, _, err = cli.on("import", target, source, as_json=False)
        assert code == ExitCode.USAGE
        assert err.startswith("error: ")


def test_a_missing_community_version_says_so(emulator, cli, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 84)
    target = my_target(tmp_path)
    code, _, err = cli.on(
        "import", target, community_image(first) + "/Versions/9.9.9", "--dry-run", as_json=False
    )
    assert code == ExitCode.AZURE
    assert "/Versions/9.9.9 is not found in northeurope" in err


def test_an_https_url_is_streamed_once_and_a_rerun_is_a_no_op(emulator, cli, tmp_path):
    emulator.settings.replication_seconds = 0.1
    image = make_image(tmp_path / "img", seed=85, size_mib=24, data_mib=2)
    data = sum(e.length for e in vhd.data_extents(image))
    digest = hashlib.sha256(image.read_bytes()).hexdigest()
    target = my_target(tmp_path)
    with https_file(emulator, image) as (url, seen):
        before = len(emulator.requests)
        code, plan, _ = cli.on("import", target, url, "--sha256", digest, "--dry-run")
        assert code == 0, plan
        assert plan["status"] == "planned"
        assert writes(emulator, before) == []
        assert not [r for r in seen if r.startswith("GET") and not r.endswith(tuple("0123456789"))]
        code, report, err = cli.on("import", target, url, "--sha256", digest)
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
        code, status, _ = cli.on("status", target)
        assert code == 0, status
        (shown,) = status["versions"]
        assert shown["tags"]["source"] == url.split("?")[0]
        assert shown["tags"]["sourceVersion"] == digest
        assert status["latest"] == report["version"]
        code, gc, _ = cli.on("gc", target, "--older-than", "0")
        assert code == 0, gc
        assert gc["deleted"] == []

        before = len(emulator.requests)
        code, again, _ = cli.on("import", target, url, "--sha256", digest)
        assert code == 0, again
        assert again["status"] == "already-published"
        assert again["version"] == report["version"]
        assert writes(emulator, before) == []
        assert len([r for r in seen if r.startswith("GET") and r.endswith(" ")]) == 1


def test_a_wrong_sha256_publishes_nothing(emulator, cli, tmp_path):
    image = make_image(tmp_path / "img", seed=86, size_mib=24)
    target = my_target(tmp_path)
    with https_file(emulator, image) as (url, _):
        code, _, err = cli.on("import", target, url, "--sha256", "0" * 64, as_json=False)
    assert code == ExitCode.INVALID_IMAGE, err
    assert "not the expected 0000" in err
    # The upload disk stays unfinished (not marked complete): a rerun replaces it.
    (disk,) = compute(emulator).disks.list_by_resource_group(MINE)
    assert "nixos-azure-publish.upload" not in (disk.tags or {})


def test_an_expired_source_sas_is_reported_as_such_before_any_write(emulator, cli, tmp_path):
    target = my_target(tmp_path)
    url = "https://acct.blob.core.windows.net/c/nixos.vhd?se=2020-01-01T00:00:00Z&sig=SECRET"
    before = len(emulator.requests)
    code, _, err = cli.on("import", target, url, as_json=False)
    assert code != 0
    assert "the SAS of https://acct.blob.core.windows.net/c/nixos.vhd expired at 2020-01-01" in err
    assert "SECRET" not in err
    assert writes(emulator, before) == []


def test_a_source_not_replicated_to_the_target_region_is_refused(
    emulator, cli, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 90)
    target = my_target(tmp_path, location="eastus", version={"targetRegions": ["eastus"]})
    before = len(emulator.requests)
    code, _, err = cli.on("import", target, first["definitionId"], as_json=False)
    assert code == ExitCode.AZURE
    assert "replicated to eastus" in err
    assert writes(emulator, before) == []


def test_a_community_image_is_imported_server_side_and_a_rerun_changes_nothing(
    emulator, cli, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 87)
    target = my_target(tmp_path)
    source = community_image(first)
    code, report, _ = cli.on("import", target, source)
    assert code == 0, report
    assert report["status"] == "published"
    assert report["upload"]["bytesSent"] == 0
    assert report["source"] == f"{source}@{first['version']}"
    client = compute(emulator)
    version = client.gallery_image_versions.get(
        MINE, MY_GALLERY, MY_DEFINITION, report["version"], expand="ReplicationStatus"
    ).as_dict()
    assert version["properties"]["storageProfile"]["source"]["communityGalleryImageId"] == (
        f"{source}/Versions/{first['version']}"
    )
    assert version["tags"]["nixos-azure-publish.source"] == source
    assert version["tags"]["nixos-azure-publish.source-version"] == first["version"]
    definition = client.gallery_images.get(MINE, MY_GALLERY, MY_DEFINITION).as_dict()
    assert definition["properties"]["hyperVGeneration"] == "V2"
    # No disk, no blob: the image never passed through the client.
    assert list(client.disks.list_by_resource_group(MINE)) == []

    before = len(emulator.requests)
    code, again, _ = cli.on("import", target, source)
    assert code == 0, again
    assert again["status"] == "already-published"
    assert again["version"] == report["version"]
    assert writes(emulator, before) == []


def test_a_gallery_version_id_is_imported_with_latest_resolved(
    emulator, cli, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 88)
    release(emulator, tmp_path, monkeypatch, capsys, 89, excludeFromLatest=True)
    image_id = first["definitionId"]
    target = my_target(tmp_path)
    code, report, _ = cli.on("import", target, image_id + "/versions/latest")
    assert code == 0, report
    assert report["upload"]["bytesSent"] == 0
    version = (
        compute(emulator)
        .gallery_image_versions.get(MINE, MY_GALLERY, MY_DEFINITION, report["version"])
        .as_dict()
    )
    source = version["properties"]["storageProfile"]["source"]["id"]
    assert source.lower() == f"{image_id}/versions/{first['version']}".lower()
    assert version["tags"]["nixos-azure-publish.source-version"] == first["version"]
    # status and gc see it as the target's own.
    code, status, _ = cli.on("status", target)
    assert status["latest"] == report["version"]
    assert status["versions"][0]["tags"]["source"].lower() == image_id.lower()


def released_blob(emulator: Emulator) -> tuple[Any, str]:
    """The SDK clients, and a read SAS URL of a released image's disk blob."""
    sdk = clients(emulator)
    sdk.create_group("released", "northeurope")
    sdk.upload_disk("released", "nixos", location="northeurope")
    read = sdk.compute.disks.begin_grant_access(
        "released", "nixos", {"access": "Read", "durationInSeconds": 3600}
    ).result()
    return sdk, str(read.access_sas)


def test_a_blob_url_is_copied_server_side_and_a_rerun_changes_nothing(emulator, cli, tmp_path):
    emulator.settings.replication_seconds = 0.1
    sdk, url = released_blob(emulator)
    target = my_target(tmp_path, cleanup={"deleteUploadDisk": False})
    code, report, err = cli.on("import", target, url)
    assert code == 0, report
    assert "sig=" not in json.dumps(report) + err
    assert report["status"] == "published"
    assert report["upload"]["bytesSent"] == 0
    assert {s["name"]: s["detail"] for s in report["steps"]}["probe source"].startswith(
        url.split("?", maxsplit=1)[0] + ": an Azure PageBlob"
    )
    # The disk holds the source's bytes, copied by the service.
    (disk,) = sdk.compute.disks.list_by_resource_group(MINE)
    copy = sdk.compute.disks.begin_grant_access(
        MINE, str(disk.name), {"access": "Read", "durationInSeconds": 600}
    ).result()
    try:
        got = BlobClient.from_blob_url(str(copy.access_sas)).download_blob().readall()
    finally:
        sdk.compute.disks.begin_revoke_access(MINE, str(disk.name)).result()
    assert got == BlobClient.from_blob_url(url).download_blob().readall()

    before = len(emulator.requests)
    code, again, _ = cli.on("import", target, url)
    assert code == 0, again
    assert again["status"] == "already-published"
    assert writes(emulator, before) == []


def test_put_page_from_url_takes_whole_pages_of_a_readable_source(emulator):
    sdk = clients(emulator)
    sdk.create_group("released", "westeurope")
    sdk.upload_disk("released", "src")
    read = sdk.compute.disks.begin_grant_access(
        "released", "src", {"access": "Read", "durationInSeconds": 3600}
    ).result()
    sdk.upload_disk("released", "dst", revoke=False)
    write = sdk.compute.disks.begin_grant_access(
        "released", "dst", {"access": "Write", "durationInSeconds": 3600}
    ).result()
    dst = BlobClient.from_blob_url(str(write.access_sas))
    src = str(read.access_sas)
    dst.upload_pages_from_url(src, offset=0, length=512, source_offset=0)
    assert dst.download_blob(offset=0, length=512).readall() == (
        BlobClient.from_blob_url(src).download_blob(offset=0, length=512).readall()
    )
    with pytest.raises(HttpResponseError) as info:
        dst.upload_pages_from_url(src, offset=0, length=5 * 1024 * 1024, source_offset=0)
    assert getattr(info.value, "error_code", None) == "InvalidHeaderValue"
    with pytest.raises(HttpResponseError) as info:
        dst.upload_pages_from_url(
            src.split("?", maxsplit=1)[0] + "?sig=wrong", offset=0, length=512, source_offset=0
        )
    assert getattr(info.value, "error_code", None) == "CannotVerifyCopySource"


def _version_from(emulator: Emulator, source: dict[str, str], *, location: str) -> Any:
    """Create a version in the user's gallery with *source* as its source; the error."""
    create_definition(
        emulator,
        MINE,
        MY_GALLERY,
        MY_DEFINITION,
        location=location,
        identifier={"publisher": "me", "offer": "o", "sku": "s"},
    )
    client = compute(emulator)
    body: Any = {
        "location": location,
        "properties": {
            "publishingProfile": {"targetRegions": [{"name": location}]},
            "storageProfile": {"source": source},
        },
    }
    with pytest.raises(HttpResponseError) as info:
        client.gallery_image_versions.begin_create_or_update(
            MINE, MY_GALLERY, MY_DEFINITION, "1.0.0", body
        ).result()
    return info.value


def test_the_emulator_refuses_a_version_source_not_replicated_to_the_region(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 91)
    error = _version_from(
        emulator, {"id": f"{first['definitionId']}/versions/{first['version']}"}, location="eastus"
    )
    assert error.error.code == "InvalidParameter"
    assert "is not replicated to region 'eastus'" in error.error.message


def test_the_emulator_finds_a_community_source_only_once_shared(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    first = release(emulator, tmp_path, monkeypatch, capsys, 92)
    source = first["communityImageId"]
    # Sharing reset: the public name no longer resolves.
    client = compute(emulator)
    client.gallery_sharing_profile.begin_update(
        GROUP, "test_gallery", {"operationType": "Reset"}
    ).result()
    error = _version_from(emulator, {"communityGalleryImageId": source}, location="northeurope")
    assert error.error.code == "NotFound"


class _RangedVhdHandler(VhdHandler):
    """A server that says it serves byte ranges, over keep-alive connections."""

    protocol_version = "HTTP/1.1"

    def _headers(self, status: int, length: int, extra: dict[str, str]) -> None:
        super()._headers(status, length, {"Accept-Ranges": "bytes", **extra})

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.headers.get("Range", "").startswith("bytes=0-"):
            self.requests.append(f"If-Match {self.headers.get('If-Match')}")
        super().do_GET()


def _disk_bytes(emulator: Emulator) -> bytes:
    """The whole of the user's upload disk that holds a complete upload."""
    sdk = clients(emulator)
    (disk,) = [
        d
        for d in sdk.compute.disks.list_by_resource_group(MINE)
        if "nixos-azure-publish.upload" in (d.tags or {})
    ]
    grant = sdk.compute.disks.begin_grant_access(
        MINE, str(disk.name), {"access": "Read", "durationInSeconds": 600}
    ).result()
    try:
        return BlobClient.from_blob_url(str(grant.access_sas)).download_blob().readall()
    finally:
        sdk.compute.disks.begin_revoke_access(MINE, str(disk.name)).result()


def test_a_url_that_serves_ranges_is_read_in_parallel_ranged_gets(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.1
    image = make_image(tmp_path / "img", seed=93, size_mib=40, data_mib=9)
    size = image.stat().st_size
    data = sum(e.length for e in vhd.data_extents(image))
    target = my_target(tmp_path, cleanup={"deleteUploadDisk": False})
    with https_file(emulator, image, _RangedVhdHandler) as (url, seen):
        # A wrong --sha256 is caught over pieces that arrive in any order.
        code, _, err = run(
            emulator, monkeypatch, capsys, "import", url, "--config", str(target),
            "--sha256", "0" * 64,
        )  # fmt: skip
        assert code == ExitCode.INVALID_IMAGE, err
        del seen[:]
        digest = hashlib.sha256(image.read_bytes()).hexdigest()
        code, report, err = run(
            emulator, monkeypatch, capsys, "--json", "import", url, "--config", str(target),
            "--sha256", digest,
        )  # fmt: skip
    assert code == 0, err
    assert report["upload"]["bytesSent"] == data
    # No GET of the whole file: one ranged GET per 4 MiB piece, each bound to the ETag.
    gets = [r for r in seen if r.startswith("GET")]
    piece = 4 * 1024 * 1024
    wanted = [f"bytes={lo}-{min(size, lo + piece) - 1}" for lo in range(0, size, piece)]
    footer = f"bytes={size - 512}-{size - 1}"  # the probe's, then the last piece's
    assert sorted(r.split(" ", 2)[2] for r in gets) == sorted([*wanted, footer])
    assert 'If-Match "v1"' in seen
    assert _disk_bytes(emulator) == image.read_bytes()


class _FlakyRangedVhdHandler(_RangedVhdHandler):
    """Breaks off the first answer for the second piece halfway through its body."""

    broken: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        wanted = self.headers.get("Range", "")
        if wanted.startswith("bytes=4194304-") and not self.broken:
            self.broken.append(wanted)
            self.requests.append(f"GET {self.path} {wanted} (broken)")
            size = self.path_served.stat().st_size
            self._headers(206, 4 * 1024 * 1024, {"Content-Range": f"bytes {wanted[6:]}/{size}"})
            self.wfile.write(bytes(1024 * 1024))
            self.close_connection = True
            return
        super().do_GET()


def test_a_ranged_read_that_breaks_off_is_retried_alone(emulator, tmp_path, monkeypatch, capsys):
    emulator.settings.replication_seconds = 0.1
    image = make_image(tmp_path / "img", seed=94, size_mib=24, data_mib=6)
    target = my_target(tmp_path, cleanup={"deleteUploadDisk": False})
    monkeypatch.setattr(_FlakyRangedVhdHandler, "broken", [])
    with https_file(emulator, image, _FlakyRangedVhdHandler) as (url, seen):
        code, report, err = run(
            emulator, monkeypatch, capsys, "--json", "import", url, "--config", str(target)
        )
    assert code == 0, err
    assert report["upload"]["rangesRetried"] >= 1
    second = [r for r in seen if "bytes=4194304-" in r]
    assert len(second) == 2, seen
    assert second[0].endswith("(broken)")
    assert len([r for r in seen if "bytes=0-" in r]) == 1  # nothing else read again
    assert _disk_bytes(emulator) == image.read_bytes()


class _ChangingVhdHandler(_RangedVhdHandler):
    """The file is replaced (a new ETag) after the first pieces were read."""

    served: ClassVar[list[str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.headers.get("If-Match"):
            self.served.append(self.headers["Range"])
            if len(self.served) > 2:
                self.send_response(412)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        super().do_GET()


def test_a_url_whose_content_changes_midway_is_refused(emulator, tmp_path, monkeypatch, capsys):
    image = make_image(tmp_path / "img", seed=95, size_mib=24)
    target = my_target(tmp_path)
    monkeypatch.setattr(_ChangingVhdHandler, "served", [])
    with https_file(emulator, image, _ChangingVhdHandler) as (url, _):
        code, _, err = run(emulator, monkeypatch, capsys, "import", url, "--config", str(target))
    assert code == ExitCode.INVALID_IMAGE, err
    assert 'changed while it was read (its ETag is no longer "v1")' in err
    assert "SECRET" not in err
    # The upload disk stays unfinished (not marked complete): a rerun replaces it.
    (disk,) = compute(emulator).disks.list_by_resource_group(MINE)
    assert "nixos-azure-publish.upload" not in (disk.tags or {})


def test_a_blob_url_with_sha256_is_streamed_so_that_the_sum_is_checked(emulator, cli, tmp_path):
    emulator.settings.replication_seconds = 0.1
    _, url = released_blob(emulator)
    content = BlobClient.from_blob_url(url).download_blob().readall()
    target = my_target(tmp_path)
    before = len(emulator.requests)
    code, _, err = cli.on("import", target, url, "--sha256", "0" * 64, as_json=False)
    assert code == ExitCode.INVALID_IMAGE, err
    assert not [w for w in writes(emulator, before) if "/galleries/" in w]  # no version
    digest = hashlib.sha256(content).hexdigest()
    code, report, err = cli.on("import", target, url, "--sha256", digest)
    assert code == 0, err
    detail = {s["name"]: s["detail"] for s in report["steps"]}["probe source"]
    assert detail.endswith("(streamed to check --sha256)")
    # Streamed: the non-zero sectors went through this machine (the boot sector, the footer).
    assert report["upload"]["bytesSent"] == 1024

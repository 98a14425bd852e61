"""The publish report: JSON, Markdown and console renderings say what happened."""

from __future__ import annotations

import json

from nixos_azure_publish.report import (
    PublishReport,
    RegionRecord,
    StepRecord,
    UploadStats,
)


def published() -> PublishReport:
    report = PublishReport(
        target="nixos-example",
        status="published",
        version="2026.1125.214000",
        version_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d/versions/2026.1125.214000",
        definition_id="/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/galleries/g/images/d",
        gallery="g",
        store_path="/nix/store/abc-image",
        file_size=64 * 1024 * 1024 + 512,
        regions=[
            RegionRecord("westeurope", "Completed", 100, 1, "Standard_LRS"),
            RegionRecord("northeurope", "Completed", 100, 2, "Standard_LRS"),
        ],
        steps=[StepRecord("upload", "done", 1.5, "sent 1 of 2")],
        upload=UploadStats(
            file_size=64 * 1024 * 1024 + 512,
            data_bytes=4 * 1024 * 1024,
            bytes_sent=4 * 1024 * 1024,
            seconds=2.0,
            verified="ranges",
        ),
        seconds=12.5,
    )
    report.resource("disk", "nixos-example-abc", "created")
    report.resource("gallery", "g", "reused")
    return report


def test_json_is_camel_case_and_complete():
    data = json.loads(json.dumps(published().to_json()))
    assert data["status"] == "published"
    assert data["versionId"].endswith("/versions/2026.1125.214000")
    assert data["definitionId"].endswith("/images/d")
    assert data["upload"]["bytesSent"] == 4 * 1024 * 1024
    assert data["upload"]["dataBytes"] == 4 * 1024 * 1024
    assert data["upload"]["mibPerSecond"] == 2.0
    assert [r["region"] for r in data["regions"]] == ["westeurope", "northeurope"]
    assert data["steps"][0] == {
        "name": "upload",
        "status": "done",
        "seconds": 1.5,
        "detail": "sent 1 of 2",
    }
    assert {r["action"] for r in data["resources"]} == {"created", "reused"}
    assert data["headline"] == "published 2026.1125.214000 to g/d"


def test_markdown_has_regions_resources_and_steps():
    markdown = published().to_markdown()
    assert markdown.startswith("## NixOS image nixos-example: published 2026.1125.214000 to g/d")
    assert "| northeurope | Completed | 100% | 2 | Standard_LRS |" in markdown
    assert "| disk | `nixos-example-abc` | created |" in markdown
    assert "| upload | 4.0 MiB sent of 4.0 MiB data (64.0 MiB file)" in markdown
    assert "| upload | done | 1.50 | sent 1 of 2 |" in markdown


def test_already_published_headline_and_console():
    report = PublishReport(target="t", status="already-published", version="1.2.3", gallery="g")
    report.definition_id = "/x/images/d"
    assert report.headline == "already published as 1.2.3 in g/d; nothing to do"
    assert report.to_console().startswith("already published as 1.2.3 in g/d; nothing to do\n")


def test_secrets_never_reach_a_rendering():
    report = published()
    report.status = "failed"
    report.error = "PUT https://md-x.blob/abcd?sv=2020&sig=TOPSECRET failed"
    report.steps.append(StepRecord("grant", "failed", 0, "sas https://x?sig=TOPSECRET"))
    for text in (json.dumps(report.to_json()), report.to_markdown(), report.to_console()):
        assert "TOPSECRET" not in text
        assert "REDACTED" in text


def test_markdown_cells_escape_pipes():
    report = published()
    report.steps.append(StepRecord("odd", "done", 0, "a | b\nc"))
    assert "| odd | done | 0.00 | a \\| b c |" in report.to_markdown()


def test_dry_run_plan_lists_what_would_be_created():
    report = PublishReport(target="t", status="planned", dry_run=True, gallery="g", version="1.0.0")
    report.definition_id = "/x/images/d"
    report.resource("resource group", "rg", "exists")
    report.resource("image version", "1.0.0", "would-create", detail="westeurope x1")
    assert report.headline == "dry run: would publish 1.0.0 to g/d"
    console = report.to_console()
    assert "would-create  image version 1.0.0 (westeurope x1)" in console
    assert "exists        resource group rg" in console
    report.resource("image version", "1.0.0", "exists")
    assert report.headline == "dry run: already published as 1.0.0; nothing would change"

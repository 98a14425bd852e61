"""The GitHub Actions example, parsed as YAML: OIDC, pinned actions, Nix, the report."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.conftest import REPO

# A test dependency (the [test] extra); the Nix package's check phase does not have it yet.
yaml = pytest.importorskip("yaml")

WORKFLOW = REPO / "examples" / "github-actions" / "publish.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    data = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(data, dict)
    return data


def steps(workflow: dict[Any, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def test_it_may_ask_for_an_oidc_token_and_little_else(workflow):
    assert workflow["permissions"] == {"contents": "read", "id-token": "write"}


def test_every_action_is_pinned_by_a_full_commit(workflow):
    used = [step["uses"] for step in steps(workflow) if "uses" in step]
    assert used
    for action in used:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", action), action


def test_azure_login_is_oidc_without_secrets(workflow):
    (login,) = [s for s in steps(workflow) if s.get("uses", "").startswith("azure/login@")]
    assert set(login["with"]) == {"client-id", "tenant-id", "subscription-id"}
    assert "secrets." not in WORKFLOW.read_text()


def test_nix_is_installed_before_the_publish_runs(workflow):
    names = [s.get("uses", s.get("run", "")) for s in steps(workflow)]
    nix = next(i for i, n in enumerate(names) if n.startswith("cachix/install-nix-action@"))
    publish = next(i for i, n in enumerate(names) if "nix run .#publish" in n)
    login = next(i for i, n in enumerate(names) if n.startswith("azure/login@"))
    assert nix < publish
    assert login < publish


def test_it_publishes_with_json_and_the_markdown_report_in_the_summary(workflow):
    (run,) = [s["run"] for s in steps(workflow) if "nix run .#publish" in s.get("run", "")]
    assert "nix run .#publish -- --json" in run
    assert '--summary "$GITHUB_STEP_SUMMARY"' in run
    # A pipe must not hide the publish's exit code.
    assert 'exit "${PIPESTATUS[0]}"' in run

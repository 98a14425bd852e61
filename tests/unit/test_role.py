"""`role-definition`: a role `az role definition create` takes, with no wildcards."""

from __future__ import annotations

import json
from typing import Any

import pytest

from nixos_azure_publish.azure import role
from nixos_azure_publish.cli import main

SUB = "00000000-0000-4000-8000-000000000001"


def run(capsys, *args: str) -> tuple[int, dict[str, Any] | str]:
    code = main(["role-definition", *args])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else captured.err


def test_the_role_has_the_shape_az_expects(capsys, monkeypatch):
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    code, printed = run(capsys)
    assert code == 0
    assert isinstance(printed, dict)
    assert set(printed) == {
        "Name", "IsCustom", "Description", "Actions", "NotActions", "DataActions",
        "NotDataActions", "AssignableScopes",
    }  # fmt: skip
    assert printed["IsCustom"] is True
    assert printed["AssignableScopes"] == [f"/subscriptions/{SUB}"]
    assert printed["Actions"] == sorted(set(printed["Actions"]))


@pytest.mark.parametrize(
    ("flags", "smoke", "imports"),
    [((), False, False), (("--smoke-test",), True, False), (("--import",), False, True)],
)
def test_no_wildcards_and_only_what_the_flags_ask_for(capsys, flags, smoke, imports):
    code, printed = run(capsys, "--scope", f"/subscriptions/{SUB}", *flags)
    assert code == 0
    assert isinstance(printed, dict)
    actions = printed["Actions"]
    assert not [a for a in actions if "*" in a]
    assert ("Microsoft.Compute/virtualMachines/write" in actions) is smoke
    assert ("Microsoft.Network/virtualNetworks/subnets/join/action" in actions) is smoke
    community = "Microsoft.Compute/locations/communityGalleries/images/versions/read"
    assert (community in actions) is imports
    assert "Microsoft.Compute/galleries/images/versions/write" in actions


@pytest.mark.parametrize(
    "scope", ["/subscriptions/not-a-guid", "subscriptions/" + SUB, f"/subscriptions/{SUB}/x"]
)
def test_a_bad_scope_is_one_line(capsys, scope):
    code, err = run(capsys, "--scope", scope)
    assert code == 2
    assert isinstance(err, str)
    assert "is not an assignable scope" in err


def test_no_scope_says_how_to_give_one(capsys, monkeypatch):
    monkeypatch.delenv("AZURE_SUBSCRIPTION_ID", raising=False)
    code, err = run(capsys)
    assert code == 2
    assert "--scope" in str(err)


def test_the_scopes_a_role_may_have():
    for scope in (
        f"/subscriptions/{SUB}",
        f"/subscriptions/{SUB}/resourceGroups/nixos-images",
        "/providers/Microsoft.Management/managementGroups/images",
    ):
        assert role.check_scope(scope) == scope

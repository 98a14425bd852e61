"""The least-privilege role holds exactly the actions a publish uses, nothing else.

Publishes run against the emulator with every feature a role must allow:
community sharing, a managed image, retention deleting an older version, the
upload disk's cleanup, and (for the --smoke-test role) the smoke test's VM.
The actions come from the emulator's request log (it maps each route to its
RBAC action) plus Azure's linked access checks, derived from the request
bodies: a body that names another resource needs ``join/action`` on a
network resource and ``read`` on any other. `status` and `gc` run with the
publish role (gc deleting the managed image retention left). The --import role
is exactly what `import` of every kind of source, `status` and `gc` use.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from nixos_azure_publish.azure import role
from nixos_azure_publish.cli import main
from nixos_azure_publish.emulator.testing import clients
from tests.helpers.images import make_image
from tests.helpers.importing import community_image, https_file, my_target, release
from tests.helpers.publishing import publish, run
from tests.helpers.targets import COMMUNITY, write_target

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator

JOINED = frozenset(
    {
        "Microsoft.Network/virtualNetworks/subnets",
        "Microsoft.Network/networkInterfaces",
        "Microsoft.Network/publicIPAddresses",
        "Microsoft.Network/networkSecurityGroups",
    }
)
_ID = re.compile(r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/(.+)$", re.IGNORECASE)


def resource_type(resource_id: str) -> str | None:
    """``Microsoft.Network/virtualNetworks/subnets`` from a subnet's id."""
    match = _ID.match(resource_id)
    if match is None:
        return None
    parts = match.group(1).split("/")
    namespace, rest = parts[0], parts[1:]
    return "/".join([namespace, *rest[0::2]])


def referenced_ids(body: Any) -> list[str]:
    if isinstance(body, dict):
        found = [v for k, v in body.items() if k == "id" and isinstance(v, str)]
        return found + [i for v in body.values() for i in referenced_ids(v)]
    if isinstance(body, list):
        return [i for v in body for i in referenced_ids(v)]
    return []


def linked_actions(emulator: Emulator, *, since: int = 0) -> set[str]:
    traffic = emulator.app.traffic
    assert traffic is not None
    found = set()
    for exchange in traffic.exchanges[since:]:
        request = exchange["liveRequest"]
        if request["method"] not in {"PUT", "PATCH", "POST"}:
            continue
        for resource_id in referenced_ids(request.get("body")):
            kind = resource_type(resource_id)
            if kind is not None:
                found.add(f"{kind}/join/action" if kind in JOINED else f"{kind}/read")
    return found


def used_actions(emulator: Emulator) -> set[str]:
    return set(emulator.requests.actions()) | linked_actions(emulator)


def publish_twice(emulator, tmp_path, monkeypatch, capsys, *, smoke: bool, seeds) -> None:
    for seed in seeds:
        image = make_image(tmp_path / f"image-{seed}", seed=seed)
        target = write_target(
            tmp_path / f"target-{seed}",
            image,
            gallery={"name": "test_gallery", "community": COMMUNITY},
            # Kept on one run; on the other, made as the (Trusted Launch) version's source
            # and deleted with the upload disk.
            managedImage={"enable": seed % 2 == 0},
            retention={"keepVersions": 1},
            smokeTest={"enable": smoke, "timeoutSeconds": 60},
            version={"targetRegions": ["westeurope"]},
        )
        code, report = publish(emulator, monkeypatch, capsys, "--config", str(target))
        assert code == 0, report


def test_the_role_holds_exactly_the_actions_publish_and_smoke_test_use(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.2
    publish_twice(emulator, tmp_path, monkeypatch, capsys, smoke=False, seeds=(1, 2))
    assert any(r.action.endswith("versions/delete") for r in emulator.requests if r.action)
    # status and gc with the same target: the first version's managed image is left over.
    target = tmp_path / "target-2" / "target.json"
    for argv in (["status"], ["gc", "--older-than", "0"]):
        capsys.readouterr()
        assert main(["--json", *argv, "--config", str(target)]) == 0
    assert "Microsoft.Compute/images/delete" in emulator.requests.actions()
    assert used_actions(emulator) == set(role.actions())

    publish_twice(emulator, tmp_path, monkeypatch, capsys, smoke=True, seeds=(3, 4))
    # A smoke-test VM that Azure never creates: the cleanup deletes its NIC itself.
    faults = emulator.faults
    faults.match = "Microsoft.Compute/virtualMachines/write"
    faults.error_status, faults.retry_after, faults.error_next = 503, 0.05, 1000
    image = make_image(tmp_path / "image-5", seed=5)
    target = write_target(
        tmp_path / "target-5",
        image,
        gallery={"name": "test_gallery", "community": COMMUNITY},
        smokeTest={"enable": True, "timeoutSeconds": 60},
        version={"targetRegions": ["westeurope"]},
    )
    code, report = publish(emulator, monkeypatch, capsys, "--config", str(target))
    assert code != 0, report
    assert emulator.requests.matching(action="Microsoft.Network/networkInterfaces/delete")
    assert used_actions(emulator) == set(role.actions(smoke_test=True))


def test_the_printed_role_is_that_role(capsys):
    scope = "/subscriptions/00000000-0000-4000-8000-000000000001/resourceGroups/nixos-images"
    assert main(["role-definition", "--scope", scope, "--smoke-test"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["Actions"] == role.actions(smoke_test=True)
    assert printed["AssignableScopes"] == [scope]


def test_the_import_role_holds_exactly_the_actions_import_status_and_gc_use(
    emulator, tmp_path, monkeypatch, capsys
):
    emulator.settings.replication_seconds = 0.2
    first = release(emulator, tmp_path, monkeypatch, capsys, 6)
    sdk = clients(emulator)
    sdk.create_group("released", "northeurope")
    sdk.upload_disk("released", "nixos", location="northeurope")
    blob_url = str(
        sdk.compute.disks.begin_grant_access(
            "released", "nixos", {"access": "Read", "durationInSeconds": 3600}
        )
        .result()
        .access_sas
    )
    # Only what the user's commands send from here on counts.
    requests_before = len(emulator.requests)
    traffic = emulator.app.traffic
    assert traffic is not None
    exchanges_before = len(traffic.exchanges)
    # The user's target uses every feature an import can: community sharing, a managed
    # image kept (gc deletes the one whose version retention deleted), retention (each
    # import replaces the last).
    target = my_target(
        tmp_path,
        gallery={"name": "my_gallery", "community": COMMUNITY},
        managedImage={"enable": True},
        retention={"keepVersions": 1},
    )
    sources = [community_image(first), first["definitionId"], blob_url]
    with https_file(emulator, tmp_path / "p6" / "img" / "disk.vhd") as (url, _):
        commands = [["import", source] for source in [*sources, url]]
        for argv in [*commands, ["status"], ["gc", "--older-than", "0"]]:
            code, _, err = run(
                emulator, monkeypatch, capsys, "--json", *argv, "--config", str(target)
            )
            assert code == 0, err
    requests = list(emulator.requests)[requests_before:]
    used = {r.action for r in requests if r.action} | linked_actions(
        emulator, since=exchanges_before
    )
    # Nothing missing, nothing superfluous: import (of every kind of source) with a target
    # that uses every feature does all a publish does, plus reading community images.
    assert used == set(role.actions(import_=True))
    assert set(role.IMPORT) <= used

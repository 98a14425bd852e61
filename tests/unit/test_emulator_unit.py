"""Pure parts of the emulator: footer checks, routing, faults, the request log, the store."""

from __future__ import annotations

import pytest

from nixos_azure_publish.emulator.armerror import ArmError
from nixos_azure_publish.emulator.disks import footer_problem
from nixos_azure_publish.emulator.faults import Faults
from nixos_azure_publish.emulator.requestlog import RequestLog, RequestRecord
from nixos_azure_publish.emulator.router import Router, check_api_version
from nixos_azure_publish.emulator.store import Operation, Resource, Store
from nixos_azure_publish.emulator.testing import fixed_vhd_footer

MIB = 1024 * 1024


def test_footer_of_a_good_fixed_vhd_passes():
    assert footer_problem(fixed_vhd_footer(30 * MIB), 30 * MIB + 512) is None


@pytest.mark.parametrize(
    ("footer", "size", "needle"),
    [
        (fixed_vhd_footer(30 * MIB, cookie=b"cxsparse"), 30 * MIB + 512, "conectix"),
        (fixed_vhd_footer(30 * MIB, disk_type=4), 30 * MIB + 512, "fixed"),
        (fixed_vhd_footer(30 * MIB + 512), 30 * MIB + 1024, "whole number (in MBs)"),
        (fixed_vhd_footer(30 * MIB), 31 * MIB + 512, "does not match"),
    ],
)
def test_footer_problems(footer, size, needle):
    problem = footer_problem(footer, size)
    assert problem is not None
    assert needle in problem


def route_table() -> Router:
    router = Router()
    router.add(
        "GET",
        "/subscriptions/{subscriptionId}/providers/Microsoft.Compute/disks/{diskName}",
        lambda _req: None,  # type: ignore[arg-type,return-value]
        api_versions={"2026-03-02"},
        action="Microsoft.Compute/disks/read",
        operation_id="Disks_Get",
    )
    return router


def test_router_matches_case_insensitively_and_decodes():
    match = route_table().resolve("GET", "/SUBSCRIPTIONS/s/providers/microsoft.compute/DISKS/a%20b")
    assert match.params == {"subscriptionId": "s", "diskName": "a b"}
    assert match.route.operation_id == "Disks_Get"


def test_router_errors():
    with pytest.raises(ArmError) as info:
        route_table().resolve("PUT", "/subscriptions/s/providers/Microsoft.Compute/disks/d")
    assert info.value.status == 405
    with pytest.raises(ArmError) as info:
        route_table().resolve("GET", "/subscriptions/s/providers/Microsoft.Compute/nothing/d")
    assert info.value.code == "InvalidResourceType"


def test_api_version_checks():
    route = route_table().routes[0]
    check_api_version(route, "2026-03-02", "Microsoft.Compute/disks")
    with pytest.raises(ArmError) as info:
        check_api_version(route, None, "Microsoft.Compute/disks")
    assert info.value.code == "MissingApiVersionParameter"
    with pytest.raises(ArmError) as info:
        check_api_version(route, "2024-03-02", "Microsoft.Compute/disks")
    assert info.value.code == "NoRegisteredProviderFound"


def test_fault_counters_and_matching():
    faults = Faults(throttle_next=1, error_next=1, match="disks")
    assert faults.decide("Microsoft.Compute/galleries/read") is None
    assert faults.decide("Microsoft.Compute/disks/read") == "throttle"
    assert faults.decide("Microsoft.Compute/disks/read") == "error"
    assert faults.decide("Microsoft.Compute/disks/read") is None
    faults.drop_connections = True
    assert faults.decide(None) == "drop"
    faults.reset()
    assert faults.decide("Microsoft.Compute/disks/read") is None


def test_fault_rates_are_reproducible():
    first = Faults(throttle_rate=0.5, seed=3)
    second = Faults(throttle_rate=0.5, seed=3)
    runs = [[f.decide("a") for _ in range(20)] for f in (first, second)]
    assert runs[0] == runs[1]
    assert "throttle" in runs[0]
    assert None in runs[0]


def test_request_log_redacts_sas_signatures():
    log = RequestLog()
    log.record(
        RequestRecord(
            method="GET",
            path="/x?sv=2020&sig=c2VjcmV0&se=1",
            api_version=None,
            status=200,
            action="a/read",
            time=0.0,
        )
    )
    assert "c2VjcmV0" not in log[0].path
    assert log.actions() == ["a/read"]


def test_store_persists_resources_and_operations(tmp_path):
    store = Store(tmp_path)
    store.put(Resource(id="/subscriptions/s/resourceGroups/G", type="t", body={"properties": {}}))
    store.add_operation(
        Operation(
            id="op",
            namespace="Microsoft.Compute",
            location="westeurope",
            subscription="s",
            api_version="v",
            kind="k",
            resource_id="/subscriptions/s/resourceGroups/G",
            start=0.0,
            ready_at=0.0,
        )
    )
    store.save()
    again = Store(tmp_path)
    assert again.get("/SUBSCRIPTIONS/s/resourcegroups/g") is not None
    assert again.tick()
    (op,) = again.operations.values()
    assert op.status == "Succeeded"


def test_missing_azurite_is_a_clear_usage_error(monkeypatch, tmp_path, capsys):
    from nixos_azure_publish.cli import main  # noqa: PLC0415
    from nixos_azure_publish.emulator import azurite  # noqa: PLC0415

    monkeypatch.setattr("shutil.which", lambda _name: None)
    # Neither the working directory nor the package's own checkout has node_modules.
    monkeypatch.setattr(azurite, "__file__", str(tmp_path / "pkg" / "emulator" / "azurite.py"))
    monkeypatch.chdir(tmp_path)
    assert main(["emulator", "serve"]) == 2
    err = capsys.readouterr().err
    assert "Azurite (the Azure Storage emulator) is not installed" in err
    assert "npm install azurite@3" in err


def test_the_blob_fronts_crc64_is_azures_in_both_implementations():
    azure = pytest.importorskip("azure.storage.extensions.checksums")
    from nixos_azure_publish.emulator import blobfront  # noqa: PLC0415

    for data in (b"", b"a", b"123456789", bytes(range(256)) * 17):
        expected = azure.crc64.compute(data, 0)
        assert blobfront._crc64_python(data) == expected
        assert blobfront._crc64_value(data) == expected

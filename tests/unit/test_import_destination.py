"""What an import's destination takes from its source, and what it refuses."""

from __future__ import annotations

from typing import Any

import pytest

from nixos_azure_publish.azure.importsource import ResolvedSource, parse_source
from nixos_azure_publish.azure.replication import VersionState
from nixos_azure_publish.azure.status import resolve_latest
from nixos_azure_publish.errors import ConfigError
from nixos_azure_publish.pipeline.importing import destination_for
from tests.helpers.targets import minimal_target

SOURCE = parse_source("/CommunityGalleries/nixos-1/Images/nixos")


def target(**overrides: Any):
    return minimal_target(subscriptionId="00000000-0000-4000-8000-000000000001", **overrides)


def resolved(**overrides: Any) -> ResolvedSource:
    fields: dict[str, Any] = {
        "source": SOURCE,
        "version": "1.0.0",
        "version_ref": "/CommunityGalleries/nixos-1/Images/nixos/Versions/1.0.0",
        "hyper_v_generation": "V2",
        "architecture": "x64",
        "security_type": "TrustedLaunchSupported",
        "features": {},
    }
    fields.update(overrides)
    return ResolvedSource(**fields)


def test_the_security_type_and_features_come_from_the_source_when_the_target_is_silent():
    features = {
        "SecurityType": "Standard",
        "IsAcceleratedNetworkSupported": "True",
        "DiskControllerTypes": "SCSI, NVMe",
    }
    out = destination_for(target(), resolved(security_type="Standard", features=features))
    assert out.security_type == "Standard"
    assert out.image_definition is not None
    assert out.image_definition.accelerated_networking is True
    assert out.image_definition.disk_controller_types == ("SCSI", "NVMe")


@pytest.mark.parametrize(
    ("overrides", "source", "problem"),
    [
        ({"hyperVGeneration": "V1"}, {}, "hyperVGeneration: the target says V1, the source is V2"),
        ({"architecture": "Arm64"}, {}, "architecture: the target says Arm64, the source is x64"),
        (
            {
                "imageDefinition": {
                    "name": "d", "publisher": "p", "offer": "o", "sku": "s",
                    "securityType": "TrustedLaunch",
                }
            },
            {},
            "imageDefinition.securityType: the target says TrustedLaunch",
        ),
    ],
)  # fmt: skip
def test_a_contradiction_is_a_config_error_naming_the_field(overrides, source, problem):
    with pytest.raises(ConfigError) as info:
        destination_for(target(**overrides), resolved(**source))
    assert any(problem in p for p in info.value.problems)


def _state(name: str, *, excluded: bool = False, regions: dict[str, str] | None = None):
    return VersionState.from_json(
        {
            "name": name,
            "properties": {
                "provisioningState": "Succeeded",
                "publishingProfile": {"excludeFromLatest": excluded},
                "replicationStatus": {
                    "summary": [
                        {"region": r, "state": s, "progress": 100}
                        for r, s in (regions or {"westeurope": "Completed"}).items()
                    ]
                },
            },
        }
    )


def test_latest_is_the_highest_number_not_excluded_and_replicated_there():
    states = [
        _state("1.0.9"),
        _state("1.0.10", regions={"westeurope": "Completed", "eastus": "Replicating"}),
        _state("2.0.0", excluded=True),
    ]
    assert resolve_latest(states) == "1.0.10"  # by number, not by text
    assert resolve_latest(states, region="eastus") is None
    assert resolve_latest(states, region="westeurope") == "1.0.10"

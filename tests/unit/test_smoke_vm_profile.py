"""The smoke-test VM's security profile follows the definition's security type, as Azure needs."""

from __future__ import annotations

import dataclasses

import pytest

from nixos_azure_publish import config
from nixos_azure_publish.azure.vm import security_profile
from tests.helpers.targets import MINIMAL, minimal_target

pytestmark = pytest.mark.unit


def target(security=None, generation="V2", **smoke):
    definition = dict(MINIMAL["imageDefinition"])
    if security:
        definition["securityType"] = security
    return minimal_target(
        hyperVGeneration=generation,
        imageDefinition=definition,
        smokeTest={"enable": False, **smoke},
    )


@pytest.mark.parametrize(
    "security",
    [None, "TrustedLaunchSupported", "TrustedLaunch", "TrustedLaunchAndConfidentialVmSupported"],
)
def test_trusted_launch_types_boot_a_trusted_launch_vm_without_secure_boot(security):
    assert security_profile(target(security)) == {
        "securityType": "TrustedLaunch",
        "uefiSettings": {"secureBootEnabled": False, "vTpmEnabled": True},
    }


def test_secure_boot_is_on_only_when_asked():
    profile = security_profile(target(secureBoot=True))
    assert profile is not None
    assert profile["uefiSettings"]["secureBootEnabled"] is True


def test_standard_images_boot_a_vm_without_a_profile():
    assert security_profile(target("Standard")) is None
    assert security_profile(target(generation="V1")) is None


@pytest.mark.parametrize("security", ["ConfidentialVMSupported", "ConfidentialVM"])
def test_confidential_types_boot_a_confidential_vm(security):
    profile = security_profile(target(security))
    assert profile is not None
    assert profile["securityType"] == "ConfidentialVM"


def test_no_vm_security_type_is_a_definition_only_value():
    for security in sorted(config.TRUSTED_LAUNCH_TYPES | config.CONFIDENTIAL_TYPES | {"Standard"}):
        profile = security_profile(
            dataclasses.replace(target(), image_definition=target(security).image_definition)
        )
        assert profile is None or profile["securityType"] in {"TrustedLaunch", "ConfidentialVM"}

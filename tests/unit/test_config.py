"""Every validation rule of a publish target, each broken by a real config."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from nixos_azure_publish import config
from nixos_azure_publish.errors import ConfigError, ExitCode
from tests.helpers.targets import COMMUNITY

NOW = dt.datetime(2026, 6, 1, 12, 30, 45, tzinfo=dt.UTC)


def valid() -> dict[str, Any]:
    return {
        "name": "nixos-test",
        "resourceGroup": "rg-images",
        "location": "westeurope",
        "hyperVGeneration": "V2",
        "subscriptionId": "00000000-1111-2222-3333-444444444444",
        "nixos": {"release": "25.05", "label": "25.05.20250612.abc1234", "system": "x86_64-linux"},
        "tags": {"team": "images"},
        "gallery": {
            "name": "nixos_gallery",
            "community": dict(COMMUNITY),
        },
        "imageDefinition": {
            "name": "nixos-x64-gen2",
            "publisher": "NixOS",
            "offer": "NixOS",
            "sku": "25.05-gen2",
            "endOfLifeDate": "2030-01-01",
            "releaseNoteUri": "https://nixos.org/manual",
            "recommended": {"vCPUs": {"min": 1, "max": 16}, "memory": {"min": 1, "max": 64}},
            "diskControllerTypes": ["SCSI", "NVMe"],
        },
        "version": {
            "name": (
                "{{ nixos.release | replace('.', '') }}.{{ date.month }}.{{ timestamp % 1000 }}"
            ),
            "targetRegions": ["westeurope", {"name": "northeurope", "replicas": 2}],
            "endOfLifeDate": "2030-01-01T00:00:00Z",
        },
        "smokeTest": {"enable": True, "expect": "login:"},
        "retention": {"keepVersions": 3},
    }


def problems_of(data: object) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        config.load_target(data, now=NOW)
    return caught.value.problems


def with_change(path: str, value: object) -> dict[str, Any]:
    """A copy of the valid config with *path* (dotted, [i] for lists) set to *value*."""
    data = copy.deepcopy(valid())
    node: Any = data
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if value is DELETE:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


DELETE = object()


def test_valid_config_loads_with_defaults():
    target = config.load_target(valid(), now=NOW)
    assert target.name == "nixos-test"
    assert target.architecture == "x64"
    assert target.security_type == "TrustedLaunchSupported"
    assert [(r.name, r.replicas, r.storage_account_type) for r in target.regions] == [
        ("westeurope", 1, "Standard_LRS"),
        ("northeurope", 2, "Standard_LRS"),
    ]
    assert target.upload.verify == "ranges"
    assert target.cleanup.delete_upload_disk is True


# (change to the valid config, the field path the error must name, a word of the message)
BROKEN = [
    ("name", DELETE, "name: is required"),
    ("resourceGroup", DELETE, "resourceGroup: is required"),
    ("location", DELETE, "location: is required"),
    ("hyperVGeneration", DELETE, "hyperVGeneration: is required"),
    ("gallery.name", DELETE, "gallery.name: is required"),
    ("imageDefinition.sku", DELETE, "imageDefinition.sku: is required"),
    (
        "hyperVGeneration",
        "v2",
        "hyperVGeneration: must be one of 'V1', 'V2', not 'v2' (did you mean 'V2'?)",
    ),
    ("architecture", "arm64", "architecture: must be one of 'x64', 'Arm64'"),
    ("version.replicaCount", "3", "version.replicaCount: must be an integer, not a string"),
    ("tags.team", 5, "tags.team: must be a string"),
    ("upload.verify", "all", "upload.verify: must be one of 'none', 'ranges', 'full'"),
    ("cleanup.deleteUploadDisk", "yes", "cleanup.deleteUploadDisk: must be true or false"),
    ("version.targetRegions", "westeurope", "version.targetRegions: must be a list"),
    ("version.targetRegions[1]", 7, "version.targetRegions[1]: must be a string or an object"),
    ("gallery", "g", "gallery: must be an object"),
    # unknown keys, with a did-you-mean
    ("resourceGroupName", "x", "resourceGroupName: unknown key; did you mean 'resourceGroup'?"),
    (
        "version.targetRegion",
        [],
        "version.targetRegion: unknown key; did you mean 'targetRegions'?",
    ),
    ("imageDefinition.recommended.vCpus", {}, "did you mean 'vCPUs'?"),
    # naming rules
    ("name", "NixOS Test", "name: must be 1-40 lowercase letters"),
    ("resourceGroup", "rg/images", "resourceGroup: must be 1-90"),
    ("resourceGroup", "rg.", "resourceGroup: must be 1-90"),
    ("gallery.name", "nixos-gallery", "gallery.name: must be 1-80 letters, digits, '.' and '_'"),
    ("gallery.name", "_gallery", "gallery.name:"),
    ("imageDefinition.name", "-bad", "imageDefinition.name:"),
    ("imageDefinition.publisher", "Nix OS", "imageDefinition.publisher:"),
    ("managedImage.name", "image-", "managedImage.name:"),
    (
        "location",
        "West Europe",
        "location: must be an Azure region name like 'westeurope' (did you mean 'westeurope'?)",
    ),
    ("version.targetRegions[0]", "East US", "version.targetRegions[0]: must be an Azure region"),
    (
        "version.targetRegions[1].name",
        "north_europe",
        "version.targetRegions[1].name: must be an Azure region",
    ),
    ("smokeTest.location", "eu-west", "smokeTest.location: must be an Azure region"),
    ("subscriptionId", "my-subscription", "subscriptionId: must be a GUID"),
    ("tags.a/b", "x", "tags.a/b: tag names are"),
    ("tags.long", "x" * 257, "tags.long: tag values are at most 256 characters"),
    # community gallery
    (
        "gallery.community.publisherUri",
        "nixos.org",
        "gallery.community.publisherUri: must be an http(s) URI",
    ),
    (
        "gallery.community.publisherContact",
        "nobody",
        "gallery.community.publisherContact: must be an e-mail",
    ),
    ("gallery.community.publicNamePrefix", "nixos prefix!", "gallery.community.publicNamePrefix:"),
    ("gallery.community.eula", "  ", "gallery.community.eula: must not be empty"),
    ("gallery.community.eula", DELETE, "gallery.community.eula: is required"),
    # version name template
    (
        "version.name",
        "{{ nixos.release }}",
        "version.name: renders to '25.05'; it must be Major.Minor.Patch",
    ),
    ("version.name", "1.2.3-beta", "version.name: renders to '1.2.3-beta'"),
    (
        "version.name",
        "1.2.2147483648",
        "version.name: renders to '1.2.2147483648'; each part must be at most 2147483647",
    ),
    ("version.name", "{{ nixos.missing }}.1.1", "version.name: template error"),
    ("version.name", "{{ 1 + }}", "version.name: template error"),
    # a template that raises, or renders huge, is the template's error
    ("version.name", "{{ 1 / 0 }}.1.1", "version.name: template error: ZeroDivisionError"),
    ("version.name", "{{ '9' * 100000000 }}.1.1", "version.name: template error"),
    ("version.name", "{{ 9 ** 99999999 }}.1.1", "version.name: template error"),
    ("version.name", "{{ '9' * 5000 }}.1.1", "version.name: template error"),
    ("version.name", "{% for i in range(99) %}9999{% endfor %}.1.1", "renders to 400 characters"),
    # replica bounds
    ("version.replicaCount", 0, "version.replicaCount: must be 1..100, not 0"),
    ("version.replicaCount", 101, "version.replicaCount: must be 1..100, not 101"),
    (
        "version.targetRegions[1].replicas",
        0,
        "version.targetRegions[1].replicas: must be 1..100, not 0",
    ),
    ("version.targetRegions[1].replicas", 500, "version.targetRegions[1].replicas: must be 1..100"),
    ("version.targetRegions", [], "version.targetRegions: must name at least one region"),
    (
        "version.targetRegions",
        ["northeurope"],
        "version.targetRegions: must include the gallery's own region 'westeurope'",
    ),
    (
        "version.targetRegions",
        ["westeurope", "westeurope"],
        "version.targetRegions[1]: 'westeurope' is listed twice",
    ),
    ("version.replicationMode", "Shallow", "version.replicationMode: Shallow replication"),
    # dates
    ("version.endOfLifeDate", "next year", "version.endOfLifeDate: must be an ISO 8601 date"),
    ("version.endOfLifeDate", "2020-01-01", "version.endOfLifeDate: 2020-01-01 is in the past"),
    (
        "imageDefinition.endOfLifeDate",
        "2026-13-01",
        "imageDefinition.endOfLifeDate: must be an ISO 8601 date",
    ),
    # other bounds
    (
        "imageDefinition.recommended.vCPUs.min",
        0,
        "imageDefinition.recommended.vCPUs.min: must be 1..416",
    ),
    (
        "imageDefinition.recommended.memory",
        {"min": 8, "max": 4},
        "imageDefinition.recommended.memory: min (8) is greater than max (4)",
    ),
    (
        "imageDefinition.diskControllerTypes",
        ["NVMe"],
        "imageDefinition.diskControllerTypes: must include 'SCSI'",
    ),
    (
        "imageDefinition.diskControllerTypes",
        [],
        "imageDefinition.diskControllerTypes: must not be empty",
    ),
    (
        "imageDefinition.releaseNoteUri",
        "ftp://x",
        "imageDefinition.releaseNoteUri: must be an http(s) URI",
    ),
    ("upload.concurrency", 0, "upload.concurrency: must be 1..64, not 0"),
    ("upload.concurrency", 65, "upload.concurrency: must be 1..64"),
    ("smokeTest.timeoutSeconds", 5, "smokeTest.timeoutSeconds: must be 60..86400, not 5"),
    ("smokeTest.vmSize", "big", "smokeTest.vmSize: must be a VM size"),
    ("smokeTest.expect", "login:(", "smokeTest.expect: not a valid regular expression"),
    ("retention.keepVersions", 0, "retention.keepVersions: must be at least 1, not 0"),
    ("gallery", DELETE, "gallery: is required when imageDefinition is set"),
]


@pytest.mark.parametrize(
    ("path", "value", "expected"), BROKEN, ids=[f"{p}={v!r}"[:60] for p, v, _ in BROKEN]
)
def test_each_rule_names_its_field(path, value, expected):
    problems = problems_of(with_change(path, value))
    assert any(expected in p for p in problems), problems


def test_arm64_needs_generation_2():
    data = valid()
    data["architecture"] = "Arm64"
    data["hyperVGeneration"] = "V1"
    data["imageDefinition"]["securityType"] = "Standard"
    problems = problems_of(data)
    assert any(
        p.startswith("architecture: Arm64 images must be hyperVGeneration V2") for p in problems
    )


def test_trusted_launch_on_gen1_explicitly():
    data = valid()
    data["hyperVGeneration"] = "V1"
    data["imageDefinition"]["securityType"] = "TrustedLaunch"
    problems = problems_of(data)
    assert problems == [
        (
            "imageDefinition.securityType: TrustedLaunch needs hyperVGeneration V2 (UEFI), but"
            ' the image is V1; build a Gen2 image (virtualisation.azureImage.vmGeneration = "v2")'
            " or use 'Standard'"
        )
    ]


def test_gen1_defaults_to_standard_security():
    data = valid()
    data["hyperVGeneration"] = "V1"
    target = config.load_target(data, now=NOW)
    assert target.security_type == "Standard"
    assert config.effective(target)["imageDefinition"]["securityType"] == "Standard"


def test_smoke_test_needs_a_gallery():
    data = valid()
    del data["gallery"]
    del data["imageDefinition"]
    assert "smokeTest.enable: needs a gallery to boot a version from" in problems_of(data)


def test_every_problem_is_reported_not_just_the_first():
    data = valid()
    data["name"] = "Bad Name"
    data["location"] = "West Europe"
    data["version"]["replicaCount"] = 0
    data["upload"] = {"concurency": 4}
    problems = problems_of(data)
    # an unknown key does not hide the rules the rest of the file breaks
    assert problems[0] == "upload.concurency: unknown key; did you mean 'concurrency'?"
    assert [p.split(":")[0] for p in problems[1:]] == [
        "name",
        "location",
        "version.replicaCount",
    ]
    del data["upload"]
    problems = problems_of(data)
    assert len(problems) == 3
    assert [p.split(":")[0] for p in problems] == ["name", "location", "version.replicaCount"]


def test_a_nested_unknown_key_does_not_hide_the_rest():
    data = valid()
    data["smokeTest"]["vmsize"] = "Standard_B2s"
    data["version"]["replicaCount"] = 0
    problems = problems_of(data)
    assert problems == [
        "smokeTest.vmsize: unknown key; did you mean 'vmSize'?",
        "version.replicaCount: must be 1..100, not 0",
    ]


def test_a_value_that_cannot_be_parsed_still_stops_the_rules():
    # The rules need a whole target: with a field unparsed, only the parse problems show.
    data = valid()
    data["colour"] = "blue"
    data["version"]["replicaCount"] = "two"
    assert [p.split(":")[0] for p in problems_of(data)] == ["colour", "version.replicaCount"]


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (
            "location",
            "westeurop",
            "location: unknown region 'westeurop' (did you mean westeurope?)",
        ),
        (
            "version.targetRegions[1]",
            "northeuropa",
            "version.targetRegions[1]: unknown region 'northeuropa' (did you mean northeurope?)",
        ),
        (
            "smokeTest.location",
            "westeuropa",
            "smokeTest.location: unknown region 'westeuropa' (did you mean westeurope?)",
        ),
    ],
)
def test_a_misspelt_region_is_named_with_a_suggestion(path, value, expected):
    problems = problems_of(with_change(path, value))
    assert expected in problems, problems


def test_a_misspelt_location_is_not_also_missing_from_the_regions():
    data = with_change("location", "westeurop")
    problems = problems_of(data)
    assert problems == ["location: unknown region 'westeurop' (did you mean westeurope?)"]


@pytest.mark.parametrize("region", ["westus4", "eastus3", "marsnorth", "swedencentral"])
def test_a_region_newer_than_the_list_is_not_refused_offline(region):
    data = with_change("location", region)
    data["version"]["targetRegions"] = [region]
    assert config.load_target(data, now=NOW).location == region


@pytest.mark.parametrize("prefix", ["nixo", "nixos-images", "nixos_images", "a" * 17])
def test_community_public_name_prefix_follows_azure(prefix):
    problems = problems_of(with_change("gallery.community.publicNamePrefix", prefix))
    assert problems == [
        f"gallery.community.publicNamePrefix: must be 5-16 letters and digits, not {prefix!r}"
    ]


@pytest.mark.parametrize("prefix", ["nixos", "NixOS2025images", "a" * 16])
def test_community_public_name_prefix_accepted(prefix):
    data = with_change("gallery.community.publicNamePrefix", prefix)
    assert config.load_target(data, now=NOW).gallery is not None


def test_smoke_test_location_must_be_a_target_region():
    problems = problems_of(with_change("smokeTest.location", "eastus"))
    assert problems == [
        (
            "smokeTest.location: eastus is not one of the target regions (westeurope,"
            " northeurope); the test VM boots from a replica, so use one of them or add it to"
            " version.targetRegions"
        )
    ]
    data = with_change("smokeTest.location", "northeurope")
    assert config.load_target(data, now=NOW).smoke_test.location == "northeurope"
    data = with_change("smokeTest.enable", value=False)
    data["smokeTest"]["location"] = "eastus"
    assert config.load_target(data, now=NOW).smoke_test.location == "eastus"


def test_parse_problems_all_reported():
    data = valid()
    del data["name"]
    data["hyperVGeneration"] = "V3"
    data["version"]["targetRegions"][1]["replicas"] = "two"
    problems = problems_of(data)
    assert [p.split(":")[0] for p in problems] == [
        "name",
        "hyperVGeneration",
        "version.targetRegions[1].replicas",
    ]


def test_top_level_must_be_an_object():
    assert problems_of(["not", "an", "object"]) == ["must be an object, not a list"]


def test_subscription_from_environment_only_when_missing():
    data = valid()
    del data["subscriptionId"]
    env = {"AZURE_SUBSCRIPTION_ID": "99999999-1111-2222-3333-444444444444"}
    target = config.load_target(data, environ=env, now=NOW)
    assert target.subscription_id == env["AZURE_SUBSCRIPTION_ID"]
    target = config.load_target(valid(), environ=env, now=NOW)
    assert target.subscription_id == "00000000-1111-2222-3333-444444444444"


def test_subscription_from_environment_is_validated():
    data = valid()
    del data["subscriptionId"]
    with pytest.raises(ConfigError, match="subscriptionId: must be a GUID"):
        config.load_target(data, environ={"AZURE_SUBSCRIPTION_ID": "nope"}, now=NOW)


def test_image_override():
    target = config.load_target(valid(), image="/nix/store/x-image/disk.vhd", now=NOW)
    assert target.image == "/nix/store/x-image/disk.vhd"


def test_version_name_renders_from_context():
    target = config.load_target(valid(), now=NOW)
    assert (
        config.render_version_name(target, store_hash="a" * 32, now=NOW)
        == f"2505.6.{int(NOW.timestamp()) % 1000}"
    )


def test_default_version_name_is_date_and_time():
    data = valid()
    del data["version"]["name"]
    target = config.load_target(data, now=NOW)
    assert config.render_version_name(target, store_hash="x", now=NOW) == "2026.601.123045"


def test_version_template_cannot_escape_the_sandbox():
    data = with_change("version.name", "{{ date.__class__.__mro__ }}.1.1")
    assert any("version.name: template error" in p for p in problems_of(data))


def test_error_is_one_line_with_source_and_exit_code():
    data = with_change("version.replicaCount", 0)
    with pytest.raises(ConfigError) as caught:
        config.load_target(data, source="target.json", now=NOW)
    line = caught.value.one_line()
    assert "\n" not in line
    assert line.startswith("target.json: version.replicaCount: must be 1..100, not 0")
    assert line.endswith("Fix the configuration and run again")
    assert caught.value.exit_code == ExitCode.USAGE
    assert caught.value.details is None


def test_several_problems_are_counted_then_listed_one_per_line():
    data = with_change("version.replicaCount", 0)
    data["name"] = "Bad Name"
    with pytest.raises(ConfigError) as caught:
        config.load_target(data, source="target.json", now=NOW)
    assert caught.value.one_line() == "target.json: 2 problems. Fix each one below and run again"
    assert caught.value.details is not None
    assert caught.value.details.splitlines() == caught.value.problems
    assert len(caught.value.problems) == 2


def test_effective_config_round_trips():
    target = config.load_target(valid(), now=NOW)
    effective = config.effective(target)
    assert effective["upload"] == {"concurrency": 8, "verify": "ranges", "backend": "native"}
    assert effective["version"]["targetRegions"][1] == {
        "name": "northeurope",
        "replicas": 2,
        "storageAccountType": "Standard_LRS",
    }
    reloaded = config.load_target(json.loads(json.dumps(effective)), now=NOW)
    assert reloaded == config.load_target(effective, now=NOW)
    assert reloaded.regions == target.regions


def test_schema_describes_every_field():
    schema = config.json_schema()
    target = schema["$defs"]["PublishTarget"]
    assert set(target["required"]) == {"name", "resourceGroup", "location", "hyperVGeneration"}
    assert target["additionalProperties"] is False
    assert target["properties"]["hyperVGeneration"]["enum"] == ["V1", "V2"]
    assert target["properties"]["architecture"]["default"] == "x64"
    assert schema["$defs"]["UploadSettings"]["properties"]["concurrency"]["default"] == 8
    recommended = schema["$defs"]["Recommended"]["properties"]
    assert "vCPUs" in recommended
    regions = schema["$defs"]["VersionSettings"]["properties"]["targetRegions"]
    assert {"$ref": "#/$defs/TargetRegion"} in regions["anyOf"][0]["items"]["anyOf"]
    # every dataclass field of every section appears in the schema
    for name, entry in schema["$defs"].items():
        assert entry["properties"], name


def test_config_files_json_and_toml(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps(valid()))
    assert config.load_target_file(tmp_path / "t.json").name == "nixos-test"
    (tmp_path / "t.toml").write_text(
        'name = "nixos-test"\nresourceGroup = "rg"\nlocation = "westeurope"\n'
        'hyperVGeneration = "V1"\n[version]\nreplicaCount = 2\n'
    )
    target = config.load_target_file(tmp_path / "t.toml")
    assert target.version.replica_count == 2


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bad.json", '{"name": ', "t/bad.json: line 1 column 10: invalid JSON"),
        ("bad.toml", "name = ", "t/bad.toml: invalid TOML"),
        ("missing.json", None, "config file t/missing.json does not exist"),
    ],
)
def test_unreadable_config_files(tmp_path, monkeypatch, name, content, expected):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t").mkdir()
    if content is not None:
        (tmp_path / "t" / name).write_text(content)
    with pytest.raises(ConfigError) as caught:
        config.load_target_file(Path("t") / name)
    assert expected in caught.value.one_line()


def test_a_config_from_an_endless_device_is_refused_after_a_mebibyte():
    with pytest.raises(ConfigError, match="larger than 1024 KiB"):
        config.load_target_file(Path("/dev/zero"))


def test_a_directory_as_config_says_so(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        config.load_target_file(tmp_path)


@pytest.mark.parametrize("security", sorted(config.GEN2_ONLY_SECURITY))
def test_gen2_only_security_types_refused_on_gen1(security):
    data = with_change("imageDefinition.securityType", security)
    data["hyperVGeneration"] = "V1"
    problems = problems_of(data)
    assert any(p.startswith(f"imageDefinition.securityType: {security} needs") for p in problems)


@pytest.mark.parametrize(
    ("generation", "architecture", "size", "expected"),
    [
        ("V2", "x64", "Standard_A2_v2", "boots Hyper-V generation 1 images only"),
        ("V2", "Arm64", "Standard_B2s", "an Arm64 image needs an Arm64 size"),
        ("V2", "x64", "Standard_D2ps_v5", "an x64 image needs an x64 size"),
    ],
)
def test_a_smoke_test_size_that_cannot_boot_the_image_is_refused(
    generation, architecture, size, expected
):
    data = valid()
    data["hyperVGeneration"] = generation
    data["architecture"] = architecture
    data["smokeTest"]["vmSize"] = size
    assert any(p.startswith("smokeTest.vmSize:") and expected in p for p in problems_of(data))


@pytest.mark.parametrize(
    ("generation", "architecture", "size"),
    [
        ("V1", "x64", "Standard_A2_v2"),
        ("V2", "Arm64", "Standard_D2ps_v5"),
        ("V2", "x64", "Standard_D2s_v5"),
    ],
)
def test_a_smoke_test_size_that_boots_the_image_is_accepted(generation, architecture, size):
    data = valid()
    data["hyperVGeneration"] = generation
    data["architecture"] = architecture
    data["smokeTest"]["vmSize"] = size
    if generation == "V1":
        data["imageDefinition"]["diskControllerTypes"] = ["SCSI"]
    config.load_target(data, now=NOW)


@pytest.mark.parametrize("security", ["ConfidentialVMSupported", "ConfidentialVM"])
def test_a_confidential_image_needs_what_a_confidential_vm_needs(security):
    data = valid()
    data["imageDefinition"]["securityType"] = security
    problems = problems_of(data)
    assert any("Standard_B2s is not a confidential size" in p for p in problems)
    assert any(p.startswith("smokeTest.securityEncryptionType:") for p in problems)
    data["smokeTest"] |= {
        "vmSize": "Standard_DC2as_v5",
        "securityEncryptionType": "VMGuestStateOnly",
    }
    config.load_target(data, now=NOW)
    # Without a smoke test nothing is needed.
    data["smokeTest"] = {"enable": False}
    config.load_target(data, now=NOW)

"""The publish target: typed, frozen configuration and every rule it must satisfy.

A target comes from a JSON or TOML file (``--config``) or from the flake
attribute ``azurePublish.<name>`` (``nix eval --json``). Keys are camelCase, as
Nix writes them. :func:`load_target` collects *every* problem, each with its
field path, before anything touches Azure.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import tomllib
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

import jinja2
import jinja2.sandbox

from nixos_azure_publish import regions, typedload
from nixos_azure_publish.azure import vmsize
from nixos_azure_publish.errors import ConfigError
from nixos_azure_publish.upload import Backend, Verify, limits

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

HyperVGeneration = Literal["V1", "V2"]
Architecture = Literal["x64", "Arm64"]
SecurityType = Literal[
    "Standard",
    "TrustedLaunchSupported",
    "TrustedLaunch",
    "TrustedLaunchAndConfidentialVmSupported",
    "ConfidentialVMSupported",
    "ConfidentialVM",
]
DiskSku = Literal[
    "Standard_LRS",
    "StandardSSD_LRS",
    "Premium_LRS",
    "StandardSSD_ZRS",
    "Premium_ZRS",
]
ReplicaStorage = Literal["Standard_LRS", "Standard_ZRS", "Premium_LRS"]
DiskController = Literal["SCSI", "NVMe"]

GEN2_ONLY_SECURITY: Final = frozenset(get_args(SecurityType)) - {"Standard"}
"""Security types that only exist on UEFI (Hyper-V generation 2) images: all but Standard.
The emulator keeps its own copy of this rule, on purpose (it is an independent oracle)."""
# Definitions whose smoke-test VM is a Trusted Launch VM, and those that need a confidential VM.
TRUSTED_LAUNCH_TYPES: Final = frozenset(
    {"TrustedLaunchSupported", "TrustedLaunch", "TrustedLaunchAndConfidentialVmSupported"}
)
CONFIDENTIAL_TYPES: Final = frozenset({"ConfidentialVMSupported", "ConfidentialVM"})
EncryptionType = Literal["VMGuestStateOnly", "DiskWithVMGuestState", "NonPersistedTPM"]
INT32_MAX: Final = 2**31 - 1
MAX_REPLICAS: Final = 100
# We add our own tags (store path, release, tool version, ...); Azure allows 50 per resource.
MAX_USER_TAGS: Final = 40
DEFAULT_VERSION_TEMPLATE: Final = (
    "{{ date.year }}.{{ date.month * 100 + date.day }}"
    ".{{ date.hour * 10000 + date.minute * 100 + date.second }}"
)


def _doc(text: str, key: str | None = None) -> dict[str, str]:
    return {"doc": text, "key": key} if key else {"doc": text}


@dataclass(frozen=True)
class NixosInfo:
    """Provenance of the image: which NixOS it is."""

    release: str | None = field(default=None, metadata=_doc("NixOS release, e.g. 25.05"))
    label: str | None = field(
        default=None, metadata=_doc("NixOS label, e.g. azure-25.05.20250612.abc1234")
    )
    system: str | None = field(default=None, metadata=_doc("Nix system, e.g. x86_64-linux"))


@dataclass(frozen=True)
class DiskSettings:
    """The upload disk."""

    sku: DiskSku = field(default="Standard_LRS", metadata=_doc("Storage SKU of the upload disk"))


@dataclass(frozen=True)
class ManagedImageSettings:
    """An optional managed image made from the upload disk."""

    enable: bool = field(default=False, metadata=_doc("Also create a managed image"))
    name: str | None = field(default=None, metadata=_doc("Its name; default from target + hash"))


@dataclass(frozen=True)
class CommunitySettings:
    """Community sharing: makes the gallery's images public without the Marketplace."""

    public_name_prefix: str = field(metadata=_doc("Prefix of the gallery's public name"))
    publisher_uri: str = field(metadata=_doc("The publisher's web site (https)"))
    publisher_contact: str = field(metadata=_doc("The publisher's contact e-mail"))
    eula: str = field(metadata=_doc("End-user licence agreement, as a URI or text"))


@dataclass(frozen=True)
class GallerySettings:
    """The Azure Compute Gallery."""

    name: str = field(metadata=_doc("Gallery name: letters, digits, '.', '_'"))
    description: str | None = field(default=None, metadata=_doc("Gallery description"))
    community: CommunitySettings | None = field(
        default=None, metadata=_doc("Share the gallery with the community (public)")
    )


@dataclass(frozen=True)
class Range:
    """A minimum and a maximum."""

    min: int | None = field(default=None, metadata=_doc("Minimum"))
    max: int | None = field(default=None, metadata=_doc("Maximum"))


@dataclass(frozen=True)
class Recommended:
    """Recommended VM sizes for the image."""

    v_cpus: Range | None = field(default=None, metadata=_doc("vCPU count", key="vCPUs"))
    memory: Range | None = field(default=None, metadata=_doc("Memory in GB"))


@dataclass(frozen=True)
class ImageDefinitionSettings:
    """The gallery image definition (a product line of versions)."""

    name: str = field(metadata=_doc("Definition name"))
    publisher: str = field(metadata=_doc("Identifier: publisher"))
    offer: str = field(metadata=_doc("Identifier: offer"))
    sku: str = field(metadata=_doc("Identifier: SKU"))
    security_type: SecurityType | None = field(
        default=None,
        metadata=_doc("Default: TrustedLaunchSupported for V2, Standard for V1"),
    )
    accelerated_networking: bool = field(
        default=False, metadata=_doc("The image supports accelerated networking")
    )
    disk_controller_types: tuple[DiskController, ...] | None = field(
        default=None, metadata=_doc("Supported disk controllers, e.g. [SCSI, NVMe]")
    )
    description: str | None = field(default=None, metadata=_doc("Description"))
    eula: str | None = field(default=None, metadata=_doc("End-user licence agreement"))
    release_note_uri: str | None = field(default=None, metadata=_doc("Release notes URI"))
    privacy_statement_uri: str | None = field(default=None, metadata=_doc("Privacy statement URI"))
    end_of_life_date: str | None = field(default=None, metadata=_doc("ISO 8601 date"))
    recommended: Recommended | None = field(default=None, metadata=_doc("Recommended VM sizes"))


@dataclass(frozen=True)
class TargetRegion:
    """One region a version is replicated to."""

    name: str = field(metadata=_doc("Region name, e.g. westeurope"))
    replicas: int | None = field(default=None, metadata=_doc("Replicas here (1..100)"))
    storage_account_type: ReplicaStorage | None = field(
        default=None, metadata=_doc("Replica storage SKU here")
    )


@dataclass(frozen=True)
class VersionSettings:
    """The gallery image version to create."""

    name: str = field(
        default=DEFAULT_VERSION_TEMPLATE,
        metadata=_doc(
            "jinja2 template rendering to Major.Minor.Patch; context: nixos, store_hash,"
            " date (UTC datetime), timestamp, name"
        ),
    )
    target_regions: tuple[str | TargetRegion, ...] | None = field(
        default=None, metadata=_doc("Regions to replicate to; default: the target's location")
    )
    replica_count: int = field(default=1, metadata=_doc("Default replicas per region (1..100)"))
    storage_account_type: ReplicaStorage = field(
        default="Standard_LRS", metadata=_doc("Default replica storage SKU")
    )
    exclude_from_latest: bool = field(
        default=False, metadata=_doc("Keep this version out of 'latest'")
    )
    end_of_life_date: str | None = field(default=None, metadata=_doc("ISO 8601 date"))
    replication_mode: Literal["Full", "Shallow"] = field(
        default="Full", metadata=_doc("Shallow is for tests: fast, not for production")
    )


@dataclass(frozen=True)
class UploadSettings:
    """How the image is written into the disk."""

    concurrency: int = field(
        default=limits.DEFAULT_CONCURRENCY,
        metadata=_doc(
            f"Parallel Put Page requests ({limits.MIN_CONCURRENCY}..{limits.MAX_CONCURRENCY})"
        ),
    )
    verify: Verify = field(
        default="ranges", metadata=_doc("After upload: compare page ranges, or read back all")
    )
    backend: Backend = field(default="native", metadata=_doc("Uploader"))


@dataclass(frozen=True)
class SmokeTestSettings:
    """Boot a VM from the new version and read its serial console."""

    enable: bool = field(default=False, metadata=_doc("Run the smoke test"))
    vm_size: str = field(default="Standard_B2s", metadata=_doc("VM size of the test VM"))
    location: str | None = field(default=None, metadata=_doc("Region; default the location"))
    timeout_seconds: int = field(default=900, metadata=_doc("Give up after (60..86400)"))
    expect: str = field(
        default=r"login:", metadata=_doc("Regular expression the serial log must match")
    )
    secure_boot: bool = field(
        default=False,
        metadata=_doc("Secure Boot on the test VM (only for images with a signed boot loader)"),
    )
    security_encryption_type: EncryptionType | None = field(
        default=None,
        metadata=_doc("OS disk encryption of a confidential test VM (ConfidentialVM images)"),
    )


@dataclass(frozen=True)
class CleanupSettings:
    """What to delete after publishing."""

    delete_upload_disk: bool = field(
        default=True, metadata=_doc("Delete the upload disk once the version no longer needs it")
    )


@dataclass(frozen=True)
class RetentionSettings:
    """Garbage collection of old versions."""

    keep_versions: int | None = field(default=None, metadata=_doc("Keep the newest N versions"))
    delete_after_end_of_life: bool = field(
        default=False, metadata=_doc("Delete versions past their end-of-life date")
    )


@dataclass(frozen=True)
class PublishTarget:
    """One publish target: an image and where in Azure it goes."""

    name: str = field(metadata=_doc("Target name; names the upload disk and managed image"))
    resource_group: str = field(metadata=_doc("Resource group (created when missing)"))
    location: str = field(metadata=_doc("Region of the group, disk and gallery"))
    hyper_v_generation: HyperVGeneration = field(
        metadata=_doc("V1 (BIOS) or V2 (UEFI)", key="hyperVGeneration")
    )
    image: str | None = field(default=None, metadata=_doc("Store path or file of the VHD"))
    subscription_id: str | None = field(
        default=None, metadata=_doc("Subscription; default $AZURE_SUBSCRIPTION_ID")
    )
    architecture: Architecture = field(default="x64", metadata=_doc("CPU architecture"))
    nixos: NixosInfo = field(default_factory=NixosInfo, metadata=_doc("Provenance"))
    tags: dict[str, str] = field(default_factory=dict, metadata=_doc("Tags on every resource"))
    disk: DiskSettings = field(default_factory=DiskSettings, metadata=_doc("Upload disk"))
    managed_image: ManagedImageSettings = field(
        default_factory=ManagedImageSettings, metadata=_doc("Optional managed image")
    )
    gallery: GallerySettings | None = field(default=None, metadata=_doc("Compute Gallery"))
    image_definition: ImageDefinitionSettings | None = field(
        default=None, metadata=_doc("Gallery image definition")
    )
    version: VersionSettings = field(default_factory=VersionSettings, metadata=_doc("Version"))
    upload: UploadSettings = field(default_factory=UploadSettings, metadata=_doc("Upload"))
    smoke_test: SmokeTestSettings = field(
        default_factory=SmokeTestSettings, metadata=_doc("Smoke test")
    )
    cleanup: CleanupSettings = field(default_factory=CleanupSettings, metadata=_doc("Cleanup"))
    retention: RetentionSettings = field(
        default_factory=RetentionSettings, metadata=_doc("Retention")
    )

    @property
    def security_type(self) -> SecurityType:
        """The definition's security type, defaulted from the generation."""
        if self.image_definition and self.image_definition.security_type:
            return self.image_definition.security_type
        return "TrustedLaunchSupported" if self.hyper_v_generation == "V2" else "Standard"

    @property
    def regions(self) -> tuple[TargetRegion, ...]:
        """Target regions with per-region defaults filled in."""
        raw = self.version.target_regions or (self.location,)
        out = []
        for entry in raw:
            region = TargetRegion(name=entry) if isinstance(entry, str) else entry
            out.append(
                replace(
                    region,
                    replicas=region.replicas or self.version.replica_count,
                    storage_account_type=region.storage_account_type
                    or self.version.storage_account_type,
                )
            )
        return tuple(out)


# --- naming rules -------------------------------------------------------------------------
# Sources: Azure's resource naming rules for Microsoft.Resources and Microsoft.Compute.
_RESOURCE_GROUP = re.compile(r"^[-\w._()]{1,90}$")
_GALLERY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._]{0,78}[A-Za-z0-9])?$")
_DEFINITION = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9])?$")
_COMPUTE_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,78}[A-Za-z0-9_])?$")
_TARGET_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
_IDENTIFIER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9_])?$")
_SUBSCRIPTION = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_VERSION_NAME = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
_VM_SIZE = re.compile(r"^[A-Za-z]+_[A-Za-z0-9_]+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TAG_NAME_FORBIDDEN = re.compile(r"[<>%&\\?/]")


def _parse_date(value: str) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _check_uri(problems: list[str], path: str, value: str | None) -> None:
    if value is not None and not re.match(r"^https?://[^\s/]+", value):
        problems.append(f"{path}: must be an http(s) URI, not {value!r}")


def region_fields(target: PublishTarget) -> list[tuple[str, str]]:
    """Every region the target names, with the field path it is named at."""
    fields = [("location", target.location)]
    for i, entry in enumerate(target.version.target_regions or ()):
        if isinstance(entry, str):
            fields.append((f"version.targetRegions[{i}]", entry))
        else:
            fields.append((f"version.targetRegions[{i}].name", entry.name))
    if target.smoke_test.location is not None:
        fields.append(("smokeTest.location", target.smoke_test.location))
    return fields


def version_context(target: PublishTarget, *, store_hash: str, now: dt.datetime) -> dict[str, Any]:
    """The jinja2 context a version name template is rendered with."""
    return {
        "nixos": typedload.dump(target.nixos),
        "store_hash": store_hash,
        "date": now,
        "timestamp": int(now.timestamp()),
        "name": target.name,
    }


def render_version_name(target: PublishTarget, *, store_hash: str, now: dt.datetime) -> str:
    """Render ``version.name``; raise :class:`ConfigError` unless it is ``Major.Minor.Patch``."""
    problem, name = _render_version(target, store_hash=store_hash, now=now)
    if problem:
        raise ConfigError([problem])
    return name


def _render_version(
    target: PublishTarget, *, store_hash: str, now: dt.datetime
) -> tuple[str | None, str]:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined)
    try:
        rendered = env.from_string(target.version.name).render(
            version_context(target, store_hash=store_hash, now=now)
        )
    except jinja2.TemplateError as error:
        return f"version.name: template error: {error}", ""
    rendered = rendered.strip()
    match = _VERSION_NAME.match(rendered)
    if not match:
        return (
            (
                f"version.name: renders to {rendered!r}; it must be Major.Minor.Patch,"
                " three integers such as 2025.612.1"
            ),
            rendered,
        )
    if any(int(part) > INT32_MAX for part in match.groups()):
        return (
            f"version.name: renders to {rendered!r}; each part must be at most {INT32_MAX}",
            rendered,
        )
    return None, rendered


def _check_names(t: PublishTarget, problems: list[str]) -> None:
    if not _TARGET_NAME.match(t.name):
        problems.append(
            f"name: must be 1-40 lowercase letters, digits and '-' (it names Azure disks),"
            f" not {t.name!r}"
        )
    if not _RESOURCE_GROUP.match(t.resource_group) or t.resource_group.endswith("."):
        problems.append(
            "resourceGroup: must be 1-90 letters, digits, '-', '_', '.', '(' or ')'"
            f" and not end with '.', not {t.resource_group!r}"
        )
    if problem := regions.problem(t.location):
        problems.append(f"location: {problem}")
    if t.subscription_id is not None and not _SUBSCRIPTION.match(t.subscription_id):
        problems.append(f"subscriptionId: must be a GUID, not {t.subscription_id!r}")
    if len(t.tags) > MAX_USER_TAGS:
        problems.append(f"tags: at most {MAX_USER_TAGS} tags (Azure allows 50 per resource)")
    for tag, value in t.tags.items():
        if not tag or len(tag) > 512 or _TAG_NAME_FORBIDDEN.search(tag):  # noqa: PLR2004
            problems.append(f"tags.{tag}: tag names are 1-512 characters without < > % & \\ ? /")
        if len(value) > 256:  # noqa: PLR2004
            problems.append(f"tags.{tag}: tag values are at most 256 characters")
    if t.managed_image.name is not None and not _COMPUTE_NAME.match(t.managed_image.name):
        problems.append(
            "managedImage.name: must be 1-80 letters, digits, '.', '-', '_', start with a letter"
            f" or digit, end with a letter, digit or '_', not {t.managed_image.name!r}"
        )


def _check_gallery(t: PublishTarget, problems: list[str]) -> None:
    g = t.gallery
    if g is None:
        return
    if not _GALLERY.match(g.name):
        problems.append(
            "gallery.name: must be 1-80 letters, digits, '.' and '_', starting and ending"
            f" with a letter or digit (no '-'), not {g.name!r}"
        )
    if g.community is not None:
        c = g.community
        # Azure's rule, as Terraform's azurerm provider encodes it
        # (validate.SharedImageGalleryPrefix): 5 to 16 letters and digits.
        if not re.match(r"^[A-Za-z0-9]{5,16}$", c.public_name_prefix):
            problems.append(
                "gallery.community.publicNamePrefix: must be 5-16 letters and digits,"
                f" not {c.public_name_prefix!r}"
            )
        _check_uri(problems, "gallery.community.publisherUri", c.publisher_uri)
        if not _EMAIL.match(c.publisher_contact):
            problems.append(
                "gallery.community.publisherContact: must be an e-mail address,"
                f" not {c.publisher_contact!r}"
            )
        if not c.eula.strip():
            problems.append("gallery.community.eula: must not be empty")


def _check_definition(t: PublishTarget, problems: list[str], now: dt.datetime) -> None:
    d = t.image_definition
    if d is None:
        return
    if not _DEFINITION.match(d.name):
        problems.append(
            "imageDefinition.name: must be 1-80 letters, digits, '.', '-', '_', starting and"
            f" ending with a letter or digit, not {d.name!r}"
        )
    _check_identifier(d, problems)
    _check_definition_security(t, problems)
    for key, uri in (
        ("releaseNoteUri", d.release_note_uri),
        ("privacyStatementUri", d.privacy_statement_uri),
    ):
        _check_uri(problems, f"imageDefinition.{key}", uri)
    if d.disk_controller_types is not None:
        if not d.disk_controller_types:
            problems.append("imageDefinition.diskControllerTypes: must not be empty")
        elif "SCSI" not in d.disk_controller_types:
            problems.append("imageDefinition.diskControllerTypes: must include 'SCSI'")
    _check_date(problems, "imageDefinition.endOfLifeDate", d.end_of_life_date, now)
    if d.recommended:
        _check_range(problems, "imageDefinition.recommended.vCPUs", d.recommended.v_cpus, 416)
        _check_range(problems, "imageDefinition.recommended.memory", d.recommended.memory, 12000)


def _check_identifier(d: ImageDefinitionSettings, problems: list[str]) -> None:
    for part in ("publisher", "offer", "sku"):
        value = getattr(d, part)
        if not _IDENTIFIER.match(value):
            problems.append(
                f"imageDefinition.{part}: must be 1-128 letters, digits, '.', '-', '_', not"
                f" {value!r}"
            )


def _check_definition_security(t: PublishTarget, problems: list[str]) -> None:
    d = t.image_definition
    if d is not None and d.security_type in GEN2_ONLY_SECURITY and t.hyper_v_generation != "V2":
        problems.append(
            f"imageDefinition.securityType: {d.security_type} needs hyperVGeneration V2"
            f" (UEFI), but the image is {t.hyper_v_generation}; build a Gen2 image"
            " (virtualisation.azureImage.vmGeneration = \"v2\") or use 'Standard'"
        )


def _check_range(problems: list[str], path: str, rng: Range | None, upper: int) -> None:
    if rng is None:
        return
    for bound in ("min", "max"):
        value = getattr(rng, bound)
        if value is not None and not 1 <= value <= upper:
            problems.append(f"{path}.{bound}: must be 1..{upper}, not {value}")
    if rng.min is not None and rng.max is not None and rng.min > rng.max:
        problems.append(f"{path}: min ({rng.min}) is greater than max ({rng.max})")


def _check_date(problems: list[str], path: str, value: str | None, now: dt.datetime) -> None:
    if value is None:
        return
    parsed = _parse_date(value)
    if parsed is None:
        problems.append(f"{path}: must be an ISO 8601 date such as 2026-12-31, not {value!r}")
    elif parsed <= now:
        problems.append(f"{path}: {value} is in the past; use a future date or leave it out")


def _check_version(t: PublishTarget, problems: list[str], now: dt.datetime) -> None:
    v = t.version
    problem, _ = _render_version(t, store_hash="0" * 32, now=now)
    if problem:
        problems.append(problem)
    if not 1 <= v.replica_count <= MAX_REPLICAS:
        problems.append(f"version.replicaCount: must be 1..{MAX_REPLICAS}, not {v.replica_count}")
    _check_date(problems, "version.endOfLifeDate", v.end_of_life_date, now)
    _check_regions(t, problems)
    if v.replication_mode == "Shallow" and len(t.regions) > 1:
        problems.append(
            "version.replicationMode: Shallow replication keeps one copy in the source region;"
            " it cannot replicate to other regions"
        )


def _check_regions(t: PublishTarget, problems: list[str]) -> None:
    v = t.version
    if v.target_regions is not None:
        if not v.target_regions:
            problems.append("version.targetRegions: must name at least one region")
        seen: set[str] = set()
        for i, entry in enumerate(v.target_regions):
            region = TargetRegion(name=entry) if isinstance(entry, str) else entry
            path = f"version.targetRegions[{i}]"
            path_name = path if isinstance(entry, str) else f"{path}.name"
            if problem := regions.problem(region.name):
                problems.append(f"{path_name}: {problem}")
            if region.name in seen:
                problems.append(f"{path_name}: {region.name!r} is listed twice")
            seen.add(region.name)
            if region.replicas is not None and not 1 <= region.replicas <= MAX_REPLICAS:
                problems.append(
                    f"{path}.replicas: must be 1..{MAX_REPLICAS}, not {region.replicas}"
                )
        if v.target_regions and t.location not in seen and not regions.problem(t.location):
            problems.append(
                f"version.targetRegions: must include the gallery's own region {t.location!r};"
                " Azure replicates from there"
            )


def _check_rest(t: PublishTarget, problems: list[str]) -> None:
    if t.architecture == "Arm64" and t.hyper_v_generation != "V2":
        problems.append(
            "architecture: Arm64 images must be hyperVGeneration V2 (UEFI);"
            " set hyperVGeneration to V2"
        )
    if t.gallery is not None and t.image_definition is None:
        problems.append("imageDefinition: is required when gallery is set")
    if t.image_definition is not None and t.gallery is None:
        problems.append("gallery: is required when imageDefinition is set")
    if not limits.MIN_CONCURRENCY <= t.upload.concurrency <= limits.MAX_CONCURRENCY:
        problems.append(
            f"upload.concurrency: must be {limits.MIN_CONCURRENCY}..{limits.MAX_CONCURRENCY},"
            f" not {t.upload.concurrency}"
        )
    keep = t.retention.keep_versions
    if keep is not None and keep < 1:
        problems.append(f"retention.keepVersions: must be at least 1, not {keep}")
    _check_smoke_test(t, problems)


def _check_smoke_test(t: PublishTarget, problems: list[str]) -> None:
    s = t.smoke_test
    if not 60 <= s.timeout_seconds <= 86400:  # noqa: PLR2004
        problems.append(f"smokeTest.timeoutSeconds: must be 60..86400, not {s.timeout_seconds}")
    if not _VM_SIZE.match(s.vm_size):
        problems.append(
            f"smokeTest.vmSize: must be a VM size like 'Standard_B2s', not {s.vm_size!r}"
        )
    if s.location is not None and (problem := regions.problem(s.location)):
        problems.append(f"smokeTest.location: {problem}")
    elif s.enable:
        where = s.location or t.location
        names = [r.name for r in t.regions]
        if where not in names and not regions.problem(where):
            problems.append(
                f"smokeTest.location: {where} is not one of the target regions"
                f" ({', '.join(names)}); the test VM boots from a replica, so use one of them"
                " or add it to version.targetRegions"
            )
    try:
        re.compile(s.expect)
    except re.error as error:
        problems.append(f"smokeTest.expect: not a valid regular expression: {error}")
    if s.enable and t.gallery is None:
        problems.append("smokeTest.enable: needs a gallery to boot a version from")
    if s.enable:
        _check_smoke_vm(t, problems)


def _check_smoke_vm(t: PublishTarget, problems: list[str]) -> None:
    """The test VM must be one Azure can boot from this image: size, and what a CVM needs."""
    s = t.smoke_test
    confidential = t.security_type in CONFIDENTIAL_TYPES
    if (
        problem := vmsize.boot_problem(
            s.vm_size,
            generation=t.hyper_v_generation,
            architecture=t.architecture,
            confidential=confidential,
        )
    ) is not None:
        problems.append(f"smokeTest.vmSize: {problem}")
    if confidential and s.security_encryption_type is None:
        problems.append(
            f"smokeTest.securityEncryptionType: a {t.security_type} image boots only as a "
            "confidential VM; set it (VMGuestStateOnly, DiskWithVMGuestState or "
            "NonPersistedTPM) with a confidential smokeTest.vmSize such as Standard_DC2as_v5, "
            "or turn the smoke test off"
        )


def validate(target: PublishTarget, *, now: dt.datetime | None = None) -> list[str]:
    """Every rule the parsed target breaks, each as ``field.path: what is wrong``."""
    now = now or dt.datetime.now(dt.UTC)
    problems: list[str] = []
    _check_names(target, problems)
    _check_gallery(target, problems)
    _check_definition(target, problems, now)
    _check_version(target, problems, now)
    _check_rest(target, problems)
    return problems


def load_target(
    data: object,
    *,
    source: str | None = None,
    environ: Mapping[str, str] | None = None,
    image: str | None = None,
    now: dt.datetime | None = None,
) -> PublishTarget:
    """Parse and validate a target; raise :class:`ConfigError` listing every problem.

    ``environ`` supplies ``AZURE_SUBSCRIPTION_ID`` when the target names none;
    ``image`` (from ``--image``) overrides the target's image.
    """
    # Unknown keys do not stop the load: the rules below still run, so that one
    # misspelt key does not hide every other problem of the file.
    target, problems = typedload.load(PublishTarget, data)
    if target is None:
        raise ConfigError(problems, source=source)
    if image is not None:
        target = replace(target, image=image)
    if target.subscription_id is None and environ and environ.get("AZURE_SUBSCRIPTION_ID"):
        target = replace(target, subscription_id=environ["AZURE_SUBSCRIPTION_ID"])
    problems += validate(target, now=now)
    if problems:
        raise ConfigError(problems, source=source)
    return target


def read_config_file(path: Path) -> object:
    """Read a JSON (``.json``) or TOML (anything else ending in ``.toml``) target file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"config file {path} does not exist"]) from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError([f"cannot read config file {path}: {error}"]) from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(
            [f"line {error.lineno} column {error.colno}: invalid JSON: {error.msg}"],
            source=str(path),
        ) from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"invalid TOML: {error}"], source=str(path)) from None


def load_target_file(
    path: Path,
    *,
    environ: Mapping[str, str] | None = None,
    image: str | None = None,
) -> PublishTarget:
    """:func:`read_config_file` then :func:`load_target`."""
    return load_target(read_config_file(path), source=str(path), environ=environ, image=image)


def effective(target: PublishTarget) -> dict[str, Any]:
    """The target as camelCase JSON, defaults and derived values filled in."""
    out: dict[str, Any] = typedload.dump(target)
    if out["imageDefinition"] is not None:
        out["imageDefinition"]["securityType"] = target.security_type
    out["version"]["targetRegions"] = typedload.dump(target.regions)
    return out


def json_schema() -> dict[str, Any]:
    """A JSON Schema (2020-12) of the whole target surface."""
    defs: dict[str, Any] = {}
    root = typedload.schema(PublishTarget, defs=defs)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "nixos-azure-publish target",
        **root,
        "$defs": defs,
    }

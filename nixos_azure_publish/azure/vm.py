"""The smoke test: boot a throwaway VM from an image version and read its serial log.

The VM, its NIC and its VNet are named from the target, the image's store hash
and a random suffix, and tagged with :data:`TAG_SMOKE_RUN` (target and hash), so
that a rerun after a crash, a kill or Ctrl-C finds what an earlier run left and
deletes it before it starts. The VM's OS disk and NIC are created with
``deleteOption: Delete``; whatever remains is deleted explicitly, in ``finally``.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import urllib3
from azure.core.exceptions import HttpResponseError

from nixos_azure_publish.azure import arm
from nixos_azure_publish.azure.clients import azure_error, is_not_found
from nixos_azure_publish.azure.names import TAG_CREATED, TAG_PREFIX, TAG_TARGET, TAG_TOOL
from nixos_azure_publish.config import CONFIDENTIAL_TYPES, TRUSTED_LAUNCH_TYPES
from nixos_azure_publish.errors import AzureError
from nixos_azure_publish.redact import redact

if TYPE_CHECKING:
    from collections.abc import Callable

    from nixos_azure_publish.azure.clients import AzureClients
    from nixos_azure_publish.config import PublishTarget

log = logging.getLogger(__name__)

TAG_SMOKE_RUN: Final = TAG_PREFIX + "smoke-run"
"""On throwaway resources: ``<target>.<store hash>``, how a rerun finds leftovers."""
TAG_SMOKE_TEST: Final = TAG_PREFIX + "smoke-test"
"""On the image version: ``passed`` once a smoke test passed (it is not run again)."""
PASSED: Final = "passed"
ADMIN_USER: Final = "smoketest"
LOG_TAIL_LINES: Final = 25
VNET_PREFIX: Final = "10.213.0.0/24"
VM_API_SIZE_NAME_MAX: Final = 60


@dataclass(frozen=True)
class SmokeResult:
    """The outcome of one smoke test."""

    passed: bool
    vm_name: str
    location: str
    seconds: float
    log_tail: str


@dataclass(frozen=True)
class Throwaway:
    """Names of one run's throwaway resources."""

    vm: str
    nic: str
    vnet: str
    subnet: str
    os_disk: str


def run_key(target: PublishTarget, content_hash: str) -> str:
    """The tag value shared by every throwaway resource of this target and image."""
    return f"{target.name}.{content_hash}"


def throwaway_names(target: PublishTarget, content_hash: str, suffix: str) -> Throwaway:
    """Names for a new run: ``smoke-<target>-<hash8>-<suffix>-<kind>``, within Azure's limits."""
    base = _stem(target.name, content_hash) + suffix
    return Throwaway(
        vm=base[:VM_API_SIZE_NAME_MAX],
        nic=f"{base}-nic",
        vnet=f"{base}-vnet",
        subnet="smoke",
        os_disk=f"{base}-osdisk",
    )


def _stem(target_name: str, content_hash: str) -> str:
    stem = re.sub(r"[^a-z0-9-]", "-", target_name.lower()).strip("-")[:30] or "target"
    return f"smoke-{stem}-{content_hash[:8]}-"


def ssh_public_key() -> str:
    """A fresh SSH public key; its private half is never kept (nobody logs in)."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - only when testing
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return public.decode("ascii") + " nixos-azure-publish-smoke-test"


def _network(clients: AzureClients) -> Any:  # noqa: ANN401 - the SDK client
    if clients.network is None:  # pragma: no cover - make_clients always builds it
        raise AzureError("internal: no network client")
    return clients.network


def _tagged(items: object, key: str) -> list[dict[str, Any]]:
    out = []
    for item in items:  # type: ignore[attr-defined]
        body = arm.as_json(item)
        if (body.get("tags") or {}).get(TAG_SMOKE_RUN) == key:
            out.append(body)
    return out


def _list(doing: str, fn: Callable[..., Any], group: str, key: str) -> list[dict[str, Any]]:
    try:
        return _tagged(arm.call(doing, fn, group), key)
    except HttpResponseError as error:
        if is_not_found(error):
            return []
        raise azure_error(error, doing) from None


def find_leftovers(clients: AzureClients, group: str, key: str) -> dict[str, list[str]]:
    """Names of this key's throwaway VMs, NICs, VNets and OS disks in *group*."""
    target_name, _, content_hash = key.rpartition(".")
    prefix = _stem(target_name, content_hash)
    net = _network(clients)
    vms = _list("listing VMs", clients.compute.virtual_machines.list, group, key)
    nics = _list("listing network interfaces", net.network_interfaces.list, group, key)
    vnets = _list("listing virtual networks", net.virtual_networks.list, group, key)
    disks = _list("listing disks", clients.compute.disks.list_by_resource_group, group, key)
    vm_names = {str(v["name"]) for v in vms}
    # The OS disk carries no tags of ours in every API version: find it by its VM's name too.
    for item in arm.call("listing disks", clients.compute.disks.list_by_resource_group, group):
        body = arm.as_json(item)
        owner = str(body.get("managedBy") or body.get("managed_by") or "").rsplit("/", 1)[-1]
        name = str(body.get("name", ""))
        ours = owner in vm_names or (name.startswith(prefix) and name.endswith("-osdisk"))
        if ours and body not in disks:
            disks.append(body)
    return {
        "vm": sorted(vm_names),
        "nic": sorted(str(n["name"]) for n in nics),
        "vnet": sorted(str(v["name"]) for v in vnets),
        "disk": sorted(str(d["name"]) for d in disks),
    }


def delete_throwaways(clients: AzureClients, group: str, key: str) -> list[str]:
    """Delete every throwaway resource of *key* (VM first, then NIC, disk, VNet).

    Idempotent; a second Ctrl-C while deleting does not stop it.
    """
    deleted: list[str] = []
    for _ in range(3):
        try:
            _delete_all(clients, group, key, deleted)
        except KeyboardInterrupt:
            log.warning("still deleting the smoke test's VM and network; please wait")
            continue
        return deleted
    _delete_all(clients, group, key, deleted)
    return deleted


def _delete_all(clients: AzureClients, group: str, key: str, deleted: list[str]) -> None:
    found = find_leftovers(clients, group, key)
    net = _network(clients)
    compute = clients.compute
    for name in found["vm"]:
        _delete(f"deleting VM {name}", compute.virtual_machines.begin_delete, group, name)
        deleted.append(f"VM {name}")
    # Deleting the VM deleted its NIC and disk (deleteOption); look again for the rest.
    found = find_leftovers(clients, group, key)
    for name in found["nic"]:
        _delete(f"deleting NIC {name}", net.network_interfaces.begin_delete, group, name)
        deleted.append(f"NIC {name}")
    for name in found["disk"]:
        _delete(f"deleting disk {name}", compute.disks.begin_delete, group, name)
        deleted.append(f"disk {name}")
    for name in found["vnet"]:
        _delete(f"deleting VNet {name}", net.virtual_networks.begin_delete, group, name)
        deleted.append(f"VNet {name}")


def _delete(doing: str, begin: Callable[..., Any], group: str, name: str) -> None:
    log.info("%s", doing)
    arm.wait(doing, begin, group, name)


def _tags(target: PublishTarget, key: str) -> dict[str, str]:
    from nixos_azure_publish import __version__  # noqa: PLC0415

    return {
        TAG_SMOKE_RUN: key,
        TAG_TARGET: target.name,
        TAG_TOOL: __version__,
        # Network resources have no creation time in ARM: `gc` ages leftovers by this.
        TAG_CREATED: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def smoke_location(target: PublishTarget) -> str:
    """Where the VM boots: ``smokeTest.location``, else the target's location."""
    return target.smoke_test.location or target.location


def create_vm(
    clients: AzureClients,
    target: PublishTarget,
    names_: Throwaway,
    *,
    version_id: str,
    key: str,
) -> None:
    """VNet with one subnet, a NIC without public IP, and the VM with boot diagnostics."""
    group = target.resource_group
    location = smoke_location(target)
    tags = _tags(target, key)
    net = _network(clients)
    vnet = arm.wait(
        f"creating VNet {names_.vnet}",
        net.virtual_networks.begin_create_or_update,
        group,
        names_.vnet,
        {
            "location": location,
            "tags": tags,
            "properties": {
                "addressSpace": {"addressPrefixes": [VNET_PREFIX]},
                "subnets": [{"name": names_.subnet, "properties": {"addressPrefix": VNET_PREFIX}}],
            },
        },
    )
    subnet_id = f"{vnet['id']}/subnets/{names_.subnet}"
    nic = arm.wait(
        f"creating NIC {names_.nic}",
        net.network_interfaces.begin_create_or_update,
        group,
        names_.nic,
        {
            "location": location,
            "tags": tags,
            "properties": {
                "ipConfigurations": [
                    {
                        "name": "primary",
                        "properties": {
                            "subnet": {"id": subnet_id},
                            "privateIPAllocationMethod": "Dynamic",
                        },
                    }
                ]
            },
        },
    )
    body: dict[str, Any] = {
        "location": location,
        "tags": tags,
        "properties": {
            "hardwareProfile": {"vmSize": target.smoke_test.vm_size},
            "storageProfile": {
                "imageReference": {"id": version_id},
                "osDisk": {
                    "name": names_.os_disk,
                    "createOption": "FromImage",
                    "deleteOption": "Delete",
                    "managedDisk": {"storageAccountType": "Standard_LRS"},
                },
            },
            "osProfile": {
                "computerName": "smoketest",
                "adminUsername": ADMIN_USER,
                "linuxConfiguration": {
                    "disablePasswordAuthentication": True,
                    "ssh": {
                        "publicKeys": [
                            {
                                "path": f"/home/{ADMIN_USER}/.ssh/authorized_keys",
                                "keyData": ssh_public_key(),
                            }
                        ]
                    },
                },
            },
            "networkProfile": {
                "networkInterfaces": [
                    {"id": nic["id"], "properties": {"primary": True, "deleteOption": "Delete"}}
                ]
            },
            # Managed boot diagnostics: no storageUri.
            "diagnosticsProfile": {"bootDiagnostics": {"enabled": True}},
        },
    }
    profile = security_profile(target)
    if profile is not None:
        body["properties"]["securityProfile"] = profile
    if target.security_type in CONFIDENTIAL_TYPES:
        body["properties"]["storageProfile"]["osDisk"]["managedDisk"]["securityProfile"] = {
            "securityEncryptionType": target.smoke_test.security_encryption_type
        }
    log.info("booting smoke-test VM %s (%s) in %s", names_.vm, target.smoke_test.vm_size, location)
    begin: Any = clients.compute.virtual_machines.begin_create_or_update
    arm.wait(f"creating VM {names_.vm}", begin, group, names_.vm, body)


def security_profile(target: PublishTarget) -> dict[str, Any] | None:
    """The test VM's securityProfile for the image definition's security type.

    A VM's security type is TrustedLaunch or ConfidentialVM (the definition's
    ``...Supported`` values are refused on a VM); a Standard image gets no profile.
    Secure Boot stays off unless ``smokeTest.secureBoot``: NixOS's loader is unsigned.
    """
    uefi = {"secureBootEnabled": target.smoke_test.secure_boot, "vTpmEnabled": True}
    if target.security_type in TRUSTED_LAUNCH_TYPES:
        return {"securityType": "TrustedLaunch", "uefiSettings": uefi}
    if target.security_type in CONFIDENTIAL_TYPES:
        return {"securityType": "ConfidentialVM", "uefiSettings": uefi}
    return None


def read_serial_log(clients: AzureClients, group: str, vm: str) -> str | None:
    """The VM's serial console log so far; None when it is not available yet."""
    try:
        data = arm.as_json(
            clients.compute.virtual_machines.retrieve_boot_diagnostics_data(
                group, vm, sas_uri_expiration_time_in_minutes=10
            )
        )
    except HttpResponseError as error:
        if error.status_code == 409:  # noqa: PLR2004 - not booted yet
            return None
        raise azure_error(error, f"reading the boot diagnostics of VM {vm}") from None
    url = data.get("serialConsoleLogBlobUri") or data.get("serial_console_log_blob_uri")
    if not url:
        return None
    verify = clients.settings.connection_verify
    pool = urllib3.PoolManager(
        cert_reqs="CERT_REQUIRED", ca_certs=verify if isinstance(verify, str) else None
    )
    try:
        response = pool.request("GET", str(url), timeout=30.0, retries=2)
    except urllib3.exceptions.HTTPError as error:
        log.debug("reading the serial log failed: %s", redact(str(error)))
        return None
    if response.status == 404:  # noqa: PLR2004 - nothing written yet
        return None
    if response.status >= 400:  # noqa: PLR2004
        log.debug("reading the serial log answered %s", response.status)
        return None
    return response.data.decode("utf-8", errors="replace")


def tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The last *lines* lines of *text*."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run_smoke_test(
    clients: AzureClients,
    target: PublishTarget,
    *,
    version_id: str,
    content_hash: str,
    timeout: float | None = None,
    interval: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SmokeResult:
    """Boot the version, wait for ``smokeTest.expect`` in the serial log, always clean up."""
    group = target.resource_group
    key = run_key(target, content_hash)
    leftovers = delete_throwaways(clients, group, key)
    if leftovers:
        log.info("deleted an earlier smoke test's leftovers: %s", ", ".join(leftovers))
    names_ = throwaway_names(target, content_hash, secrets.token_hex(3))
    expect = re.compile(target.smoke_test.expect)
    limit = float(target.smoke_test.timeout_seconds) if timeout is None else timeout
    began = time.monotonic()
    text = ""
    try:
        create_vm(clients, target, names_, version_id=version_id, key=key)
        deadline = time.monotonic() + limit
        while True:
            text = read_serial_log(clients, group, names_.vm) or text
            if expect.search(text):
                log.info("smoke test passed: the serial log matches %r", target.smoke_test.expect)
                passed = True
                break
            if time.monotonic() >= deadline:
                passed = False
                break
            sleep(interval)
    finally:
        delete_throwaways(clients, group, key)
    return SmokeResult(
        passed=passed,
        vm_name=names_.vm,
        location=smoke_location(target),
        seconds=time.monotonic() - began,
        log_tail=redact(tail(text)),
    )

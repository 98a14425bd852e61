"""The emulator speaks the SDK's language: models round-trip, api-versions match.

Every response body of the README flow is checked against the installed SDK's
models: each JSON property must be one the model declares (nothing unknown),
recursively. And every operation the SDK sends is served at exactly the
api-version the SDK sends.
"""

from __future__ import annotations

import types
import typing
from importlib import import_module
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.mgmt.compute import models as compute_models
from azure.mgmt.compute.operations import _operations as compute_ops
from azure.mgmt.network import models as network_models
from azure.mgmt.network.operations import _operations as network_ops

from nixos_azure_publish.emulator.recording import TrafficRecorder
from nixos_azure_publish.emulator.router import check_api_version
from nixos_azure_publish.emulator.testing import clients
from tests.helpers.emulator_flow import (
    LOCATION,
    step_gallery_version,
    step_image,
    step_smoke_test_vm,
    step_upload,
)

MODEL_OF_FAMILY: dict[str, Any] = {
    "Disks": compute_models.Disk,
    "Images": compute_models.Image,
    "Galleries": compute_models.Gallery,
    "GalleryImages": compute_models.GalleryImage,
    "GalleryImageVersions": compute_models.GalleryImageVersion,
    "VirtualMachines": compute_models.VirtualMachine,
    "CommunityGalleries": compute_models.CommunityGallery,
    "CommunityGalleryImages": compute_models.CommunityGalleryImage,
    "CommunityGalleryImageVersions": compute_models.CommunityGalleryImageVersion,
    "VirtualNetworks": network_models.VirtualNetwork,
    "PublicIPAddresses": network_models.PublicIPAddress,
    "NetworkInterfaces": network_models.NetworkInterface,
    "NetworkSecurityGroups": network_models.NetworkSecurityGroup,
    "Subnets": network_models.Subnet,
}
MODEL_OF_OPERATION: dict[str, Any] = {
    "VirtualMachines_RetrieveBootDiagnosticsData": (
        compute_models.RetrieveBootDiagnosticsDataResult
    ),
    "VirtualMachines_InstanceView": compute_models.VirtualMachineInstanceView,
}
STATUS_DOCUMENT_KEYS = {"startTime", "endTime", "status", "name", "error", "properties"}


def unknown_properties(model: Any, data: Any, path: str = "") -> list[str]:
    """JSON properties of *data* that *model* (an SDK type) does not declare, recursively."""
    origin, args = typing.get_origin(model), typing.get_args(model)
    if origin in {typing.Union, types.UnionType}:
        real = [a for a in args if a is not type(None)]
        return unknown_properties(real[0], data, path) if real else []
    if origin is list and isinstance(data, list):
        return [
            p for i, v in enumerate(data) for p in unknown_properties(args[0], v, f"{path}[{i}]")
        ]
    if origin is dict and isinstance(data, dict):
        return [p for k, v in data.items() for p in unknown_properties(args[1], v, f"{path}.{k}")]
    if not (isinstance(model, type) and hasattr(model, "_is_model")):
        return []
    if not isinstance(data, dict):
        return [f"{path}: expected an object"]
    model({})  # the SDK builds its field table on first use
    table: dict[str, Any] = getattr(model, "_attr_to_rest_field")  # noqa: B009 - private SDK table
    fields = {f._rest_name: attr for attr, f in table.items()}
    package = import_module(model.__module__.rsplit(".", 1)[0])
    hints = typing.get_type_hints(model, localns={"_models": package})
    found = []
    for key, value in data.items():
        if key not in fields:
            found.append(f"{path}.{key}")
        else:
            found += unknown_properties(hints.get(fields[key]), value, f"{path}.{key}")
    return found


def test_the_walker_finds_unknown_properties():
    body = {"properties": {"diskState": "Unattached", "bogus": 1, "creationData": {"x": 2}}}
    assert unknown_properties(compute_models.Disk, body) == [
        ".properties.bogus",
        ".properties.creationData.x",
    ]


def test_every_response_of_the_flow_fits_the_sdk_models(emulator):
    recorder = TrafficRecorder()
    sdk = clients(emulator, recorder=recorder)
    sdk.create_group("nixos-images", LOCATION)
    disk = step_upload(emulator, sdk)
    image = step_image(sdk, disk)
    version = step_gallery_version(emulator, sdk, image)
    step_smoke_test_vm(emulator, sdk, version)
    checked: set[str] = set()
    problems: list[str] = []
    for exchange in recorder.exchanges:
        request, response = exchange["liveRequest"], exchange["liveResponse"]
        body = response["body"]
        if body is None or not response["statusCode"].startswith("2"):
            continue
        url = urlsplit(request["url"])
        route = emulator.app.router.resolve(request["method"], url.path).route
        if route.operation_id.startswith("Operations_"):
            model = compute_models.AccessUri if "accessSAS" in body else None
            if model is None and "monitor" not in parse_qs(url.query):
                assert set(body) <= STATUS_DOCUMENT_KEYS, body
                continue
        else:
            family = route.operation_id.split("_", 1)[0]
            model = MODEL_OF_OPERATION.get(route.operation_id, MODEL_OF_FAMILY.get(family))
        if model is None:
            continue
        items = (
            body["value"]
            if route.operation_id.endswith(("List", "ListByResourceGroup"))
            else [body]
        )
        for item in items:
            problems += [f"{route.operation_id}: {p}" for p in unknown_properties(model, item)]
        checked.add(route.operation_id)
    assert problems == []
    for operation in (
        "Disks_CreateOrUpdate",
        "Disks_Get",
        "Images_CreateOrUpdate",
        "Galleries_CreateOrUpdate",
        "GalleryImages_CreateOrUpdate",
        "GalleryImageVersions_Get",
        "VirtualMachines_CreateOrUpdate",
        "VirtualMachines_RetrieveBootDiagnosticsData",
        "NetworkInterfaces_CreateOrUpdate",
        "Operations_Get",
    ):
        assert operation in checked


SDK_REQUESTS = [
    (compute_ops.build_disks_get_request, {"resource_group_name": "g", "disk_name": "d"}),
    (compute_ops.build_disks_grant_access_request, {"resource_group_name": "g", "disk_name": "d"}),
    (compute_ops.build_images_get_request, {"resource_group_name": "g", "image_name": "i"}),
    (compute_ops.build_galleries_get_request, {"resource_group_name": "g", "gallery_name": "x"}),
    (
        compute_ops.build_gallery_image_versions_get_request,
        {
            "resource_group_name": "g",
            "gallery_name": "x",
            "gallery_image_name": "i",
            "gallery_image_version_name": "1.0.0",
        },
    ),
    (
        compute_ops.build_gallery_sharing_profile_update_request,
        {"resource_group_name": "g", "gallery_name": "x"},
    ),
    (
        compute_ops.build_community_galleries_get_request,
        {"location": "l", "public_gallery_name": "p"},
    ),
    (compute_ops.build_virtual_machines_get_request, {"resource_group_name": "g", "vm_name": "v"}),
    (
        compute_ops.build_virtual_machines_retrieve_boot_diagnostics_data_request,
        {"resource_group_name": "g", "vm_name": "v"},
    ),
    (
        network_ops.build_network_interfaces_get_request,
        {"resource_group_name": "g", "network_interface_name": "n"},
    ),
    (
        network_ops.build_virtual_networks_get_request,
        {"resource_group_name": "g", "virtual_network_name": "n"},
    ),
    (
        network_ops.build_public_ip_addresses_get_request,
        {"resource_group_name": "g", "public_ip_address_name": "n"},
    ),
]


@pytest.mark.parametrize(("build", "args"), SDK_REQUESTS, ids=lambda v: getattr(v, "__name__", ""))
def test_served_api_versions_are_the_ones_the_sdk_sends(emulator, build, args):
    request = build(subscription_id="s", **args)
    url = urlsplit(request.url)
    (api_version,) = parse_qs(url.query)["api-version"]
    route = emulator.app.router.resolve(request.method, url.path).route
    check_api_version(route, api_version, route.action)  # raises if not served
    assert api_version in route.api_versions

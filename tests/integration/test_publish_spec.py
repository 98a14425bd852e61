"""The requests a whole publish sends, validated against Azure's API specs with ``oav``.

The publish runs in-process with a management client that records its traffic
(the emulator's ``TrafficRecorder``); the emulator module's ``validate`` runs
Microsoft's validator offline against DiskRP, GalleryRP and ComputeRP, and
fails on an operation the specs do not know.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from azure.mgmt.compute import ComputeManagementClient

from nixos_azure_publish.azure.clients import AzureClients, AzureSettings, StaticTokenCredential
from nixos_azure_publish.config import load_target_file
from nixos_azure_publish.emulator.recording import TrafficRecorder
from nixos_azure_publish.pipeline import Pipeline, PublishInput, PublishOptions
from tests.helpers.images import make_image
from tests.helpers.specs import oav, validate
from tests.helpers.targets import write_target

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator


def test_publish_traffic_validates_against_the_specs(emulator: Emulator, tmp_path):
    oav()  # skips when oav is not installed
    emulator.settings.replication_seconds = 0.2
    image = make_image(tmp_path / "img", seed=21)
    target = load_target_file(
        write_target(
            tmp_path,
            image,
            managedImage={"enable": True},
            version={
                "targetRegions": ["westeurope", {"name": "northeurope", "replicas": 2}],
                "endOfLifeDate": "2099-12-31",
                "excludeFromLatest": True,
            },
            imageDefinition={
                "name": "nixos-test",
                "publisher": "NixOS",
                "offer": "NixOS",
                "sku": "gen2",
                "acceleratedNetworking": True,
                "diskControllerTypes": ["SCSI", "NVMe"],
                "recommended": {"vCPUs": {"min": 2, "max": 16}, "memory": {"min": 4}},
                "endOfLifeDate": "2099-06-30",
            },
        ),
        environ=emulator.environ,
    )
    recorder = TrafficRecorder()
    settings = AzureSettings.from_environ(subscription_id=None, environ=emulator.environ)
    credential = StaticTokenCredential()
    compute = ComputeManagementClient(
        credential,
        settings.subscription_id,
        base_url=settings.endpoint,
        credential_scopes=["https://management.azure.com/.default"],
        connection_verify=str(settings.ca_cert),
        polling_interval=0.05,
        per_call_policies=[recorder],
    )
    clients = AzureClients(settings=settings, credential=credential, compute=compute)
    options = PublishOptions(state_dir=tmp_path / "state")
    report = Pipeline(
        PublishInput(target=target, image_path=image), clients=clients, options=options
    ).run()
    assert report.status == "published"
    again = Pipeline(
        PublishInput(target=target, image_path=image), clients=clients, options=options
    ).run()
    assert again.status == "already-published"
    wider = dataclasses.replace(
        target,
        version=dataclasses.replace(
            target.version, target_regions=(*(target.version.target_regions or ()), "eastus")
        ),
    )
    added = Pipeline(
        PublishInput(target=wider, image_path=image), clients=clients, options=options
    ).run()
    assert [r.action for r in added.resources if r.kind == "image version"] == ["updated"]

    result = validate(emulator, recorder.exchanges, tmp_path / "oav")
    assert result.problems == [], "\n".join(p[:700] for p in result.problems)
    # Every kind of call a publish makes was matched by an operation of the specs.
    assert {
        "Disks_Get",
        "Disks_CreateOrUpdate",
        "Disks_GrantAccess",
        "Disks_Update",
        "Disks_RevokeAccess",
        "Disks_Delete",
        "Galleries_Get",
        "Galleries_CreateOrUpdate",
        "GalleryImages_Get",
        "GalleryImages_CreateOrUpdate",
        "Images_Get",
        "Images_CreateOrUpdate",
        "GalleryImageVersions_Get",
        "GalleryImageVersions_CreateOrUpdate",
        "GalleryImageVersions_ListByGalleryImage",
        "GalleryImageVersions_Update",
    } <= result.operations

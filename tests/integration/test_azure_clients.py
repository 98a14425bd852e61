"""The clients built by azure/clients.py, against the emulator: endpoint, CA, token, polling."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from nixos_azure_publish.azure import group
from nixos_azure_publish.azure.clients import USER_AGENT, AzureSettings, make_clients
from nixos_azure_publish.emulator.certs import write_self_signed
from nixos_azure_publish.errors import AzureError

if TYPE_CHECKING:
    from nixos_azure_publish.emulator.server import Emulator


def operation_polls(emulator: Emulator, since: int) -> int:
    return sum(
        1 for r in list(emulator.requests)[since:] if r.method == "GET" and "/operations/" in r.path
    )


def test_clients_reach_the_emulator_from_its_environment(emulator):
    settings = AzureSettings.from_environ(subscription_id=None, environ=emulator.environ)
    clients = make_clients(settings)
    assert settings.emulator
    clients.check_credentials()
    assert USER_AGENT in clients.compute._config.user_agent_policy.user_agent
    assert group.ensure_group(clients, "rg-a", location="westeurope", tags={"k": "v"})
    assert not group.ensure_group(clients, "rg-a", location="westeurope", tags={})
    found = clients.resource_group("rg-a")
    assert found is not None
    assert found["tags"] == {"k": "v"}


def test_polling_follows_the_servers_retry_after(emulator):
    settings = AzureSettings.from_environ(subscription_id=None, environ=emulator.environ)
    clients = make_clients(settings)
    group.ensure_group(clients, "rg", location="westeurope", tags={})
    emulator.settings.operation_seconds = 1.2
    body = {"location": "westeurope", "properties": {"description": "x"}}

    emulator.settings.retry_after = 0  # none sent: our own short interval
    before = len(emulator.requests)
    clients.compute.galleries.begin_create_or_update("rg", "g1", body).result()  # type: ignore[call-overload]
    own_interval = operation_polls(emulator, before)

    emulator.settings.retry_after = 1  # the server asks for a second between polls
    before = len(emulator.requests)
    clients.compute.galleries.begin_create_or_update("rg", "g2", body).result()  # type: ignore[call-overload]
    server_interval = operation_polls(emulator, before)
    assert own_interval >= 4
    assert server_interval <= 3
    assert server_interval < own_interval


def test_a_wrong_certificate_is_an_azure_error_not_a_traceback(emulator, tmp_path):
    other = tmp_path / "other.pem"
    write_self_signed(other, tmp_path / "other-key.pem")  # valid, but not the server's
    env = {**emulator.environ, "NIXOS_AZURE_PUBLISH_CA_CERT": str(other)}
    clients = make_clients(AzureSettings.from_environ(subscription_id=None, environ=env))
    with pytest.raises(AzureError, match="cannot reach"):
        group.group_exists(clients, "rg")

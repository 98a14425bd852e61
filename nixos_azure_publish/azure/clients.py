"""The one place that builds Azure credentials and clients.

Real Azure: :class:`azure.identity.DefaultAzureCredential` (environment service
principal, workload identity / GitHub OIDC, managed identity, ``az login``).
``NIXOS_AZURE_PUBLISH_ENDPOINT`` and ``NIXOS_AZURE_PUBLISH_CA_CERT`` aim every
client at another ARM endpoint (the bundled emulator) and trust its
certificate; with ``NIXOS_AZURE_PUBLISH_EMULATOR=1`` a static token replaces
the credential chain, so no Azure login is needed.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NoReturn

from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.rest import HttpRequest
from azure.mgmt.compute import ComputeManagementClient
from azure.mgmt.network import NetworkManagementClient

from nixos_azure_publish import __version__
from nixos_azure_publish.errors import AzureError, UsageError
from nixos_azure_publish.redact import redact

if TYPE_CHECKING:
    from collections.abc import Mapping

    from azure.core.credentials import TokenCredential

log = logging.getLogger(__name__)

ENV_ENDPOINT: Final = "NIXOS_AZURE_PUBLISH_ENDPOINT"
ENV_CA_CERT: Final = "NIXOS_AZURE_PUBLISH_CA_CERT"
ENV_EMULATOR: Final = "NIXOS_AZURE_PUBLISH_EMULATOR"
ENV_SUBSCRIPTION: Final = "AZURE_SUBSCRIPTION_ID"
DEFAULT_ENDPOINT: Final = "https://management.azure.com"
MANAGEMENT_SCOPE: Final = "https://management.azure.com/.default"
USER_AGENT: Final = f"nixos-azure-publish/{__version__}"
# Used only when the server sends no Retry-After; ARM polling prefers the server's value.
# The SDK default is 30 s, which turns a 3 s operation into a 30 s wait.
DEFAULT_POLLING_INTERVAL: Final = 5.0
EMULATOR_POLLING_INTERVAL: Final = 0.2
RESOURCE_GROUPS_API: Final = "2021-04-01"
STATUS_RETRIES: Final = 10


class StaticTokenCredential:
    """A credential that always returns the same token: only for the local emulator."""

    def __init__(self, token: str = "emulator-token") -> None:  # noqa: S107 - not a secret
        self._token = token

    def get_token(
        self,
        *scopes: str,  # noqa: ARG002 - the protocol's signature
        claims: str | None = None,  # noqa: ARG002
        tenant_id: str | None = None,  # noqa: ARG002
        enable_cae: bool = False,  # noqa: ARG002
        **kwargs: Any,  # noqa: ARG002, ANN401
    ) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)

    def get_token_info(self, *scopes: str, options: object = None) -> AccessTokenInfo:  # noqa: ARG002
        return AccessTokenInfo(self._token, int(time.time()) + 3600)


@dataclass(frozen=True)
class AzureSettings:
    """Where the clients talk to and how they authenticate."""

    subscription_id: str
    endpoint: str = DEFAULT_ENDPOINT
    ca_cert: Path | None = None
    emulator: bool = False
    polling_interval: float = DEFAULT_POLLING_INTERVAL

    @classmethod
    def from_environ(
        cls, *, subscription_id: str | None, environ: Mapping[str, str] | None = None
    ) -> AzureSettings:
        """Settings from the ``NIXOS_AZURE_PUBLISH_*`` variables; the target's subscription wins."""
        env = os.environ if environ is None else environ
        subscription = subscription_id or env.get(ENV_SUBSCRIPTION)
        if not subscription:
            raise UsageError(
                "no Azure subscription given",
                hint=f"Set subscriptionId in the target or export {ENV_SUBSCRIPTION}",
            )
        emulator = env.get(ENV_EMULATOR, "") in {"1", "true", "yes"}
        endpoint = (env.get(ENV_ENDPOINT) or DEFAULT_ENDPOINT).rstrip("/")
        ca = env.get(ENV_CA_CERT)
        ca_cert = Path(ca) if ca else None
        if ca_cert is not None and not ca_cert.is_file():
            raise UsageError(
                f"{ENV_CA_CERT} names {ca_cert}, which is not a file",
                hint="Point it at the PEM certificate the endpoint presents, or unset it",
            )
        if not endpoint.startswith("https://"):
            raise UsageError(
                f"{ENV_ENDPOINT} must be an https:// URL, not {endpoint!r}",
                hint="Bearer tokens are only sent over HTTPS; serve the endpoint with TLS",
            )
        return cls(
            subscription_id=subscription,
            endpoint=endpoint,
            ca_cert=ca_cert,
            emulator=emulator,
            polling_interval=EMULATOR_POLLING_INTERVAL if emulator else DEFAULT_POLLING_INTERVAL,
        )

    @property
    def connection_verify(self) -> str | bool:
        """What the HTTP transport verifies the server against."""
        return str(self.ca_cert) if self.ca_cert else True


def make_credential(settings: AzureSettings) -> TokenCredential:
    """The static emulator token, or Azure's default credential chain."""
    if settings.emulator:
        return StaticTokenCredential()
    from azure.identity import DefaultAzureCredential  # noqa: PLC0415 - slow import, real Azure only

    return DefaultAzureCredential()


@dataclass
class AzureClients:
    """The clients one publish uses, all aimed at the same endpoint."""

    settings: AzureSettings
    credential: TokenCredential
    compute: ComputeManagementClient
    # The smoke test's throwaway VNet and NIC; None in clients built without it.
    network: NetworkManagementClient | None = None
    # Clients of other subscriptions (an import's source), built on first use.
    _others: dict[str, ComputeManagementClient] = field(default_factory=dict, repr=False)

    def compute_for(self, subscription_id: str) -> ComputeManagementClient:
        """A compute client of *subscription_id* (this one's when it is the same)."""
        if subscription_id.lower() == self.settings.subscription_id.lower():
            return self.compute
        if subscription_id not in self._others:
            self._others[subscription_id] = ComputeManagementClient(
                self.credential, subscription_id, **client_kwargs(self.settings)
            )
        return self._others[subscription_id]

    def check_credentials(self) -> None:
        """Get a token now, so that a missing login fails before anything is uploaded."""
        try:
            self.credential.get_token(MANAGEMENT_SCOPE)
        except ClientAuthenticationError as error:
            raise AzureError(
                f"cannot get an Azure token: {first_line(str(error))}",
                hint="Log in with `az login`, or set AZURE_CLIENT_ID/AZURE_TENANT_ID with a secret"
                " or a federated token (GitHub OIDC), or run with --emulator",
            ) from None

    def resource_group(self, name: str) -> dict[str, Any] | None:
        """The resource group as JSON, or None when it does not exist."""
        response = self._group_request("GET", name)
        if response.status_code == 404:  # noqa: PLR2004
            return None
        _raise_for_status(response, f"reading resource group {name}")
        result: dict[str, Any] = response.json()
        return result

    def create_resource_group(
        self, name: str, *, location: str, tags: Mapping[str, str]
    ) -> dict[str, Any]:
        """Create (PUT) the resource group."""
        response = self._group_request("PUT", name, body={"location": location, "tags": dict(tags)})
        _raise_for_status(response, f"creating resource group {name}")
        result: dict[str, Any] = response.json()
        return result

    def locations(self) -> frozenset[str] | None:
        """The regions this subscription may use, or None when it may not list them.

        Listing needs read access at the subscription's scope; an identity whose role is
        assigned on a resource group only gets 403, and then the regions are left for
        Azure to judge when each resource is created.
        """
        url = (
            f"{self.settings.endpoint}/subscriptions/{self.settings.subscription_id}"
            f"/locations?api-version={RESOURCE_GROUPS_API}"
        )
        try:
            response = self.compute.send_request(HttpRequest("GET", url))
        except (ServiceRequestError, ServiceResponseError) as error:
            raise_connection_error(self.settings, error)
        if response.status_code in {401, 403}:
            log.debug("listing the subscription's regions: %s; not checked", response.status_code)
            return None
        _raise_for_status(response, "listing the subscription's regions")
        return frozenset(
            str(item.get("name", "")).lower()
            for item in response.json().get("value") or []
            if (item.get("metadata") or {}).get("regionType", "Physical") == "Physical"
        )

    def _group_request(self, method: str, name: str, body: object = None) -> Any:  # noqa: ANN401
        url = (
            f"{self.settings.endpoint}/subscriptions/{self.settings.subscription_id}"
            f"/resourcegroups/{name}?api-version={RESOURCE_GROUPS_API}"
        )
        request = (
            HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        )
        try:
            return self.compute.send_request(request)
        except (ServiceRequestError, ServiceResponseError) as error:
            raise_connection_error(self.settings, error)


def _raise_for_status(response: Any, doing: str) -> None:  # noqa: ANN401
    if 200 <= response.status_code < 300:  # noqa: PLR2004
        return
    try:
        body = response.json()
        err = body.get("error", {})
        detail = f"{err.get('code', response.status_code)}: {err.get('message', '')}"
    except ValueError:
        detail = f"HTTP {response.status_code}"
    hint, helps = _hint_for_status(response.status_code)
    raise AzureError(f"{doing} failed: {detail}", hint=hint, rerun_helps=helps)


def _hint_for_status(status: int) -> tuple[str, bool]:
    """What to do after Azure answered *status*, and whether a plain rerun can help."""
    if status in {401, 403}:
        return (
            "Check that the identity has Contributor rights on the subscription or group",
            False,
        )
    if status == 429:  # noqa: PLR2004
        return "Azure is throttling requests; wait a minute and run again", True
    if status == 409:  # noqa: PLR2004
        return (
            (
                "It conflicts with what exists in Azure: a rerun meets the same conflict until"
                " the target or that resource changes"
            ),
            False,
        )
    if 400 <= status < 500:  # noqa: PLR2004
        return (
            (
                "Azure refused the request: fix what its message names, then run again"
                " (the same request is refused again)"
            ),
            False,
        )
    return "Azure failed the request; run again: the publish resumes where it stopped", True


def first_line(text: str) -> str:
    """The first non-empty line of *text*, redacted."""
    for line in text.splitlines():
        if line.strip():
            return redact(line.strip())
    return ""


def client_kwargs(settings: AzureSettings) -> dict[str, Any]:
    """The keyword arguments every management client of *settings* is built with."""
    kwargs: dict[str, Any] = {
        "base_url": settings.endpoint,
        "credential_scopes": [MANAGEMENT_SCOPE],
        "polling_interval": settings.polling_interval,
        "user_agent": USER_AGENT,
        # ARM throttles (429) and sheds load (503) in streaks; every call we make is
        # idempotent or checked afterwards, so retrying longer than the SDK's 3 is safe.
        "retry_total": STATUS_RETRIES,
        "retry_status": STATUS_RETRIES,
    }
    if settings.ca_cert is not None:
        kwargs["connection_verify"] = str(settings.ca_cert)
    return kwargs


def make_clients(settings: AzureSettings) -> AzureClients:
    """Build the credential and the management client for *settings*."""
    credential = make_credential(settings)
    kwargs = client_kwargs(settings)
    compute = ComputeManagementClient(credential, settings.subscription_id, **kwargs)
    network = NetworkManagementClient(credential, settings.subscription_id, **kwargs)
    log.debug("Azure endpoint %s (emulator: %s)", settings.endpoint, settings.emulator)
    return AzureClients(settings=settings, credential=credential, compute=compute, network=network)


def raise_connection_error(settings: AzureSettings, error: Exception) -> NoReturn:
    """Turn a transport failure into an :class:`AzureError` that says where we tried to go."""
    raise AzureError(
        f"cannot reach {settings.endpoint}: {first_line(str(error))}",
        hint="Check the network (and NIXOS_AZURE_PUBLISH_ENDPOINT / _CA_CERT when set)",
        rerun_helps=True,
    ) from None


def azure_error(error: HttpResponseError, doing: str) -> AzureError:
    """An :class:`AzureError` for a failed SDK call, with Azure's code and message."""
    code = getattr(error.error, "code", None) if error.error else None
    message = getattr(error.error, "message", None) if error.error else None
    detail = f"{code}: {message}" if code else first_line(str(error))
    hint, helps = _hint_for_status(error.status_code or 0)
    return AzureError(f"{doing} failed: {redact(detail)}", hint=hint, rerun_helps=helps)


def is_not_found(error: Exception) -> bool:
    """True for a 404 from ARM."""
    return isinstance(error, ResourceNotFoundError) or (
        isinstance(error, HttpResponseError) and error.status_code == 404  # noqa: PLR2004
    )

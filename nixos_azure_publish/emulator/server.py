"""Run the emulator: Azurite for blobs plus the HTTPS Resource Manager, always stopped after.

``run_emulator`` is what tests (fixture ``emulator``) and ``emulator serve``
use. The :class:`Emulator` it yields tells a client everything it needs:
the endpoint, the certificate to trust and the subscription, also as the
environment variables every command of the tool honours.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from nixos_azure_publish.emulator.azurite import Azurite, run_azurite
from nixos_azure_publish.emulator.blobfront import run_blob_front
from nixos_azure_publish.emulator.blobs import BlobBackend
from nixos_azure_publish.emulator.certs import is_valid_for, write_self_signed
from nixos_azure_publish.emulator.core import ArmApp
from nixos_azure_publish.emulator.credential import EmulatorCredential
from nixos_azure_publish.emulator.httpbase import serve_in_background
from nixos_azure_publish.emulator.httpd import ArmHttpServer
from nixos_azure_publish.emulator.settings import EmulatorSettings

if TYPE_CHECKING:
    from collections.abc import Iterator

    from nixos_azure_publish.emulator.faults import Faults
    from nixos_azure_publish.emulator.requestlog import RequestLog

log = logging.getLogger(__name__)

ENV_ENDPOINT: Final = "NIXOS_AZURE_PUBLISH_ENDPOINT"
ENV_CA_CERT: Final = "NIXOS_AZURE_PUBLISH_CA_CERT"
ENV_EMULATOR: Final = "NIXOS_AZURE_PUBLISH_EMULATOR"
ENV_SUBSCRIPTION: Final = "AZURE_SUBSCRIPTION_ID"
ARM_SCOPE: Final = "https://management.azure.com/.default"

__all__ = ["Emulator", "EmulatorSettings", "run_emulator"]


@dataclass(frozen=True)
class Emulator:
    """A running emulator."""

    endpoint: str
    ca_cert: Path
    subscription_id: str
    azurite: Azurite
    app: ArmApp
    state_dir: Path | None

    @property
    def environ(self) -> dict[str, str]:
        """The environment a client needs to use this emulator instead of Azure."""
        return {
            ENV_ENDPOINT: self.endpoint,
            ENV_CA_CERT: str(self.ca_cert),
            ENV_EMULATOR: "1",
            ENV_SUBSCRIPTION: self.subscription_id,
        }

    @property
    def requests(self) -> RequestLog:
        return self.app.requests

    @property
    def faults(self) -> Faults:
        return self.app.faults

    @property
    def settings(self) -> EmulatorSettings:
        return self.app.settings

    def credential(self) -> EmulatorCredential:
        return EmulatorCredential()

    def client_kwargs(self, *, polling_interval: float = 0.05) -> dict[str, Any]:
        """Keyword arguments for an azure-mgmt-* client aimed at this emulator."""
        return {
            "base_url": self.endpoint,
            "credential_scopes": [ARM_SCOPE],
            "connection_verify": str(self.ca_cert),
            "polling_interval": polling_interval,
        }


def _certificate(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = folder / "emulator-cert.pem", folder / "emulator-key.pem"
    # Keep a still-valid certificate across restarts: clients may have its path configured.
    if not (is_valid_for(cert) and key.is_file()):
        write_self_signed(cert, key)
    return cert, key


@contextlib.contextmanager
def run_emulator(
    *,
    state_dir: Path | None = None,
    port: int | None = None,
    azurite: Azurite | None = None,
    settings: EmulatorSettings | None = None,
) -> Iterator[Emulator]:
    """Run the emulator until the block exits; stop everything it started.

    With *state_dir*, resources, operations, blobs and the certificate are kept
    there and a later run continues with them.
    """
    with contextlib.ExitStack() as stack:
        work = state_dir
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="azure-emulator-")))
        else:
            work.mkdir(parents=True, exist_ok=True)
        if azurite is None:
            azurite = stack.enter_context(
                run_azurite(location=work / "azurite", log_file=work / "azurite.log")
            )
        cert, key = _certificate(work / "tls")
        front = None
        if azurite.scheme == "http":
            front = stack.enter_context(run_blob_front(azurite))
        app = ArmApp(
            blobs=BlobBackend(azurite, public_endpoint=front),
            settings=settings or EmulatorSettings(),
            state_dir=state_dir,
        )
        server = ArmHttpServer(("127.0.0.1", port or 0), app, cert=cert, key=key)
        bound = int(server.server_address[1])
        app.base_url = f"https://127.0.0.1:{bound}"
        thread = serve_in_background(server, "azure-emulator")
        log.debug("emulator listening on %s", app.base_url)
        try:
            yield Emulator(
                endpoint=app.base_url,
                ca_cert=cert,
                subscription_id=app.settings.subscription_id,
                azurite=azurite,
                app=app,
                state_dir=state_dir,
            )
        finally:
            server.shutdown()
            server.close_connections()
            server.server_close()
            thread.join(timeout=5)
            app.store.save()

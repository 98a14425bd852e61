"""Calls into the management SDK with one error policy, results as REST JSON.

The SDK's models are mappings of the REST body; :func:`as_json` turns them into
plain dicts with the wire's camelCase keys, so the rest of the package speaks
the API's own vocabulary (the one in Azure's documentation and specs).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from nixos_azure_publish.azure.clients import azure_error, first_line, is_not_found
from nixos_azure_publish.errors import AzureError

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)


def as_json(model: object) -> dict[str, Any]:
    """A model (or mapping) as a plain JSON dict with REST names."""
    if model is None:
        return {}
    as_dict = getattr(model, "as_dict", None)
    if callable(as_dict):
        result: dict[str, Any] = as_dict()
        return result
    if isinstance(model, dict):
        return model
    return dict(model)  # type: ignore[call-overload,no-any-return]


def _transport_error(error: Exception, doing: str) -> AzureError:
    return AzureError(
        f"{doing} failed: cannot reach Azure: {first_line(str(error))}",
        hint="Check the network (and NIXOS_AZURE_PUBLISH_ENDPOINT / _CA_CERT when set)",
        rerun_helps=True,
    )


def get_or_none(
    doing: str, fn: Callable[..., Any], *args: object, **kwargs: object
) -> dict[str, Any] | None:
    """Call a GET; None on 404; an :class:`AzureError` on anything else that fails."""
    try:
        return as_json(fn(*args, **kwargs))
    except HttpResponseError as error:
        if is_not_found(error):
            return None
        raise azure_error(error, doing) from None
    except (ServiceRequestError, ServiceResponseError) as error:
        raise _transport_error(error, doing) from None


def call(doing: str, fn: Callable[..., Any], *args: object, **kwargs: object) -> Any:  # noqa: ANN401
    """Call the SDK; translate failures into :class:`AzureError`."""
    try:
        return fn(*args, **kwargs)
    except HttpResponseError as error:
        raise azure_error(error, doing) from None
    except (ServiceRequestError, ServiceResponseError) as error:
        raise _transport_error(error, doing) from None


def list_json(doing: str, fn: Callable[..., Any], *args: object) -> list[dict[str, Any]]:
    """Every item of a list operation (all its pages) as JSON."""
    try:
        return [as_json(item) for item in fn(*args)]
    except HttpResponseError as error:
        raise azure_error(error, doing) from None
    except (ServiceRequestError, ServiceResponseError) as error:
        raise _transport_error(error, doing) from None


def wait(doing: str, begin: Callable[..., Any], *args: object, **kwargs: object) -> dict[str, Any]:
    """Start a long-running operation and wait for it; its result as JSON."""
    log.debug("%s", doing)
    poller = call(doing, begin, *args, **kwargs)
    return as_json(call(doing, poller.result))

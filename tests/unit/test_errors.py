"""Errors say whether running the same command again can help, and never promise more."""

from __future__ import annotations

import pytest
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.transport import HttpRequest, HttpResponse

from nixos_azure_publish.azure.clients import azure_error
from nixos_azure_publish.errors import (
    AzureError,
    ConfigError,
    ExitCode,
    ImageError,
    Interrupted,
    SasExpiredError,
    SmokeTestError,
    UploadError,
    worst_exit_code,
)


class _Response(HttpResponse):
    # A bare response of the status Azure answered; the SDK builds its error from it.
    def __init__(self, status: int) -> None:
        super().__init__(HttpRequest("PUT", "https://management.azure.com/x"), None)
        self.status_code = status
        self.reason = "x"

    def body(self) -> bytes:
        return b'{"error": {"code": "Code", "message": "Azure said no."}}'


@pytest.mark.parametrize(
    ("status", "helps", "promise"),
    [
        (400, False, False),
        (404, False, False),
        (409, False, False),
        (401, False, False),
        (429, True, False),
        (500, True, True),
        (503, True, True),
    ],
)
def test_azure_answers_say_whether_a_rerun_helps(status, helps, promise):
    error = azure_error(HttpResponseError(response=_Response(status)), "creating x")
    assert error.rerun_helps is helps
    assert ("resumes" in (error.hint or "")) is promise
    assert error.message == "creating x failed: Code: Azure said no."


def test_each_error_class_says_whether_a_rerun_helps():
    assert ConfigError(["a: b"]).rerun_helps is False
    assert ImageError("bad").rerun_helps is False
    assert SmokeTestError("no login").rerun_helps is False
    assert UploadError("reset").rerun_helps is True
    assert SasExpiredError("expired").rerun_helps is True
    assert Interrupted("interrupted").rerun_helps is True
    assert AzureError("x").rerun_helps is False
    assert AzureError("x", rerun_helps=True).rerun_helps is True


@pytest.mark.parametrize(
    ("codes", "worst"),
    [
        ([], ExitCode.OK),
        ([0, 0], ExitCode.OK),
        ([0, 7, 6], ExitCode.UPLOAD),
        ([7, 4, 6], ExitCode.AZURE),
        ([4, 3], ExitCode.INVALID_IMAGE),
        ([3, 5], ExitCode.NIX),
        ([5, 2, 4], ExitCode.USAGE),
        ([2, 130, 0], ExitCode.INTERRUPTED),
        ([130, 1], ExitCode.INTERNAL),
        ([0, 99], ExitCode.INTERNAL),  # an unknown code is a bug
    ],
)
def test_several_targets_exit_with_the_worst_code(codes, worst):
    assert worst_exit_code(codes) is worst

"""The one retry loop of a request: transient failures retried and counted, the rest raised."""

from __future__ import annotations

import random
import threading

import pytest

from nixos_azure_publish.errors import Interrupted, UploadError
from nixos_azure_publish.upload.retry import RetryPolicy, with_retries

POLICY = RetryPolicy(attempts=3, initial=0.0, maximum=0.0)


def _call(fn, *, stop=None, retries=None):
    return with_retries(
        fn,
        what="writing bytes 0-511",
        sas_url="https://a.blob.core.windows.net/c/b?sig=SECRET",
        policy=POLICY,
        stop=stop or threading.Event(),
        rng=random.Random(1),  # noqa: S311 - jitter
        hint="Check the network",
        on_retry=None if retries is None else (lambda: retries.append(1)),
    )


def test_a_transient_failure_is_retried_and_counted():
    answers = iter([ConnectionResetError("reset"), ConnectionResetError("reset"), "ok"])

    def fn():
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    retries: list[int] = []
    assert _call(fn, retries=retries) == "ok"
    assert len(retries) == 2


def test_transient_failures_past_the_policy_are_an_upload_error():
    def fn():
        raise ConnectionResetError("reset")

    with pytest.raises(UploadError) as caught:
        _call(fn)
    assert caught.value.message.startswith("writing bytes 0-511 failed 3 times; last: ")
    assert caught.value.hint == "Check the network"
    assert caught.value.rerun_helps is True
    assert "SECRET" not in caught.value.one_line()


def test_a_stop_is_an_interruption_before_any_request():
    stop = threading.Event()
    stop.set()
    with pytest.raises(Interrupted):
        _call(lambda: pytest.fail("must not be called"), stop=stop)

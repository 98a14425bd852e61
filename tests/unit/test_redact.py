"""Secrets never survive redaction, and ordinary text is left alone."""

from __future__ import annotations

import logging
import sys

import pytest

from nixos_azure_publish.redact import RedactingFilter, redact

SAS = (
    "https://md-abc.z1.blob.storage.azure.net/xyz/abcd?sv=2018-03-28&sr=b&si=1234"
    "&sig=Zm9vYmFyYmF6cXV4%2Bk%3D&se=2026-01-01T00%3A00%3A00Z"
)


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (SAS, "Zm9vYmFyYmF6cXV4%2Bk%3D"),
        ("url=http://127.0.0.1:1/devstoreaccount1/c/b?SIG=abc/def+g==&sp=rw", "abc/def+g=="),
        (
            "Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGciOi.eyJhdWQiOi.sig-part",
            "eyJ0eXAiOiJKV1Qi",
        ),
        ("{'Authorization': 'SharedKey devstoreaccount1:c2VjcmV0'}", "c2VjcmV0"),
        (
            "DefaultEndpointsProtocol=http;AccountName=a;AccountKey=S3cr3tKey==;BlobEndpoint=x",
            "S3cr3tKey==",
        ),
        ("SharedAccessSignature=sv=2020&sig=abc", "sig=abc"),
        ("?code=oauth-code-value&state=1", "oauth-code-value"),
    ],
)
def test_secrets_are_removed(text, secret):
    cleaned = redact(text)
    assert secret not in cleaned
    assert "REDACTED" in cleaned


def test_sas_url_keeps_its_shape():
    assert redact(SAS) == SAS.replace("Zm9vYmFyYmF6cXV4%2Bk%3D", "REDACTED")


@pytest.mark.parametrize(
    "text",
    [
        "created disk nixos-test-abc in westeurope",
        "design=signature&designer=x",  # keys that merely contain 'sig'
        "https://example.org/a?sv=2020&sr=b",
    ],
)
def test_plain_text_unchanged(text):
    assert redact(text) == text


def test_logging_filter_redacts_arguments_and_tracebacks():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "uploading to %s", (SAS,), None)
    assert RedactingFilter().filter(record)
    assert "Zm9vYmFy" not in record.getMessage()
    try:
        int(SAS)
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    RedactingFilter().filter(record)
    formatted = logging.Formatter().format(record)
    assert "ValueError" in formatted
    assert "Zm9vYmFy" not in formatted

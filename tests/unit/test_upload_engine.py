"""Pure parts of the upload engine: range arithmetic, zero detection, retries, errors, journal."""

from __future__ import annotations

import base64
import errno
import http.client
import os
import random
import ssl
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import requests
import urllib3
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

from nixos_azure_publish import state
from nixos_azure_publish.errors import SasExpiredError, UploadError, UsageError
from nixos_azure_publish.upload import journal, limits, progress, retry, transport
from nixos_azure_publish.upload.journal import Journal
from nixos_azure_publish.upload.ranges import clip_spans, merge_spans, split_span, subtract_spans
from nixos_azure_publish.upload.retry import RetryPolicy, classify
from nixos_azure_publish.upload.transport import BlobInfo

SAS = (
    "https://md-abc.z1.blob.storage.azure.net/xyz/abcd?sv=2018-03-28&sr=b"
    "&se={se}&sp=rw&sig=S3cr3tSignature%2Bvalue%3D"
)


def sas(expiry: datetime) -> str:
    return SAS.format(se=expiry.strftime("%Y-%m-%dT%H:%M:%SZ"))


def http_error(status: int, code: str = "", headers: dict[str, str] | None = None):
    # A stand-in for the SDK's HTTP response: only status, reason and headers are read.
    response = SimpleNamespace(
        status_code=status, reason="x", headers=headers or {}, text=lambda: "", request=None
    )
    error = HttpResponseError(message=f"status {status}", response=response)
    error.error_code = code  # type: ignore[attr-defined]
    return error


def test_merge_joins_overlapping_and_adjacent_spans():
    assert merge_spans([(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]) == [(0, 8), (10, 30)]


def test_clip_and_subtract():
    spans = [(0, 10), (20, 30), (40, 50)]
    assert clip_spans(spans, 5, 45) == [(5, 10), (20, 30), (40, 45)]
    assert clip_spans(spans, 10, 20) == []
    assert clip_spans(spans, 25, 26) == [(25, 26)]
    assert subtract_spans(spans, [(5, 25), (45, 60)]) == [(0, 5), (25, 30), (40, 45)]
    assert subtract_spans([(0, 100)], []) == [(0, 100)]


def test_subtract_agrees_with_sets_on_random_input():
    rng = random.Random(3)  # noqa: S311 - test data
    for _ in range(200):
        a = merge_spans((s, s + rng.randrange(1, 20)) for s in rng.sample(range(200), 8))
        b = merge_spans((s, s + rng.randrange(1, 20)) for s in rng.sample(range(200), 8))
        want = {x for s, e in a for x in range(s, e)} - {x for s, e in b for x in range(s, e)}
        got = subtract_spans(a, b)
        assert {x for s, e in got for x in range(s, e)} == want
        assert got == merge_spans(got)


def test_split_never_exceeds_the_put_page_limit():
    pieces = split_span((512, 512 + 9 * 1024 * 1024), limits.MAX_PAGE_WRITE)
    assert [e - s for s, e in pieces] == [4 << 20, 4 << 20, 1 << 20]
    assert pieces[0][0] == 512
    assert pieces[-1][1] == 512 + 9 * 1024 * 1024


def test_backoff_grows_is_jittered_bounded_and_honours_retry_after():
    policy = RetryPolicy(initial=1.0, maximum=8.0)
    rng = random.Random(1)  # noqa: S311 - jitter under test
    delays = [policy.delay(n, None, rng) for n in range(1, 8)]
    assert 0.5 <= delays[0] <= 1.0
    assert all(d <= 8.0 for d in delays)
    assert delays[5] >= 4.0
    assert policy.delay(1, 7.0, rng) == 7.0
    assert policy.delay(1, 1000.0, rng) == policy.max_retry_after


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status):
    verdict = classify(http_error(status, headers={"Retry-After": "3"}), what="w", sas_url=SAS)
    assert isinstance(verdict, retry.Transient)
    assert verdict.retry_after == 3.0


def test_a_feature_the_endpoint_lacks_is_permanent_although_500():
    # Azurite's strict mode answers a CRC64 header so; retrying cannot help.
    for error in (
        http_error(500, "FeatureNotSupported"),
        retry.PageWriteError(500, "FeatureNotSupported", "x-ms-content-crc64 is not supported", {}),
    ):
        verdict = classify(error, what="put page", sas_url=SAS)
        assert isinstance(verdict, UploadError), error
        assert "does not support the request" in str(verdict)
        assert "--checksum md5" in str(verdict)


def test_connection_errors_and_checksum_mismatches_are_transient():
    for error in (
        ServiceRequestError("connection reset"),
        ServiceResponseError("read timed out"),
        http_error(400, "Md5Mismatch"),
        http_error(400, "Crc64Mismatch"),
        http.client.RemoteDisconnected("Remote end closed connection without response"),
        http.client.IncompleteRead(b"", 10),
        ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
        BrokenPipeError(32, "Broken pipe"),
        TimeoutError("timed out"),
    ):
        assert isinstance(classify(error, what="w", sas_url=SAS), retry.Transient), error


def test_an_untrusted_certificate_is_fatal_however_deeply_it_is_wrapped():
    cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] self-signed")
    # As the SDK reports it: azure-core around requests around urllib3 around ssl.
    reason = urllib3.exceptions.SSLError(cause)
    retries = urllib3.exceptions.MaxRetryError(None, "/blob?sig=SECRET", reason)  # type: ignore[arg-type]
    outer = requests.exceptions.SSLError(retries)
    wrapped = ServiceRequestError(outer, error=outer)
    for error in (cause, reason, wrapped):
        verdict = classify(error, what="read blob properties", sas_url=SAS)
        assert isinstance(verdict, UploadError), error
        assert "TLS with https://md-abc.z1.blob.storage.azure.net/xyz/abcd failed" in str(verdict)
        assert "CERTIFICATE_VERIFY_FAILED" in str(verdict)
        assert "SECRET" not in str(verdict)


def test_a_tls_connection_cut_short_is_transient_however_it_is_wrapped():
    cause = ssl.SSLEOFError(8, "[SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred")
    reason = urllib3.exceptions.SSLError(cause)
    retries = urllib3.exceptions.MaxRetryError(None, "/blob", reason)  # type: ignore[arg-type]
    outer = requests.exceptions.SSLError(retries)
    for error in (reason, ServiceRequestError(outer, error=outer)):
        verdict = classify(error, what="list page ranges", sas_url=SAS)
        assert isinstance(verdict, retry.Transient), error


@pytest.mark.parametrize(
    "text",
    [
        "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)",
        "[X509: NO_CERTIFICATE_OR_CRL_FOUND] no certificate or crl found (_ssl.c:4020)",
    ],
)
def test_tls_errors_no_retry_can_mend_are_fatal(text):
    wrapped = ServiceRequestError(urllib3.exceptions.SSLError(ssl.SSLError(1, text)))
    verdict = classify(wrapped, what="read blob properties", sas_url=SAS)
    assert isinstance(verdict, UploadError)
    assert "speak TLS" in (verdict.hint or "")


def test_a_proxy_password_basic_auth_cannot_carry_is_refused(clean_proxy_env):
    clean_proxy_env.setenv("HTTPS_PROXY", "http://user:%E2%82%AC@127.0.0.1:3128")
    with pytest.raises(UsageError, match="Latin-1") as caught:
        page_writer()
    assert "\u20ac" not in str(caught.value)


def test_a_host_name_that_does_not_match_the_certificate_is_fatal():
    mismatch = urllib3.util.ssl_match_hostname.CertificateError("hostname 'a' doesn't match 'b'")
    verdict = classify(urllib3.exceptions.SSLError(mismatch), what="put page", sas_url=SAS)
    assert isinstance(verdict, UploadError)
    assert "doesn't match" in str(verdict)


def test_network_errors_on_an_open_socket_are_transient():
    for code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN):
        error = OSError(code, os.strerror(code))
        assert isinstance(classify(error, what="put page", sas_url=SAS), retry.Transient)
    assert isinstance(
        classify(OSError(errno.EACCES, "Permission denied"), what="put page", sas_url=SAS),
        UploadError,
    )


def test_a_proxy_that_refuses_connect_is_retried_on_5xx_and_fatal_on_407():
    busy = OSError("Tunnel connection failed: 503 Service Unavailable")
    assert isinstance(classify(busy, what="put page", sas_url=SAS), retry.Transient)
    auth = OSError("Tunnel connection failed: 407 Proxy Authentication Required")
    # As requests reports it for the SDK's own requests.
    proxy_error = requests.exceptions.ProxyError("Unable to connect to proxy", auth)
    for error in (auth, ServiceRequestError(proxy_error, error=proxy_error)):
        verdict = classify(error, what="put page", sas_url=SAS)
        assert isinstance(verdict, UploadError), error
        assert "the proxy refused to connect to https://md-abc" in str(verdict)
        assert "407 Proxy Authentication Required" in str(verdict)
        assert "user and password" in (verdict.hint or "")


def test_expired_sas_is_reported_as_expired_without_the_signature():
    url = sas(datetime.now(UTC) - timedelta(minutes=1))
    verdict = classify(
        http_error(403, "AuthenticationFailed"), what="put page bytes 0-511", sas_url=url
    )
    assert isinstance(verdict, SasExpiredError)
    assert "put page bytes 0-511" in verdict.message
    assert "expired at" in verdict.message
    assert "S3cr3t" not in str(verdict)


def test_refused_sas_and_missing_blob_are_fatal():
    url = sas(datetime.now(UTC) + timedelta(hours=1))
    refused = classify(http_error(403, "AuthenticationFailed"), what="w", sas_url=url)
    assert isinstance(refused, SasExpiredError)
    assert "refused" in refused.message
    read_only = classify(http_error(403, "AuthorizationPermissionMismatch"), what="w", sas_url=url)
    assert type(read_only) is UploadError
    missing = classify(http_error(404, "BlobNotFound"), what="w", sas_url=url)
    assert type(missing) is UploadError
    assert "does not exist" in missing.message
    assert "sig" not in missing.message


def test_display_url_and_expiry():
    when = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert retry.display_url(sas(when)) == "https://md-abc.z1.blob.storage.azure.net/xyz/abcd"
    assert retry.sas_expiry(sas(when)) == when
    assert retry.sas_expiry("https://h/p?sig=x") is None


def test_upload_result_json_has_exactly_the_documented_keys():
    result = progress.UploadResult(1, 2, 3, 4, 5, 6.0, verified=True)
    assert list(result.to_json()) == [
        "bytes_sent",
        "data_bytes",
        "ranges_sent",
        "ranges_skipped",
        "ranges_retried",
        "seconds",
        "verified",
    ]


def test_progress_line_reports_rate_and_eta():
    line = progress.progress_line(50 * 1024**2, 40 * 1024**2, 100 * 1024**2, 5.0)
    assert line == "uploaded 40.0 MiB; 50.0 of 100.0 MiB done (50%), 8.0 MiB/s, ETA 0:05"


def make_journal(tmp_path, image, created="2026-01-01T00:00:00+00:00"):
    blob = BlobInfo(size=image.stat().st_size, blob_type="PageBlob", created=created)
    return Journal.for_upload(tmp_path / "j", image=image, blob_url="https://h/c/b", blob=blob)


def recorded_journal(tmp_path):
    """A small image and its journal, which has recorded bytes 0-511 and been written."""
    image = tmp_path / "disk.vhd"
    image.write_bytes(b"x" * 1024)
    journal = make_journal(tmp_path, image)
    journal.record((0, 512))
    journal.flush()
    return image, journal


def test_journal_round_trips_and_is_keyed_by_file_and_blob(tmp_path):
    image = tmp_path / "disk.vhd"
    image.write_bytes(b"x" * 1024)
    journal = make_journal(tmp_path, image)
    journal.record((0, 4096))
    journal.record((8192, 9216))
    journal.flush()
    again = make_journal(tmp_path, image)
    assert (0, 4096) in again
    assert (8192, 9216) in again
    assert (0, 8192) not in again  # a different extent at the same offset
    # A recreated disk (new creation time) or a changed file starts afresh.
    assert len(make_journal(tmp_path, image, created="2026-01-02T00:00:00+00:00")) == 0
    image.write_bytes(b"y" * 2048)
    assert len(make_journal(tmp_path, image)) == 0


def test_journals_untouched_for_two_weeks_are_deleted_when_an_upload_starts(tmp_path):
    image, current = recorded_journal(tmp_path)
    assert current.path is not None
    directory = current.path.parent
    old = time.time() - journal.JOURNAL_MAX_AGE - 3600
    recent = time.time() - journal.JOURNAL_MAX_AGE + 3600
    files = {
        "stale": directory / f"{'a' * 32}.json",
        "stale-temp": directory / f".{'b' * 32}.json.x1y2z3.tmp",
        "fresh": directory / f"{'c' * 32}.json",
        "not-ours": directory / "notes.json",
        "not-ours-hex": directory / f"{'d' * 31}.json",
    }
    for path in files.values():
        path.write_text("{}", encoding="utf-8")
        os.utime(path, (old, old))
    os.utime(files["fresh"], (recent, recent))
    os.utime(current.path, (old, old))  # resumed after a long pause: still the one in use

    again = make_journal(tmp_path, image)

    assert (0, 512) in again
    assert current.path.exists()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [current.path.name] + [files[k].name for k in ("fresh", "not-ours", "not-ours-hex")]
    )


def test_pruning_journals_tolerates_a_missing_directory(tmp_path):
    assert journal.prune_journals(tmp_path / "none", keep=tmp_path / "none" / "x.json") == 0


def test_a_corrupt_journal_is_ignored(tmp_path, caplog):
    image, journal = recorded_journal(tmp_path)
    assert journal.path is not None
    journal.path.write_text('{"version": 1, "identity": ', encoding="utf-8")
    assert len(make_journal(tmp_path, image)) == 0
    assert "corrupt" in caplog.text


def page_writer(url: str = "https://acct.blob.core.windows.net/c/b?sv=1&sig=S3cr3t", **kw):
    options = {"connection_verify": True, "connection_timeout": 1.0, "read_timeout": 1.0} | kw
    return transport.PageWriter(url, api_version="2026-10-06", **options)


@pytest.fixture
def clean_proxy_env(monkeypatch):
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE"):
        for variant in (name, name.lower()):
            monkeypatch.delenv(variant, raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    return monkeypatch


def test_page_writes_trust_what_the_sdks_requests_trust(clean_proxy_env, tmp_path):
    # requests' default bundle, not OpenSSL's: the SDK's other requests use that one.
    assert page_writer()._tls["ca_certs"] == requests.utils.DEFAULT_CA_BUNDLE_PATH
    assert page_writer(connection_verify=str(tmp_path))._tls == {
        "cert_reqs": "CERT_REQUIRED",
        "ca_cert_dir": str(tmp_path),
    }
    clean_proxy_env.setenv("REQUESTS_CA_BUNDLE", "/etc/corp.pem")
    assert page_writer()._tls["ca_certs"] == "/etc/corp.pem"


def test_proxy_credentials_are_decoded_for_the_tunnel_and_plain_requests(clean_proxy_env):
    expected = "Basic " + base64.b64encode(b"user:p@ss").decode()
    clean_proxy_env.setenv("HTTPS_PROXY", "http://user:p%40ss@127.0.0.1:3128")
    conn = page_writer()._new_connection()
    assert conn._tunnel_headers["proxy-authorization"] == expected
    clean_proxy_env.setenv("HTTP_PROXY", "http://user:p%40ss@127.0.0.1:3128")
    plain = page_writer("http://127.0.0.1:10000/acct/c/b?sig=S3cr3t")
    assert plain._headers["proxy-authorization"] == expected
    assert plain._target.startswith("http://127.0.0.1:10000/acct/c/b?comp=page&")


def test_all_proxy_is_used_when_no_scheme_proxy_is_set(clean_proxy_env):
    clean_proxy_env.setenv("ALL_PROXY", "http://127.0.0.1:3129")
    writer = page_writer()
    assert writer._proxy is not None
    assert writer._proxy.port == 3129


@pytest.mark.parametrize(
    "proxy", ["socks5://user:hunter2@127.0.0.1:1080", "http://user:hunter2@[::1"]
)
def test_a_proxy_the_writer_cannot_use_is_refused_without_its_password(clean_proxy_env, proxy):
    clean_proxy_env.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(UsageError, match="not an http\\(s\\) proxy URL") as caught:
        page_writer()
    assert "hunter2" not in str(caught.value)


def test_a_journal_write_that_failed_is_tried_again_at_the_next_flush(tmp_path, monkeypatch):
    image = tmp_path / "disk.vhd"
    image.write_bytes(b"x" * 1024)
    journal = make_journal(tmp_path, image)
    journal.record((0, 512))
    real = state.write_json_atomic

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(state, "write_json_atomic", full_disk)
    journal.flush()
    monkeypatch.setattr(state, "write_json_atomic", real)
    journal.flush()
    assert (0, 512) in make_journal(tmp_path, image)

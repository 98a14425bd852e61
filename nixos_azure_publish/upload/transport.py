"""The transport: the storage protocol the engine depends on, and its implementation over HTTP(S).

:class:`PageBlobApi` is all the engine needs (properties, page ranges, page
writes, clears, reads). :class:`SdkPageBlob` implements it from a SAS URL with
azure-storage-blob for the rare calls and :class:`PageWriter`, a lean writer on
urllib3 connections, for page writes; both honour the environment's proxy and
CA bundle settings as requests does.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
import urllib3
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import BlobClient

from nixos_azure_publish import __version__
from nixos_azure_publish import checksum as checksums
from nixos_azure_publish.errors import (
    UsageError,
)
from nixos_azure_publish.redact import protect_third_party_logs
from nixos_azure_publish.upload.limits import DEFAULT_CONCURRENCY
from nixos_azure_publish.upload.retry import FEATURE_NOT_SUPPORTED, PageWriteError, display_url

if TYPE_CHECKING:
    from nixos_azure_publish.vhd.scan import Span

log = logging.getLogger(__name__)

Checksum = checksums.Checksum
Data = bytes | bytearray | memoryview
"""Bytes to write: the engine passes views into its piece buffers."""


@dataclass(frozen=True)
class BlobInfo:
    """What the engine needs to know about the destination blob."""

    size: int
    blob_type: str
    created: str


class PageBlobApi(Protocol):
    """The narrow storage protocol the engine depends on (one call = one request)."""

    def properties(self) -> BlobInfo: ...

    def page_ranges(self, start: int, end: int) -> list[Span]: ...

    @property
    def checksum_kind(self) -> checksums.Kind | None:
        """The checksum :meth:`put_pages` sends with each write, if any."""

    def put_pages(self, offset: int, data: Data, checksum: tuple[str, str] | None = None) -> None:
        """Write *data* at *offset*. *checksum* is the header carrying its checksum of
        :attr:`checksum_kind`, when the caller has computed it; else it is computed here."""

    def clear_pages(self, start: int, end: int) -> None: ...

    def read(self, start: int, end: int) -> bytes: ...


def _pooled_transport(*, pool_size: int, **kwargs: Any) -> Any:  # noqa: ANN401 - untyped requests
    """The SDK's requests transport with a connection pool as large as the worker pool.

    requests keeps 10 connections per host by default; more workers than that
    would open and drop a connection per request.
    """
    transport = RequestsTransport(**kwargs)
    transport.open()
    for prefix in ("http://", "https://"):
        transport.session.get_adapter(prefix).init_poolmanager(1, pool_size)
    return transport


_XML_MESSAGE = re.compile(rb"<Message>(.*?)</Message>", re.DOTALL)


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy the environment asks for (``HTTPS_PROXY``, else ``ALL_PROXY``, minus
    ``NO_PROXY``), as requests chooses it for the SDK's own requests."""
    if urllib.request.proxy_bypass(host):
        return None
    proxies = urllib.request.getproxies_environment()
    return proxies.get(scheme) or proxies.get("all")


def _parse_proxy(proxy: str | None) -> urllib3.util.Url | None:
    if not proxy:
        return None
    try:
        url = urllib3.util.parse_url(proxy if "://" in proxy else f"http://{proxy}")
    except urllib3.exceptions.LocationParseError:
        url = None  # its message would show the proxy's password
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UsageError(
            "the proxy in HTTPS_PROXY, HTTP_PROXY or ALL_PROXY is not an http(s) proxy URL",
            hint="Set it to http://host:port (or http://user:password@host:port)",
        )
    return url


def _trusted_certificates(*, connection_verify: bool | str) -> dict[str, str]:
    """The CA bundle options, as requests chooses them for the SDK's own requests: the
    file or directory asked for, else REQUESTS_CA_BUNDLE or CURL_CA_BUNDLE, else
    requests' default bundle (certifi's)."""
    bundle = (
        connection_verify
        if isinstance(connection_verify, str)
        else os.environ.get("REQUESTS_CA_BUNDLE")
        or os.environ.get("CURL_CA_BUNDLE")
        or requests.utils.DEFAULT_CA_BUNDLE_PATH
    )
    return {"ca_cert_dir": bundle} if Path(bundle).is_dir() else {"ca_certs": bundle}


class PageWriter:
    """Put Page and clear requests over keep-alive connections, one per worker at a time.

    The hot path of an upload, measured per request here: the SDK's pipeline
    costs about 1 ms of CPU, a urllib3 ``PoolManager`` 0.38 ms (most of it
    parsing and re-encoding the long SAS URL every time), a urllib3 connection
    used directly 0.22 ms. So the writer keeps its own small stack of urllib3
    connections (TLS, certificate checks and proxy tunnels stay urllib3's) and
    builds the request target once. The requests are exactly the SDK's: the
    same API version, headers and checksum.
    """

    def __init__(
        self,
        sas_url: str,
        *,
        api_version: str,
        connection_verify: bool | str,
        connection_timeout: float,
        read_timeout: float,
    ) -> None:
        parts = urlsplit(sas_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) blob URL: {display_url(sas_url)}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._https else 80)
        self._target = urlunsplit(("", "", parts.path, "comp=page&" + parts.query, ""))
        self._headers = {
            "x-ms-version": api_version,
            "User-Agent": f"nixos-azure-publish/{__version__}",
        }
        self._connect_timeout = connection_timeout
        self._read_timeout = read_timeout
        self._tls: dict[str, Any] = {}
        if self._https:
            if connection_verify is False:
                self._tls["cert_reqs"] = "CERT_NONE"
            else:
                self._tls["cert_reqs"] = "CERT_REQUIRED"
                self._tls.update(_trusted_certificates(connection_verify=connection_verify))
        self._proxy = _parse_proxy(_proxy_for(parts.scheme, self._host))
        self._proxy_auth: dict[str, str] = {}
        if self._proxy is not None and self._proxy.auth:
            # Percent-decoded, as requests does for the SDK's own requests.
            user, _, password = self._proxy.auth.partition(":")
            try:
                self._proxy_auth = urllib3.util.make_headers(
                    proxy_basic_auth=f"{unquote(user)}:{unquote(password)}"
                )
            except UnicodeError:
                raise UsageError(
                    "the proxy's user name or password has characters HTTP basic "
                    "authentication cannot carry (only Latin-1)",
                    hint="Use a Latin-1 user name and password for the proxy",
                ) from None
        if self._proxy is not None and not self._https:
            # A plain-HTTP request through a proxy names the whole URL (RFC 9112, 3.2.2),
            # and carries the proxy's credentials itself.
            self._target = urlunsplit((parts.scheme, parts.netloc, *urlsplit(self._target)[2:]))
            self._headers.update(self._proxy_auth)
        self._idle: list[urllib3.connection.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def put(self, offset: int, data: Data, checksum: tuple[str, str] | None) -> None:
        headers = {
            **self._headers,
            "x-ms-page-write": "update",
            "x-ms-range": f"bytes={offset}-{offset + len(data) - 1}",
        }
        if checksum is not None:
            headers[checksum[0]] = checksum[1]
        self._send(headers, data)

    def clear(self, start: int, end: int) -> None:
        headers = {
            **self._headers,
            "x-ms-page-write": "clear",
            "x-ms-range": f"bytes={start}-{end - 1}",
        }
        self._send(headers, b"")

    def _connection(self) -> urllib3.connection.HTTPConnection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is not None:
            if conn.sock is not None and conn.is_connected:
                return conn
            # Closed by the server while idle, or after its last response. A closed urllib3
            # connection forgets its proxy tunnel, so it is replaced, never reopened.
            conn.close()
        return self._new_connection()

    def _new_connection(self) -> urllib3.connection.HTTPConnection:
        host, port = self._host, self._port
        options: dict[str, Any] = {"timeout": self._connect_timeout}
        if self._proxy is not None:
            default = 443 if self._proxy.scheme == "https" else 80
            host, port = self._proxy.host or "", self._proxy.port or default
            options["proxy"] = self._proxy
            options["proxy_config"] = urllib3.connection.ProxyConfig(None, False, None, None)  # noqa: FBT003 - a named tuple
        if not self._https:
            return urllib3.connection.HTTPConnection(host, port, **options)
        conn = urllib3.connection.HTTPSConnection(host, port, **options, **self._tls)
        if self._proxy is not None:
            conn.set_tunnel(
                self._host,
                self._port,
                headers=self._proxy_auth or None,
                scheme=self._proxy.scheme or "http",
            )
        return conn

    def _send(self, headers: dict[str, str], body: Data) -> None:
        conn = self._connection()
        try:
            conn.timeout = self._connect_timeout
            # urllib3 sends any buffer as it is, in one piece (its annotation says bytes).
            conn.request("PUT", self._target, body=cast("bytes", body), headers=headers)
            conn.timeout = self._read_timeout
            response = conn.getresponse()
        except BaseException:
            conn.close()  # half a request may be on the wire: never reuse it
            raise
        with self._lock:
            if self._closed:
                conn.close()
            else:
                self._idle.append(conn)
        if 200 <= response.status < 300:  # noqa: PLR2004
            return
        match = _XML_MESSAGE.search(response.data or b"")
        message = match.group(1).decode(errors="replace").strip().splitlines()[0] if match else ""
        raise PageWriteError(
            response.status,
            response.headers.get("x-ms-error-code", ""),
            message or response.reason or "",
            response.headers,
        )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class SdkPageBlob:
    """:class:`PageBlobApi` from a SAS URL only: azure-storage-blob's ``BlobClient``
    for properties, page ranges and reads, :class:`PageWriter` for page writes.

    Retries are off in both: the engine retries per range, with its own
    accounting. Only page operations are used: nothing that creates, resizes
    or deletes the blob.
    """

    def __init__(
        self,
        sas_url: str,
        *,
        pool_size: int = DEFAULT_CONCURRENCY,
        connection_verify: bool | str = True,
        connection_timeout: float = 20.0,
        read_timeout: float = 60.0,
        checksum: Checksum = "auto",
    ) -> None:
        protect_third_party_logs()
        self._validate = checksums.resolve(checksum)
        self._switch = threading.Lock()
        transport = _pooled_transport(
            pool_size=pool_size + 2,
            connection_verify=connection_verify,
            connection_timeout=connection_timeout,
            read_timeout=read_timeout,
        )
        try:
            self.client = BlobClient.from_blob_url(sas_url, transport=transport, retry_total=0)
            self._writer = PageWriter(
                sas_url,
                api_version=self.client.api_version,
                connection_verify=connection_verify,
                connection_timeout=connection_timeout,
                read_timeout=read_timeout,
            )
        except BaseException:
            transport.close()
            raise

    @property
    def checksum_kind(self) -> checksums.Kind | None:
        return self._validate

    def properties(self) -> BlobInfo:
        props = self.client.get_blob_properties()
        created = props.creation_time.isoformat() if props.creation_time else ""
        blob_type = getattr(props.blob_type, "value", props.blob_type)
        return BlobInfo(size=int(props.size or 0), blob_type=str(blob_type), created=created)

    def page_ranges(self, start: int, end: int) -> list[Span]:
        pages = self.client.list_page_ranges(offset=start, length=end - start)
        return [(r.start or 0, (r.end or 0) + 1) for r in pages if not r.cleared]

    def put_pages(self, offset: int, data: Data, checksum: tuple[str, str] | None = None) -> None:
        kind = self._validate
        if checksum is not None and checksum[0] != checksums.header_name(kind):
            checksum = None  # computed before the switch to MD5 below
        if checksum is None and kind is not None:
            checksum = checksums.header(kind, data)
        try:
            self._writer.put(offset, data, checksum)
        except PageWriteError as error:
            if kind != "crc64" or error.error_code != FEATURE_NOT_SUPPORTED:
                raise
            self._fall_back_to_md5()
            self._writer.put(offset, data, checksums.header("md5", data))

    def _fall_back_to_md5(self) -> None:
        """The endpoint refused CRC64 (Azurite's strict mode): use Content-MD5 from now on."""
        with self._switch:
            if self._validate != "crc64":
                return
            self._validate = "md5"
        log.warning(
            "the storage endpoint does not support CRC64 checksums (500 FeatureNotSupported); "
            "checking each page write with Content-MD5 instead"
        )

    def clear_pages(self, start: int, end: int) -> None:
        self._writer.clear(start, end)

    def read(self, start: int, end: int) -> bytes:
        return self.client.download_blob(offset=start, length=end - start).readall()

    def close(self) -> None:
        self._writer.close()
        self.client.close()

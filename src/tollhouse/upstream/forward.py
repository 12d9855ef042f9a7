"""Forwarding to the upstream with aiohttp: one keep-alive pool, bodies streamed both ways.

aiohttp is driven as a transparent client: the path and query go out byte for byte
(``yarl.URL(..., encoded=True)``); it adds no header the client did not send
(``skip_auto_headers``) beyond ``Host`` and the body's framing; it does not decompress,
follow redirects or keep cookies (those are the client's business, and cookies would
leak between tenants). Its transport errors are mapped to tollhouse's own exceptions
in exactly one table, ``TRANSPORT_ERRORS``; ``errors`` turns those into HTTP answers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from tollhouse.api.errors import ErrorResponse, TollhouseError

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

# RFC 9110 §7.6.1 hop-by-hop fields, plus the ones a proxy always sets itself.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
    }
)
# Headers aiohttp would add on its own; the upstream must see only the client's.
AUTO_HEADERS = ("Accept", "Accept-Encoding", "Content-Type", "User-Agent")


class UpstreamError(TollhouseError):
    """The upstream could not be reached or did not answer properly."""

    status = 502
    what = "failed"
    code = "upstream_error"

    def __init__(self, upstream: str, detail: str) -> None:
        super().__init__(f"{upstream}: {detail}")
        self.upstream = upstream
        self.detail = detail

    def response(self) -> ErrorResponse:
        """The answer to the client, and a log line with the details under its request id."""
        # The upstream's address, the egress proxy's and TLS details are the operator's,
        # not the tenant's: they go to the log, the tenant gets what happened and an id
        # to find them by (the openai client shows it as the error's request_id).
        request_id = f"req_{secrets.token_hex(16)}"
        log.warning("answered %d to request %s: %s", self.status, request_id, self)
        return ErrorResponse(
            status=self.status,
            message=f"tollhouse could not get an answer from the upstream API: {self.what}. "
            "Try again in a moment; if it keeps failing, give tollhouse's operator the "
            f"request id {request_id}, under which its log has the cause.",
            type="server_error",
            code=self.code,
            headers=[(b"x-request-id", request_id.encode())],
        )


class UpstreamUnavailable(UpstreamError):
    what = "connection failed"
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamError):
    status = 504
    what = "timed out"
    code = "upstream_timeout"


class UpstreamProtocolError(UpstreamError):
    what = "invalid HTTP response"
    code = "upstream_protocol_error"


class HandshakeRefused(UpstreamError):
    """The upstream answered a WebSocket handshake with an HTTP error status."""

    code = "upstream_refused_websocket"

    def __init__(self, upstream: str, status: int) -> None:
        super().__init__(upstream, f"WebSocket handshake answered with HTTP {status}")
        self.status = status  # the client is answered with the upstream's own status
        self.what = f"it refused the WebSocket handshake with HTTP {status}"


# Every exception class aiohttp's client raises, each with its own row (a new class in a
# new aiohttp fails the test until it gets one). The first matching row wins, so a class
# comes before its bases.
TRANSPORT_ERRORS: tuple[tuple[type[aiohttp.ClientError], type[UpstreamError]], ...] = (
    # the connect timeout: opening a connection (TLS and proxy included) or waiting for one
    (aiohttp.ConnectionTimeoutError, UpstreamTimeout),
    # the read timeout: the upstream said nothing for that long
    (aiohttp.SocketTimeoutError, UpstreamTimeout),
    (aiohttp.ServerTimeoutError, UpstreamTimeout),
    # no connection: refused, unreachable, no such name, TLS handshake, the proxy
    (aiohttp.ClientConnectorCertificateError, UpstreamUnavailable),
    (aiohttp.ClientConnectorSSLError, UpstreamUnavailable),
    (aiohttp.ClientSSLError, UpstreamUnavailable),
    (aiohttp.ClientConnectorDNSError, UpstreamUnavailable),
    (aiohttp.ClientProxyConnectionError, UpstreamUnavailable),
    (aiohttp.ClientConnectorError, UpstreamUnavailable),
    (aiohttp.ClientHttpProxyError, UpstreamUnavailable),  # the proxy refused the tunnel
    (aiohttp.ServerFingerprintMismatch, UpstreamUnavailable),
    # the connection broke before the answer's head was complete
    (aiohttp.ServerDisconnectedError, UpstreamUnavailable),
    (aiohttp.ClientConnectionResetError, UpstreamUnavailable),
    (aiohttp.ClientOSError, UpstreamUnavailable),
    (aiohttp.ServerConnectionError, UpstreamUnavailable),
    (aiohttp.ClientConnectionError, UpstreamUnavailable),
    # an answer that is not HTTP: a bad head, a header past the limit, a body cut short
    (aiohttp.ClientPayloadError, UpstreamProtocolError),
    (aiohttp.ContentTypeError, UpstreamProtocolError),
    (aiohttp.WSServerHandshakeError, UpstreamProtocolError),
    (aiohttp.TooManyRedirects, UpstreamProtocolError),
    (aiohttp.ClientResponseError, UpstreamProtocolError),
    # a request tollhouse could not make (redirects are never followed, URLs are its own)
    (aiohttp.InvalidUrlRedirectClientError, UpstreamError),
    (aiohttp.NonHttpUrlRedirectClientError, UpstreamError),
    (aiohttp.RedirectClientError, UpstreamError),
    (aiohttp.InvalidUrlClientError, UpstreamError),
    (aiohttp.NonHttpUrlClientError, UpstreamError),
    (aiohttp.InvalidURL, UpstreamError),
    (aiohttp.UploadAbortedError, UpstreamError),
    (aiohttp.ClientError, UpstreamError),
)


class _TransportErrors:
    """``map_transport_errors``'s context manager: a class, as it wraps every request."""

    __slots__ = ("upstream",)

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc, aiohttp.ClientError):
            for source, target in TRANSPORT_ERRORS:
                if isinstance(exc, source):
                    raise target(self.upstream, str(exc) or type(exc).__name__) from exc


def map_transport_errors(upstream: str) -> AbstractContextManager[None]:
    """Within it, aiohttp's errors become ``UpstreamError``s naming ``upstream``."""
    return _TransportErrors(upstream)


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The request or response headers a proxy passes on: all but hop-by-hop ones."""
    kept: Headers = []
    named: set[bytes] = set()
    for name, value in headers:
        folded = name.lower()
        if folded in HOP_BY_HOP:
            if folded == b"connection":
                named.update(token.strip().lower() for token in value.split(b","))
        else:
            kept.append((name, value))
    if named:  # the fields a Connection header names are hop-by-hop too
        kept = [(name, value) for name, value in kept if name.lower() not in named]
    return kept


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    url: str
    connect_timeout: float = 5.0  # to open a connection, or to wait for a free one
    read_timeout: float = 600.0  # the longest silence of the upstream once a request is sent
    max_connections: int = 1000
    idle_timeout: float = 15.0  # an idle pooled connection older than this is closed
    max_header_bytes: int = 16384  # the longest status line or header line of an answer
    proxy: str | None = None  # None: HTTPS_PROXY / HTTP_PROXY / NO_PROXY from the environment
    ca_bundle: Path | None = None  # the CAs trusted for the upstream, in place of the system's
    client_cert: Path | None = None  # PEM; the key too, unless client_key names it
    client_key: Path | None = None


class UpstreamConfigError(ValueError):
    """Upstream settings tollhouse cannot start with; the message says which and why."""


def tls_context(settings: UpstreamSettings) -> ssl.SSLContext | None:
    """The TLS settings for the upstream; None for aiohttp's default (the system's CAs)."""
    if settings.client_key is not None and settings.client_cert is None:
        raise UpstreamConfigError("an upstream client key was given without its certificate")
    if settings.ca_bundle is None and settings.client_cert is None:
        return None
    cafile = str(settings.ca_bundle) if settings.ca_bundle is not None else None
    try:
        context = ssl.create_default_context(cafile=cafile)
    except (ssl.SSLError, OSError) as exc:
        raise UpstreamConfigError(
            f"the upstream CA bundle {cafile} cannot be used: {exc}"
        ) from None
    if settings.client_cert is not None:
        try:
            context.load_cert_chain(settings.client_cert, settings.client_key)
        except (ssl.SSLError, OSError) as exc:
            raise UpstreamConfigError(
                f"the upstream client certificate {settings.client_cert} (and key) cannot be "
                f"used: {exc}"
            ) from None
    return context


def egress_proxy(settings: UpstreamSettings) -> str | None:
    """The proxy requests go through: the setting, else the environment's for the upstream.

    The environment is read as aiohttp's ``trust_env`` and the standard library read
    it (``HTTPS_PROXY`` or ``HTTP_PROXY`` by the upstream's scheme, ``NO_PROXY``), but
    once, at start-up: ``trust_env`` looks it up in a worker thread on every request, and
    would add ``.netrc`` credentials to requests the client sent without any.
    """
    if settings.proxy:
        return settings.proxy
    parts = urlsplit(settings.url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or (parts.hostname and urllib.request.proxy_bypass(parts.hostname)):
        return None
    return proxy


def _text(value: bytes) -> str:
    """Bytes of the head as aiohttp takes them: it writes them back out as UTF-8."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:  # not UTF-8: the best a str-based client can do
        return value.decode("latin-1")


def _text_headers(headers: Headers) -> list[tuple[str, str]]:
    try:  # the usual case in one go, every name and value UTF-8 (ASCII, mostly)
        return [(name.decode(), value.decode()) for name, value in headers]
    except UnicodeDecodeError:
        return [(_text(name), _text(value)) for name, value in headers]


async def _watched(body: AsyncIterator[bytes], failed: list[BaseException]) -> AsyncIterator[bytes]:
    """The request body, remembering why its source failed (aiohttp reports a broken pipe)."""
    try:
        async for chunk in body:
            yield chunk
    except Exception as exc:
        failed.append(exc)
        raise


class UpstreamResponse:
    """A response whose head arrived; its body is read as it comes."""

    __slots__ = ("_errors", "_media", "_response", "content_length", "headers", "status")

    def __init__(self, response: aiohttp.ClientResponse, errors: _TransportErrors) -> None:
        self._response = response
        self._errors = errors
        self.status = response.status
        # forwarded_headers() and the framing in one pass: this runs for every response
        kept: Headers = []
        named: set[bytes] = set()
        length: int | None = None
        chunked = False
        self._media = b""
        for item in response.raw_headers:
            name, value = item
            folded = name.lower()
            if folded in HOP_BY_HOP:
                if folded == b"connection":
                    named.update(token.strip().lower() for token in value.split(b","))
                elif folded == b"transfer-encoding":
                    chunked = value.rstrip().lower().endswith(b"chunked")
                continue
            if folded == b"content-length":
                length = int(value)
            elif folded == b"content-type":
                self._media = value
            kept.append(item)  # aiohttp's own tuple: fewer objects per request for the GC
        if named:  # the fields a Connection header names are hop-by-hop too
            kept = [(name, value) for name, value in kept if name.lower() not in named]
        self.headers: Headers = kept
        self.content_length = None if chunked else length

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (``application/json``)."""
        media = self._media.split(b";", 1)[0].strip().lower()
        return media.decode("latin-1") or "application/octet-stream"

    async def read(self) -> bytes:
        with self._errors:
            return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, each chunk as soon as it is there (SSE events at once)."""
        with self._errors:
            async for chunk in self._response.content.iter_any():
                yield chunk

    def close(self) -> None:
        """Give the connection back if the body was received in full, else drop it."""
        self._response.close()


class Forwarder:
    """Sends requests to the upstream over one pool of keep-alive connections."""

    def __init__(self, settings: UpstreamSettings) -> None:
        base = settings.url.rstrip("/")
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamConfigError(f"the upstream must be an http(s) URL, not {base!r}")
        # The upstream is named like the openai client's base_url (".../v1"); requests
        # arrive with their full "/v1/..." path.
        self._prefix = parts.path.rstrip("/").removesuffix("/v1")
        # Azure OpenAI's "/openai/..." paths start at the resource's root, also when the
        # upstream is named by its v1 base URL (".../openai/v1", which tollhouse's own
        # requests use).
        self._root = self._prefix.removesuffix("/openai")
        self._origin = str(URL(base).origin())
        self._name = base
        self._errors = _TransportErrors(base)  # stateless: one for every request
        self._settings = settings
        # Read now, so that a bad CA bundle or key stops tollhouse at start-up.
        self._tls = tls_context(settings)
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        settings = self._settings
        connector = aiohttp.TCPConnector(
            limit=settings.max_connections,
            keepalive_timeout=settings.idle_timeout,
            ssl=self._tls if self._tls is not None else True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
            ),
            proxy=egress_proxy(settings),
            skip_auto_headers=AUTO_HEADERS,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            max_line_size=settings.max_header_bytes,
            max_field_size=settings.max_header_bytes,
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target(self, raw_path: str, query: str) -> str:
        """The URL a request for ``raw_path?query`` goes to."""
        if not raw_path.isascii():  # raw bytes, as latin-1: aiohttp sends the path as UTF-8
            raw_path = _text(raw_path.encode("latin-1"))
        prefix = self._root if raw_path.startswith("/openai/") else self._prefix
        return f"{self._origin}{prefix}{raw_path}" + (f"?{query}" if query else "")

    async def send(
        self,
        method: str,
        raw_path: str,
        query: str,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        """Send a request; returns once the response's head has arrived.

        A bytes body goes out with its length; a streamed one chunked, unless the
        headers give its length. If the body's source fails (the client went away),
        its exception is raised, not an ``UpstreamError``.
        """
        session = self._session
        assert session is not None, "Forwarder.open() was not awaited"
        failed: list[BaseException] | None = None
        if body is None or isinstance(body, bytes):
            data: bytes | AsyncIterator[bytes] | None = body
        else:
            failed = []
            data = _watched(body, failed)
        try:
            with self._errors:
                response = await session.request(
                    method,
                    URL(self.target(raw_path, query), encoded=True),
                    headers=_text_headers(headers),
                    data=data,
                    allow_redirects=False,
                )
        except UpstreamError:
            if failed:
                raise failed[0] from None
            raise
        return UpstreamResponse(response, self._errors)

    async def websocket(
        self, raw_path: str, query: str, headers: Headers, protocols: tuple[str, ...] = ()
    ) -> aiohttp.ClientWebSocketResponse:
        """Open a WebSocket to the upstream: the same URL, TLS, proxy and timeouts as a request.

        The handshake's own fields (``Upgrade``, ``Sec-WebSocket-*``) are aiohttp's, never
        the client's. An upstream that answers the handshake with an HTTP status raises
        ``HandshakeRefused`` with it; messages are read and written whole, pings answered.
        """
        session = self._session
        assert session is not None, "Forwarder.open() was not awaited"
        kept = [(k, v) for k, v in headers if not k.lower().startswith(b"sec-websocket-")]
        with self._errors:
            try:
                return await session.ws_connect(
                    URL(self.target(raw_path, query), encoded=True),
                    headers=_text_headers(kept),
                    protocols=protocols,
                    autoclose=False,
                    max_msg_size=0,  # the upstream's events are relayed whole, whatever size
                )
            except aiohttp.WSServerHandshakeError as exc:
                if exc.status < 400:
                    raise
                raise HandshakeRefused(self._name, exc.status) from exc

    async def fetch(
        self, method: str, raw_path: str, query: str, api_key: str, within: float = 30.0
    ) -> tuple[int, bytes]:
        """A request of tollhouse's own (collector, cleaner): its status and whole body.

        Sent with the upstream key, and the Assistants beta header where the API wants it.
        """
        headers = [
            (b"authorization", b"Bearer " + api_key.encode()),
            (b"accept", b"application/json"),
        ]
        if not raw_path.startswith("/v1/files"):
            headers.append((b"openai-beta", b"assistants=v2"))
        try:
            async with asyncio.timeout(within):
                response = await self.send(method, raw_path, query, headers, None)
                try:
                    return response.status, await response.read()
                finally:
                    response.close()
        except TimeoutError:
            raise UpstreamTimeout(
                self._name, f"{method} {raw_path}: no answer in {within:g}s"
            ) from None


def json_object(body: bytes) -> dict[str, Any]:
    """A JSON object body, or {} for anything else (an error page, a list, garbage)."""
    try:
        data = json.loads(body)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}

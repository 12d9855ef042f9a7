"""The upstream HTTP client: one pooled aiohttp session, bodies streamed both ways.

Transport failures are mapped to tollhouse's own exceptions in exactly one
place, ``map_transport_errors``; ``errors`` turns those into HTTP answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import aiohttp
from yarl import URL

from tollhouse.errors import ErrorResponse, TollhouseError

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
# aiohttp adds these when a request lacks them; a transparent proxy must not.
_SKIP_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class UpstreamError(TollhouseError):
    """The upstream could not be reached or did not answer properly."""

    status = 502
    what = "failed"

    def __init__(self, upstream: str, detail: str) -> None:
        super().__init__(f"{upstream}: {detail}")
        self.upstream = upstream
        self.detail = detail

    def response(self) -> ErrorResponse:
        return ErrorResponse(
            status=self.status,
            message=f"tollhouse could not get an answer from the upstream API at "
            f"{self.upstream}: {self.what} ({self.detail}).",
            type="server_error",
            code=self.code,
        )

    code = "upstream_error"


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


# Checked in order: the first matching class wins (subclasses before their bases).
TRANSPORT_ERRORS: tuple[tuple[type[BaseException], type[UpstreamError]], ...] = (
    (asyncio.TimeoutError, UpstreamTimeout),
    (aiohttp.ServerTimeoutError, UpstreamTimeout),
    (aiohttp.ClientConnectorError, UpstreamUnavailable),
    (aiohttp.ServerDisconnectedError, UpstreamUnavailable),
    (aiohttp.ClientOSError, UpstreamUnavailable),
    (aiohttp.ClientPayloadError, UpstreamProtocolError),
    (aiohttp.ClientResponseError, UpstreamProtocolError),
    (aiohttp.InvalidURL, UpstreamUnavailable),
    (aiohttp.ClientError, UpstreamError),
)


@contextmanager
def map_transport_errors(upstream: str) -> Iterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ClientError) as exc:
        for source, target in TRANSPORT_ERRORS:
            if isinstance(exc, source):
                raise target(upstream, str(exc) or type(exc).__name__) from exc
        raise  # unreachable: ClientError is the last row


def forwarded_headers(headers: Headers) -> Headers:
    """The request or response headers a proxy passes on: all but hop-by-hop ones."""
    named = {
        token.strip().lower()
        for name, value in headers
        if name.lower() == b"connection"
        for token in value.split(b",")
    }
    drop = HOP_BY_HOP | named if named else HOP_BY_HOP
    return [(name, value) for name, value in headers if name.lower() not in drop]


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    url: str
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    max_connections: int = 1000


class UpstreamResponse:
    """A response whose headers arrived; its body is read as it comes."""

    def __init__(self, response: aiohttp.ClientResponse, upstream: str) -> None:
        self._response = response
        self._upstream = upstream
        self.status = response.status
        self.headers: Headers = forwarded_headers(list(response.raw_headers))
        self.content_length = response.content_length
        self.content_type = response.content_type

    async def read(self) -> bytes:
        with map_transport_errors(self._upstream):
            return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        with map_transport_errors(self._upstream):
            async for chunk in self._response.content.iter_any():
                yield chunk

    def close(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # the connection goes back to the pool
        else:
            self._response.close()  # unread bytes: drop the connection


class Forwarder:
    """Sends requests to the upstream over one pooled connection set."""

    def __init__(self, settings: UpstreamSettings) -> None:
        base = URL(settings.url.rstrip("/"))
        # The upstream is named like the openai client's base_url (".../v1"); requests
        # arrive with their full "/v1/..." path.
        prefix = base.path.rstrip("/").removesuffix("/v1")
        self._origin = str(base.with_path(prefix or "/")).rstrip("/")
        self._name = str(base)
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=settings.connect_timeout, sock_read=settings.read_timeout
        )
        self._max_connections = settings.max_connections
        self._session: aiohttp.ClientSession | None = None

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def target(self, raw_path: str, query: str) -> URL:
        return URL(self._origin + raw_path + ("?" + query if query else ""), encoded=True)

    async def send(
        self,
        method: str,
        raw_path: str,
        query: str,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        assert self._session is not None, "Forwarder.open() was not awaited"
        with map_transport_errors(self._name):
            response = await self._session.request(
                method,
                self.target(raw_path, query),
                headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
                data=body,
                allow_redirects=False,
                compress=None,
            )
        return UpstreamResponse(response, self._name)

"""Forwarding to the upstream: one keep-alive connection pool, bodies streamed both ways.

Transport failures are mapped to tollhouse's own exceptions in exactly one
place, ``map_transport_errors``; ``errors`` turns those into HTTP answers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tollhouse import upstream_client as http
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


# One row per exception class the client raises; the first matching row wins.
TRANSPORT_ERRORS: tuple[tuple[type[http.HTTPClientError], type[UpstreamError]], ...] = (
    (http.ConnectError, UpstreamUnavailable),
    (http.ServerDisconnected, UpstreamUnavailable),
    (http.ConnectTimeout, UpstreamTimeout),
    (http.PoolTimeout, UpstreamTimeout),
    (http.ReadTimeout, UpstreamTimeout),
    (http.IncompleteResponse, UpstreamProtocolError),
    (http.RemoteProtocolError, UpstreamProtocolError),
    (http.LocalProtocolError, UpstreamError),
    (http.HTTPClientError, UpstreamError),
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
        if isinstance(exc, http.HTTPClientError):
            for source, target in TRANSPORT_ERRORS:
                if isinstance(exc, source):
                    raise target(self.upstream, str(exc) or type(exc).__name__) from exc


def map_transport_errors(upstream: str) -> AbstractContextManager[None]:
    """Within it, the client's transport errors become ``UpstreamError``s naming ``upstream``."""
    return _TransportErrors(upstream)


def forwarded_headers(headers: Headers) -> Headers:
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
    connect_timeout: float = 5.0
    read_timeout: float = 600.0
    max_connections: int = 1000
    idle_timeout: float = 15.0


class UpstreamResponse:
    """A response whose headers arrived; its body is read as it comes."""

    __slots__ = ("_response", "_upstream", "content_length", "headers", "status")

    def __init__(self, response: http.Response, upstream: str) -> None:
        self._response = response
        self._upstream = upstream
        self.status = response.status
        self.headers: Headers = forwarded_headers(response.headers)
        self.content_length = response.content_length

    @property
    def content_type(self) -> str:
        """The media type, lower case, without parameters (``application/json``)."""
        for name, value in self._response.headers:
            if name.lower() == b"content-type":
                media = value.split(b";", 1)[0].strip().lower()
                return media.decode("latin-1") or "application/octet-stream"
        return "application/octet-stream"

    async def read(self) -> bytes:
        with map_transport_errors(self._upstream):
            return await self._response.read()

    async def chunks(self) -> AsyncIterator[bytes]:
        with map_transport_errors(self._upstream):
            async for chunk in self._response.chunks():
                yield chunk

    def close(self) -> None:
        """Give the connection back if the body was read in full, else drop it."""
        self._response.close()


class Forwarder:
    """Sends requests to the upstream over one pool of keep-alive connections."""

    def __init__(self, settings: UpstreamSettings) -> None:
        base = settings.url.rstrip("/")
        parts = urlsplit(base)
        # The upstream is named like the openai client's base_url (".../v1"); requests
        # arrive with their full "/v1/..." path.
        self._prefix = parts.path.rstrip("/").removesuffix("/v1")
        self._target_prefix = self._prefix.encode("latin-1")
        self._origin = http.Origin.from_url(base)
        self._name = base
        self._settings = settings
        self._client: http.Client | None = None

    @property
    def name(self) -> str:
        return self._name

    async def open(self) -> None:
        settings = self._settings
        self._client = http.Client(
            max_connections=settings.max_connections,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            idle_timeout=settings.idle_timeout,
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def target(self, raw_path: str, query: str) -> str:
        """The URL a request for ``raw_path?query`` goes to."""
        return f"{self._origin}{self._prefix}{raw_path}" + (f"?{query}" if query else "")

    async def send(
        self,
        method: str,
        raw_path: str,
        query: str,
        headers: Headers,
        body: bytes | AsyncIterator[bytes] | None,
    ) -> UpstreamResponse:
        assert self._client is not None, "Forwarder.open() was not awaited"
        target = self._target_prefix + raw_path.encode("latin-1")
        if query:
            target += b"?" + query.encode("latin-1")
        with map_transport_errors(self._name):
            response = await self._client.request(self._origin, method, target, headers, body)
        return UpstreamResponse(response, self._name)

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

"""The request path, top to bottom: classify, forward, relay, observe.

Plain ASGI, so that bodies stream chunk by chunk in both directions and
nothing sits between the upstream's bytes and the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from tollhouse.classify import Operation, classify
from tollhouse.errors import ErrorResponse, not_found
from tollhouse.forward import Forwarder, UpstreamError, UpstreamResponse, forwarded_headers
from tollhouse.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

# Responses up to this size, with a known length, are read whole and sent in one
# message; anything larger, or of unknown length (SSE), is relayed chunk by chunk.
WHOLE_BODY_LIMIT = 256 * 1024
DEFAULT_TENANT = "default"


class ClientDisconnected(Exception):
    """The client went away before its request body was complete."""


class StreamAborted(Exception):
    """A response that had started could not be completed; the connection must drop."""


async def _request_body(receive: Receive) -> bytes | AsyncIterator[bytes] | None:
    """The request body: bytes when it came in one message, else a chunk stream."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected
    first: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return first or None

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected
            yield message.get("body", b"")
            if not message.get("more_body", False):
                return

    return chunks()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def send_error(send: Send, error: ErrorResponse) -> None:
    await send(
        {"type": "http.response.start", "status": error.status, "headers": error.asgi_headers()}
    )
    await send({"type": "http.response.body", "body": error.body()})


class Proxy:
    """The ASGI application that forwards ``/v1/...`` to the upstream."""

    def __init__(
        self,
        forwarder: Forwarder,
        metrics: Metrics,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._forwarder = forwarder
        self._metrics = metrics
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        method: str = scope["method"]
        path: str = scope["path"]
        if not path.startswith("/v1/"):
            await send_error(send, not_found(method, path))
            return
        operation = classify(method, path)
        tenant = DEFAULT_TENANT
        metrics = self._metrics
        metrics.in_flight.inc()
        try:
            outcome, upstream_seconds = await self._forward(scope, receive, send, method, operation)
        finally:
            metrics.in_flight.dec()
        metrics.requests.labels(tenant, operation.request_class, operation.name, outcome).inc()
        if upstream_seconds is not None:
            metrics.upstream_duration.labels(operation.request_class, operation.name).observe(
                upstream_seconds
            )
            metrics.overhead.observe(max(self._clock() - started - upstream_seconds, 0.0))

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, method: str, operation: Operation
    ) -> tuple[str, float | None]:
        """Forward one request; returns its outcome and the time spent on the upstream."""
        try:
            body = await _request_body(receive)
        except ClientDisconnected:
            return "rejected", None
        raw_path = scope.get("raw_path") or scope["path"].encode()
        upstream_started = self._clock()
        try:
            response = await self._forwarder.send(
                method,
                raw_path.decode("latin-1"),
                scope["query_string"].decode("latin-1"),
                forwarded_headers(scope["headers"]),
                body,
            )
        except UpstreamError as exc:
            log.warning("upstream request failed for %s %s: %s", method, operation.name, exc)
            await send_error(send, exc.response())
            return "upstream_error", None
        except ClientDisconnected:
            return "rejected", None
        try:
            await self._relay(response, receive, send)
        finally:
            response.close()
        return "forwarded", self._clock() - upstream_started

    async def _relay(self, response: UpstreamResponse, receive: Receive, send: Send) -> None:
        length = response.content_length
        if length is not None and length <= WHOLE_BODY_LIMIT:
            try:
                content = await response.read()
            except UpstreamError as exc:
                log.warning("upstream response body failed: %s", exc)
                await send_error(send, exc.response())
                return
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status,
                    "headers": response.headers,
                }
            )
            await send({"type": "http.response.body", "body": content})
            return
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        await self._stream(response, receive, send)

    async def _stream(self, response: UpstreamResponse, receive: Receive, send: Send) -> None:
        """Relay chunk by chunk; a client that leaves cancels the upstream read."""
        relay = asyncio.ensure_future(self._relay_chunks(response, send))
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((relay, watcher), return_when=asyncio.FIRST_COMPLETED)
        finally:
            watcher.cancel()
            if not relay.done():
                relay.cancel()
                await asyncio.gather(relay, return_exceptions=True)
                self._metrics.stream_aborts.labels("client_disconnect").inc()
                log.info("client disconnected mid-response; upstream request cancelled")
        if relay.done() and not relay.cancelled() and (exc := relay.exception()) is not None:
            self._metrics.stream_aborts.labels("upstream_error").inc()
            log.warning("upstream stream broke after the response started: %s", exc)
            raise StreamAborted(str(exc)) from exc

    @staticmethod
    async def _relay_chunks(response: UpstreamResponse, send: Send) -> None:
        async for chunk in response.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

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
from tollhouse.forward import (
    Forwarder,
    Headers,
    UpstreamError,
    UpstreamResponse,
    forwarded_headers,
)
from tollhouse.metrics import Metrics
from tollhouse.quota import Decision, Quota
from tollhouse.tenants import OTHER, Tenants, UnknownKey

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

# Responses up to this size, with a known length, are read whole and sent in one
# message; anything larger, or of unknown length (SSE), is relayed chunk by chunk.
WHOLE_BODY_LIMIT = 256 * 1024


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


class _Exchange:
    """One request's bookkeeping; ``finish`` records it once, before its last bytes go out."""

    __slots__ = (
        "_clock",
        "_done",
        "_metrics",
        "decision",
        "label",
        "operation",
        "started",
        "upstream_started",
    )

    def __init__(
        self,
        metrics: Metrics,
        clock: Callable[[], float],
        label: str,
        operation: Operation,
        started: float,
        decision: Decision,
    ) -> None:
        self._metrics = metrics
        self._clock = clock
        self.label = label
        self.operation = operation
        self.started = started
        self.decision = decision
        self.upstream_started: float | None = None
        self._done = False

    def finish(self, outcome: str) -> None:
        if self._done:
            return
        self._done = True
        metrics, operation = self._metrics, self.operation
        if outcome == "forwarded":
            outcome = self.decision.outcome  # forwarded, or shadow_throttled
        metrics.count(self.label, operation, outcome)
        if self.upstream_started is not None and outcome != "upstream_error":
            now = self._clock()
            upstream = now - self.upstream_started
            metrics.upstream_duration.labels(operation.request_class, operation.name).observe(
                upstream
            )
            added = now - self.started - upstream - self.decision.wait
            metrics.overhead.observe(max(added, 0.0))


class Proxy:
    """The ASGI application that forwards ``/v1/...`` to the upstream."""

    def __init__(
        self,
        forwarder: Forwarder,
        metrics: Metrics,
        tenants: Tenants,
        quota: Quota,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._forwarder = forwarder
        self._metrics = metrics
        self.tenants = tenants
        self._quota = quota
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        method: str = scope["method"]
        path: str = scope["path"]
        if not path.startswith("/v1/"):
            await send_error(send, not_found(method, path))
            return
        operation = classify(method, path)
        metrics = self._metrics
        try:
            identity, headers = self.tenants.identify(forwarded_headers(scope["headers"]))
        except UnknownKey as exc:
            log.info("refused %s %s: %s", method, operation.name, exc)
            metrics.count(OTHER, operation, "rejected")
            await send_error(send, exc.response())
            return
        decision = await self._quota.admit(identity.tenant, operation.request_class)
        metrics.record_budget(identity.label, decision)
        if not decision.allowed:
            metrics.count(identity.label, operation, "throttled")
            await send_error(send, decision.refusal())
            return
        metrics.in_flight.inc()
        exchange = _Exchange(metrics, self._clock, identity.label, operation, started, decision)
        try:
            await self._forward(scope, receive, send, exchange, headers)
        finally:
            metrics.in_flight.dec()
            exchange.finish("forwarded")  # no-op unless a path below forgot to record

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange, headers: Headers
    ) -> None:
        method: str = scope["method"]
        try:
            body = await _request_body(receive)
        except ClientDisconnected:
            exchange.finish("rejected")
            return
        raw_path = scope.get("raw_path") or scope["path"].encode()
        exchange.upstream_started = self._clock()
        try:
            response = await self._forwarder.send(
                method,
                raw_path.decode("latin-1"),
                scope["query_string"].decode("latin-1"),
                headers,
                body,
            )
        except UpstreamError as exc:
            log.warning(
                "upstream request failed for %s %s: %s", method, exchange.operation.name, exc
            )
            exchange.finish("upstream_error")
            await send_error(send, exc.response())
            return
        except ClientDisconnected:
            exchange.finish("rejected")
            return
        response.headers.extend(exchange.decision.headers())
        try:
            await self._relay(response, receive, send, exchange)
        finally:
            response.close()

    async def _relay(
        self, response: UpstreamResponse, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        start = {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.headers,
        }
        length = response.content_length
        if length is not None and length <= WHOLE_BODY_LIMIT:
            try:
                content = await response.read()
            except UpstreamError as exc:
                log.warning("upstream response body failed: %s", exc)
                exchange.finish("upstream_error")
                await send_error(send, exc.response())
                return
            exchange.finish("forwarded")
            await send(start)
            await send({"type": "http.response.body", "body": content})
            return
        await send(start)
        await self._stream(response, receive, send, exchange)

    async def _stream(
        self, response: UpstreamResponse, receive: Receive, send: Send, exchange: _Exchange
    ) -> None:
        """Relay chunk by chunk; a client that leaves cancels the upstream read."""
        relay = asyncio.ensure_future(self._relay_chunks(response, send, exchange))
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
            exchange.finish("upstream_error")
            raise StreamAborted(str(exc)) from exc

    @staticmethod
    async def _relay_chunks(response: UpstreamResponse, send: Send, exchange: _Exchange) -> None:
        async for chunk in response.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        exchange.finish("forwarded")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

"""The request path, top to bottom: classify, tenant, ownership, quota, forward, observe.

Plain ASGI, so that bodies stream chunk by chunk in both directions and
nothing sits between the upstream's bytes and the client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from opentelemetry.trace import Span

from tollhouse.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    StreamAborted,
    request_body,
    send_error,
    wait_for_disconnect,
)
from tollhouse.classify import Operation, RequestClass, classify
from tollhouse.errors import ErrorResponse, not_found
from tollhouse.forward import Forwarder, Headers, UpstreamError, UpstreamResponse, forwarded_headers
from tollhouse.metrics import Metrics
from tollhouse.observe import Observer, observes
from tollhouse.ownership import Ownership, referenced_ids
from tollhouse.quota import Decision, Quota
from tollhouse.tenants import OTHER, Identity, Tenants, UnknownKey
from tollhouse.tracing import Tracing
from tollhouse.writer import LedgerWriter

log = logging.getLogger(__name__)

# Responses up to this size, with a known length, are read whole and sent in one
# message; anything larger, or of unknown length (SSE), is relayed chunk by chunk.
WHOLE_BODY_LIMIT = 256 * 1024
RUN_POLL = "threads.runs.retrieve"
WRITES = frozenset({RequestClass.POST, RequestClass.RUN_CREATE})


class _Exchange:
    """One request's bookkeeping; ``finish`` records it once, before its last bytes go out."""

    __slots__ = (
        "_clock",
        "_done",
        "_metrics",
        "_writer",
        "decision",
        "identity",
        "observer",
        "operation",
        "span",
        "started",
        "status",
        "upstream_started",
    )

    def __init__(
        self,
        metrics: Metrics,
        writer: LedgerWriter,
        clock: Callable[[], float],
        identity: Identity,
        operation: Operation,
        started: float,
        decision: Decision,
        observer: Observer,
        span: Span | None,
    ) -> None:
        self._metrics = metrics
        self._writer = writer
        self._clock = clock
        self.identity = identity
        self.operation = operation
        self.started = started
        self.decision = decision
        self.observer = observer
        self.span = span
        self.status: int | None = None
        self.upstream_started: float | None = None
        self._done = False

    def finish(self, outcome: str) -> None:
        if self._done:
            return
        self._done = True
        metrics, operation = self._metrics, self.operation
        if outcome == "forwarded":
            outcome = self.decision.outcome  # forwarded, or shadow_throttled
        metrics.count(self.identity.label, operation, outcome)
        self._writer.count_request(self.identity.tenant, operation.request_class, outcome)
        Tracing.end(self.span, outcome, self.status)
        if self.status is not None:
            metrics.upstream_status(operation.request_class, self.status)
            if self.status < 400 and operation.params:
                self._writer.touch(operation.params.values())
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
        ownership: Ownership,
        writer: LedgerWriter,
        tracing: Tracing,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._forwarder = forwarder
        self._metrics = metrics
        self.tenants = tenants
        self._quota = quota
        self._ownership = ownership
        self._writer = writer
        self._tracing = tracing
        self._clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        method: str = scope["method"]
        path: str = scope["path"]
        if not path.startswith("/v1/"):
            await send_error(send, not_found(method, path))
            return
        operation = classify(method, path)
        try:
            identity, headers = self.tenants.identify(forwarded_headers(scope["headers"]))
        except UnknownKey as exc:
            log.info("refused %s %s: %s", method, operation.name, exc)
            await self._refuse(send, OTHER, OTHER, operation, "rejected", exc.response())
            return
        decision = await self._quota.admit(identity.tenant, operation.request_class)
        self._metrics.record_budget(identity.label, decision)
        if not decision.allowed:
            await self._refuse(
                send, identity.tenant, identity.label, operation, "throttled", decision.refusal()
            )
            return
        refusal = await self._ownership.refusal(identity.tenant, operation)
        if refusal is not None:
            await self._refuse(
                send, identity.tenant, identity.label, operation, "rejected", refusal
            )
            return
        if operation.name == RUN_POLL:
            self._metrics.run_polls.labels(identity.label).inc()
        span = self._tracing.start(operation, method, identity.tenant, operation.request_class)
        observer = Observer(self._ownership, self._writer, identity.tenant, operation, span)
        exchange = _Exchange(
            self._metrics,
            self._writer,
            self._clock,
            identity,
            operation,
            started,
            decision,
            observer,
            span,
        )
        self._metrics.in_flight.inc()
        try:
            await self._forward(scope, receive, send, exchange, headers)
        finally:
            self._metrics.in_flight.dec()
            exchange.finish("forwarded")  # no-op unless a path below left it unrecorded
        observer.hand_over()

    async def _refuse(
        self,
        send: Send,
        tenant: str,
        label: str,
        operation: Operation,
        outcome: str,
        error: ErrorResponse,
    ) -> None:
        self._metrics.count(label, operation, outcome)
        self._writer.count_request(tenant, operation.request_class, outcome)
        span = self._tracing.start(operation, "", tenant, operation.request_class)
        Tracing.end(span, outcome, error.status)
        await send_error(send, error)

    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, exchange: _Exchange, headers: Headers
    ) -> None:
        method: str = scope["method"]
        try:
            body = await request_body(receive)
        except ClientDisconnected:
            exchange.finish("rejected")
            return
        if isinstance(body, bytes) and exchange.operation.request_class in WRITES:
            named = referenced_ids(body)
            refusal = await self._ownership.refusal_for(exchange.identity.tenant, named)
            if refusal is not None:
                exchange.finish("rejected")
                await send_error(send, refusal)
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
        exchange.status = response.status
        observing = observes(exchange.operation, response.status)
        length = response.content_length
        if length is not None and length <= WHOLE_BODY_LIMIT:
            try:
                content = await response.read()
            except UpstreamError as exc:
                log.warning("upstream response body failed: %s", exc)
                exchange.finish("upstream_error")
                await send_error(send, exc.response())
                return
            if observing:
                await exchange.observer.whole_body(content, response.status)
            exchange.finish("forwarded")
            await send(start)
            await send({"type": "http.response.body", "body": content})
            return
        await send(start)
        await self._stream(response, receive, send, exchange, observing)

    async def _stream(
        self,
        response: UpstreamResponse,
        receive: Receive,
        send: Send,
        exchange: _Exchange,
        observing: bool,
    ) -> None:
        """Relay chunk by chunk; a client that leaves cancels the upstream read."""
        relay = asyncio.ensure_future(self._relay_chunks(response, send, exchange, observing))
        watcher = asyncio.ensure_future(wait_for_disconnect(receive))
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
    async def _relay_chunks(
        response: UpstreamResponse, send: Send, exchange: _Exchange, observing: bool
    ) -> None:
        observer = exchange.observer
        async for chunk in response.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if observing:
                observer.chunk(chunk)
        if observing:
            await observer.end()
        exchange.finish("forwarded")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

"""Relaying the upstream's answer to the client: read whole when small (or when its cost
goes in a header), else chunk by chunk, with twins mapped back and the observer fed a copy."""

from __future__ import annotations

import asyncio
import logging

from tollhouse.proxy.asgi import (
    Receive,
    Send,
    StreamAborted,
    send_error,
    wait_for_disconnect,
)
from tollhouse.proxy.codings import Undecodable
from tollhouse.proxy.exchange import Exchange
from tollhouse.proxy.isolate import (
    RestoredResponse,
    header,
)
from tollhouse.proxy.observe import observes
from tollhouse.proxy.twins import StreamRestorer, Twins
from tollhouse.telemetry.metrics import Metrics
from tollhouse.upstream.forward import (
    UpstreamError,
    UpstreamProtocolError,
    UpstreamResponse,
)

log = logging.getLogger(__name__)

# Responses up to this size, with a known length, are read whole and sent in one
# message; anything larger, or of unknown length (SSE), is relayed chunk by chunk.
WHOLE_BODY_LIMIT = 256 * 1024
# JSON answers that may carry final usage are read whole up to this size, so that their
# cost can go in a header (a larger one streams, without it).
COSTED_BODY_LIMIT = 1024 * 1024


class Relay:
    """Sends an upstream answer to the client; counts streams that end early."""

    def __init__(self, metrics: Metrics, upstream: str) -> None:
        self._metrics = metrics
        self._upstream = upstream

    async def restored(
        self,
        response: UpstreamResponse,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        twins: Twins,
    ) -> None:
        """The answer to a request whose foreign ids were twinned, with the twins mapped back."""
        exchange.status = response.status
        coding = header(response.headers, b"content-encoding") or b""
        if response.content_type == "text/event-stream" and not coding.strip():
            # A stream (a twinned create that still runs) is relayed as it comes.
            restorer = StreamRestorer(twins)
            restored = RestoredResponse(response, restorer)
            await self.relay(restored, receive, send, exchange)  # type: ignore[arg-type]
            return
        try:
            content = twins.restore(await response.read(), coding)
        except UpstreamError as exc:
            exchange.finish("upstream_error")
            await send_error(send, exc.response())
            return
        except Undecodable as exc:
            log.warning("cannot map twins back in a %s answer: %s", coding, exc)
            exchange.finish("upstream_error")
            await send_error(send, UpstreamProtocolError(self._upstream, str(exc)).response())
            return
        exchange.observer.form(response.content_type, coding)
        if observes(exchange.operation, response.status):
            await exchange.observer.whole_body(content, response.status)
        # The same headers in the same order as any answer, only the length is the new one.
        length = str(len(content)).encode()
        headers_out = [
            (k, length if k.lower() == b"content-length" else v)
            for k, v in response.headers
            if k.lower() != b"transfer-encoding"
        ]
        if header(headers_out, b"content-length") is None:
            headers_out.append((b"content-length", length))
        exchange.finish("forwarded")
        start = {"type": "http.response.start", "status": response.status, "headers": headers_out}
        await send(start)
        await send({"type": "http.response.body", "body": content})

    async def relay(
        self, response: UpstreamResponse, receive: Receive, send: Send, exchange: Exchange
    ) -> None:
        start = {
            "type": "http.response.start",
            "status": response.status,
            "headers": response.headers,
        }
        exchange.status = response.status
        exchange.streamed = response.content_type == "text/event-stream"
        observing = observes(exchange.operation, response.status)
        if observing:
            coding = header(response.headers, b"content-encoding") or b""
            exchange.observer.form(response.content_type, coding)
        length = response.content_length
        cost = exchange.cost if observing and response.content_type == "application/json" else None
        limit = WHOLE_BODY_LIMIT if cost is None else COSTED_BODY_LIMIT
        if (length is not None and length <= limit) or (cost is not None and length is None):
            try:
                content, complete = await read_whole(response, limit)
            except UpstreamError as exc:
                log.warning("upstream response body failed: %s", exc)
                exchange.finish("upstream_error")
                await send_error(send, exc.response())
                return
            if not complete:  # past the limit: relayed as it comes from here, without a cost
                await send(start)
                await send({"type": "http.response.body", "body": content, "more_body": True})
                if observing:
                    exchange.observer.chunk(content)
                await self.stream(response, receive, send, exchange, observing)
                return
            if observing:
                await exchange.observer.whole_body(content, response.status)
            if cost is not None:
                start["headers"] = [*response.headers, *cost.headers()]
            exchange.finish("forwarded")
            await send(start)
            await send({"type": "http.response.body", "body": content})
            return
        await send(start)
        await self.stream(response, receive, send, exchange, observing)

    async def stream(
        self,
        response: UpstreamResponse,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        observing: bool,
    ) -> None:
        """Relay chunk by chunk; a client that leaves cancels the upstream read."""
        relay = asyncio.ensure_future(self._chunks(response, send, exchange, observing))
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
    async def _chunks(
        response: UpstreamResponse, send: Send, exchange: Exchange, observing: bool
    ) -> None:
        observer = exchange.observer
        async for chunk in response.chunks():
            exchange.first_out()
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if observing:
                observer.chunk(chunk)
        if observing:
            await observer.end()
        exchange.finish("forwarded")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def read_whole(response: UpstreamResponse, limit: int) -> tuple[bytes, bool]:
    """The body, and True; or, for one of unknown length past ``limit``, what was read."""
    if response.content_length is not None:
        return await response.read(), True
    parts: list[bytes] = []
    size = 0
    chunks = response.chunks()
    try:
        async for chunk in chunks:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                return b"".join(parts), False
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    return b"".join(parts), True


def add_headers(response: UpstreamResponse, exchange: Exchange) -> None:
    """tollhouse's view of the caller's buckets: ``x-tollhouse-ratelimit-*`` for requests;
    and ``x-ratelimit-*-tokens`` for a call's tokens, in place of the upstream's (the
    caller's limit is its tenant's share, which tollhouse enforces)."""
    response.headers.extend(exchange.decision.headers())
    if exchange.tokens is not None:
        tokens = exchange.tokens.headers()
        names = {name for name, _ in tokens}
        kept = [(k, v) for k, v in response.headers if k.lower() not in names]
        response.headers = kept + tokens

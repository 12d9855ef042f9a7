"""The Responses WebSocket mode: one socket relayed, each ``response.create`` on it a request.

The client's handshake is identified like any request (its key replaced in ``keys``
mode) before the upstream's socket is opened; a refusal is an HTTP answer to the
handshake. Then frames are relayed both ways, whole, until either side closes. Each
``response.create`` event is admitted by the quota as a response creation (refused: an
``error`` event with status 429, never forwarded), the ids it names are checked like a
``POST /v1/responses`` body (another tenant's id goes out as its twin, which the
upstream does not know: the client gets the upstream's own not-found ``error`` event,
the twin mapped back, exactly as for an id that exists nowhere), and the server events
answering it are observed as the SSE stream of that response would be.

Server events are matched to creates by lane: the upstream answers the creates of a
``stream_id`` (or of none) in order, so a lane's events belong to its oldest create
until a terminal event (``response.completed``, ``.failed``, ``.incomplete``, ``error``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp
from opentelemetry.trace import Span

from tollhouse.api import references
from tollhouse.api.classify import Operation, RequestClass, classify
from tollhouse.api.errors import ErrorResponse, not_found, unparseable_body
from tollhouse.api.paths import path_problem
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.proxy.asgi import Receive, Scope, Send
from tollhouse.proxy.isolate import named_ids
from tollhouse.proxy.observe import Observer
from tollhouse.proxy.ownership import LedgerUnavailable, Ownership
from tollhouse.proxy.tenants import OTHER, Identity, IdentityRefused, Tenants
from tollhouse.proxy.twins import Twins
from tollhouse.quota.admission import Decision, Quota
from tollhouse.telemetry.metrics import Metrics
from tollhouse.telemetry.tracing import Tracing
from tollhouse.upstream.forward import Forwarder, UpstreamError, forwarded_headers

log = logging.getLogger(__name__)

PATH = "/v1/responses"
CREATE = "response.create"
TERMINAL = frozenset({"response.completed", "response.failed", "response.incomplete", "error"})
DENIAL = "websocket.http.response"  # the ASGI extension for an HTTP answer to a handshake
# Close codes an endpoint may not send (RFC 6455 §7.4.1): what is sent in their place.
NO_STATUS, ABNORMAL, TLS_FAILURE = 1005, 1006, 1015
GOING_AWAY, INTERNAL_ERROR = 1001, 1011


def sendable(code: int | None, otherwise: int) -> int:
    """A close code that may go on the wire: the one received, or ``otherwise``."""
    if code is None or code in (NO_STATUS, ABNORMAL, TLS_FAILURE) or not 1000 <= code < 5000:
        return otherwise
    return code


def error_event(error: ErrorResponse, stream_id: str | None) -> str:
    """The Responses WebSocket ``error`` event (``ResponseWsError``) for an error answer."""
    event: dict[str, Any] = {"type": "error", "status": error.status, **json.loads(error.body())}
    if stream_id is not None:
        event["stream_id"] = stream_id
    return json.dumps(event)


def as_sse(kind: object, frame: str, event: object) -> bytes:
    """A server event as the SSE stream of ``POST /v1/responses`` carries it."""
    if "\n" in frame or "\r" in frame:  # JSON may hold line breaks between tokens
        frame = json.dumps(event, separators=(",", ":"))
    data = b"data: " + frame.encode() + b"\n\n"
    if isinstance(kind, str) and kind.isprintable():
        return b"event: " + kind.encode() + b"\n" + data
    return data


def _last(document: references.Pairs, key: str) -> object:
    """A member's value as a JSON parser keeping the last of duplicate keys reads it."""
    found: object = None
    for name, value in document:
        if name == key:
            found = value
    return found


class _Create:
    """One ``response.create`` forwarded: its observer and its bookkeeping until it ends."""

    __slots__ = ("decision", "done", "observer", "span", "started")

    def __init__(
        self, observer: Observer, decision: Decision, span: Span | None, started: float
    ) -> None:
        self.observer = observer
        self.decision = decision
        self.span = span
        self.started = started
        self.done = False


class SocketRelay:
    """The ASGI application for ``websocket`` scopes: the Responses WebSocket mode."""

    def __init__(
        self,
        forwarder: Forwarder,
        metrics: Metrics,
        tenants: Callable[[], Tenants],
        quota: Quota,
        ownership: Ownership,
        writer: LedgerWriter,
        tracing: Tracing,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.forwarder = forwarder
        self.metrics = metrics
        self.tenants = tenants
        self.quota = quota
        self.ownership = ownership
        self.writer = writer
        self.tracing = tracing
        self.clock = clock
        self.operation = classify("POST", PATH)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        path: str = scope["path"]
        raw_path: bytes = scope.get("raw_path") or path.encode()
        problem = path_problem(raw_path)
        if path != PATH or problem is not None:
            self.refused(OTHER, OTHER, classify("GET", path), "rejected")
            await deny(scope, send, problem or not_found("GET", path))
            return
        try:
            identity, headers = self.tenants().identify(forwarded_headers(scope["headers"]))
        except IdentityRefused as exc:
            log.info("refused a %s socket: %s", self.operation.name, exc)
            self.refused(OTHER, OTHER, self.operation, "rejected")
            await deny(scope, send, exc.response())
            return
        query = scope.get("query_string", b"").decode("latin-1")
        protocols = tuple(scope.get("subprotocols") or ())
        try:
            upstream = await self.forwarder.websocket(
                raw_path.decode("latin-1"), query, headers, protocols
            )
        except UpstreamError as exc:
            log.warning("upstream socket for %s failed: %s", identity.tenant, exc)
            self.refused(identity.tenant, identity.label, self.operation, "upstream_error")
            await deny(scope, send, exc.response())
            return
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.protocol})
            await _Connection(self, identity, upstream, receive, send).run()
        except OSError:  # the client left before its socket was accepted
            log.info("a %s socket closed during its handshake", self.operation.name)
        finally:
            await upstream.close()

    def refused(self, tenant: str, label: str, operation: Operation, outcome: str) -> None:
        self.metrics.count(label, operation, outcome)
        self.writer.count_request(tenant, operation.request_class, outcome)
        span = self.tracing.start(operation, "GET", tenant, operation.request_class)
        Tracing.end(span, outcome, None)


async def deny(scope: Scope, send: Send, error: ErrorResponse) -> None:
    """Refuse a handshake: with the error as an HTTP answer where the server can send one."""
    if DENIAL in scope.get("extensions", {}):
        body = error.body()
        start = {"status": error.status, "headers": error.asgi_headers(body)}
        await send({"type": "websocket.http.response.start", **start})
        await send({"type": "websocket.http.response.body", "body": body})
    else:  # the server answers 403
        await send({"type": "websocket.close", "code": 1008, "reason": error.message[:120]})


class _Connection:
    """One relayed socket: the tenant's creates by lane, and the twins named so far."""

    def __init__(
        self,
        relay: SocketRelay,
        identity: Identity,
        upstream: aiohttp.ClientWebSocketResponse,
        receive: Receive,
        send: Send,
    ) -> None:
        self.relay = relay
        self.identity = identity
        self.upstream = upstream
        self.receive = receive
        self.send = send
        self.isolated = not relay.ownership.reaches_all(identity.tenant)
        self.twins = Twins()
        self.lanes: dict[str | None, deque[_Create]] = {}
        self.client_gone = False

    async def run(self) -> None:
        """Relay until one side closes, then close the other with its code."""
        from_client = asyncio.ensure_future(self.from_client())
        from_upstream = asyncio.ensure_future(self.from_upstream())
        try:
            await asyncio.wait((from_client, from_upstream), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (from_client, from_upstream):
                task.cancel()
            await asyncio.gather(from_client, from_upstream, return_exceptions=True)
        left = _outcome(from_client, "relaying the client's frames")
        if left is not None:  # the client disconnected, with this code
            self.client_gone = True
            await self.upstream.close(code=sendable(left[0], GOING_AWAY))
            await self.end_all("client_disconnect", "forwarded")
            return
        ended = _outcome(from_upstream, "relaying the upstream's frames")
        code, reason = ended if ended is not None else (INTERNAL_ERROR, "")
        await self.end_all("upstream_error", "upstream_error")
        if not self.client_gone:
            close = {"type": "websocket.close", "code": sendable(code, INTERNAL_ERROR)}
            with contextlib.suppress(OSError):  # the client left meanwhile: nothing to close
                await self.send({**close, "reason": reason})

    async def from_client(self) -> tuple[int | None]:
        """The client's frames, each checked, until it disconnects; its close code."""
        while True:
            message = await self.receive()
            if message["type"] == "websocket.disconnect":
                return (message.get("code"),)
            text = message.get("text")
            if text is None:  # a binary frame is read as the text it must be
                text = (message.get("bytes") or b"").decode("utf-8", "replace")
            await self.client_event(text)

    async def client_event(self, text: str) -> None:
        relay = self.relay
        try:
            document = references.parse(text.encode())
        except references.UnreadableBody:
            document = None
        if not isinstance(document, references.Pairs):
            # Answered here: the upstream's error would be taken for a create's.
            await self.to_client(error_event(unparseable_body(), None))
            return
        stream = _last(document, "stream_id")
        stream_id = stream if isinstance(stream, str) else None
        # Any `type` member saying create makes it one: a parser upstream may keep the first.
        if not any(key == "type" and value == CREATE for key, value in document):
            await self.forward(text, document, None)
            return
        tenant, label = self.identity.tenant, self.identity.label
        decision = await relay.quota.admit(tenant, RequestClass.RESPONSE_CREATE)
        relay.metrics.record_budget(
            decision.request_class,
            decision.levels(label),
            decision.wait if decision.allowed else 0.0,
        )
        if not decision.allowed:
            relay.refused(tenant, label, relay.operation, "throttled")
            await self.to_client(error_event(decision.refusal(), stream_id))
            return
        await self.forward(text, document, (decision, stream_id))

    async def forward(
        self,
        text: str,
        document: references.Pairs,
        create: tuple[Decision, str | None] | None,
    ) -> None:
        """Send a client event upstream, its foreign ids twinned; a create gets its lane."""
        relay, tenant = self.relay, self.identity.tenant
        operation = relay.operation
        stream_id = create[1] if create is not None else None
        named: list[str] = []
        twinned = False
        if self.isolated:
            try:
                text, named, twinned = await self.isolated_event(text, document, create is not None)
            except (LedgerUnavailable, references.UnreadableBody) as exc:
                if create is not None:
                    relay.refused(tenant, self.identity.label, operation, "rejected")
                refusal = exc.response() if isinstance(exc, LedgerUnavailable) else None
                await self.to_client(error_event(refusal or unparseable_body(), stream_id))
                return
        if create is not None:
            span = relay.tracing.start(operation, "POST", tenant, operation.request_class)
            observer = Observer(relay.ownership, relay.writer, tenant, operation, span)
            observer.form("text/event-stream", b"")
            if self.isolated and not twinned:
                observer.sighting = True  # a create of its own: what it holds is the tenant's
                observer.named = frozenset(named)
            self.lanes.setdefault(stream_id, deque()).append(
                _Create(observer, create[0], span, relay.clock())
            )
            relay.metrics.in_flight.inc()
        await self.upstream.send_str(text)

    async def isolated_event(
        self, text: str, document: references.Pairs, creates: bool
    ) -> tuple[str, list[str], bool]:
        """The event as it goes upstream, the ids its body names, whether any was twinned."""
        relay, operation = self.relay, self.relay.operation
        if creates:  # checked like the body of POST /v1/responses
            ids = named_ids(operation, PATH, "", document)
            strict, loose, named = ids.strict, ids.loose, ids.in_body
        else:  # an event tollhouse does not know: no id in it may be another tenant's
            strict, loose, named = [], references.id_strings(document), []
        foreign = await relay.ownership.foreign(self.identity.tenant, strict, loose)
        if not foreign:
            return text, named, False
        for object_id in foreign:
            self.twins.add(object_id)
        relay.metrics.isolation_denials.labels(self.identity.label, operation.name).inc()
        log.info("%s named objects %s cannot reach", operation.name, self.identity.tenant)
        return references.replaced(document, self.twins.of, not creates).decode(), named, True

    async def from_upstream(self) -> tuple[int | None, str]:
        """The upstream's frames, observed and relayed, until it closes; its code and reason."""
        upstream = self.upstream
        while True:
            message = await upstream.receive()
            if message.type == aiohttp.WSMsgType.TEXT:
                frame: str = message.data
                if self.twins:
                    frame = self.twins.restore_plain(frame.encode()).decode()
                await self.observe(frame)
                await self.to_client(frame)
            elif message.type == aiohttp.WSMsgType.BINARY:
                await self.to_client(message.data)
            elif message.type == aiohttp.WSMsgType.CLOSE:
                return message.data, message.extra or ""
            elif message.type == aiohttp.WSMsgType.ERROR:
                log.warning("the upstream socket failed: %r", message.data)
                return INTERNAL_ERROR, ""
            elif message.type in (aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return upstream.close_code, ""

    async def to_client(self, frame: str | bytes) -> None:
        key = "text" if isinstance(frame, str) else "bytes"
        try:
            await self.send({"type": "websocket.send", key: frame})
        except OSError:  # the client left; its disconnect ends the relay
            self.client_gone = True

    async def observe(self, frame: str) -> None:
        """Feed a server event to the observer of the create it answers."""
        try:
            event = json.loads(frame)
        except (ValueError, RecursionError):
            return
        if not isinstance(event, dict):
            return
        stream_id = event.get("stream_id")
        lane = self.lanes.get(stream_id if isinstance(stream_id, str) else None)
        if not lane:
            return
        kind = event.get("type")
        create = lane[0]
        create.observer.chunk(as_sse(kind, frame, event))
        if kind in TERMINAL:
            status = event.get("status") if kind == "error" else 200
            await self.finish(create, status if isinstance(status, int) else 200, "forwarded")
            lane.popleft()
            if not lane:
                del self.lanes[stream_id if isinstance(stream_id, str) else None]

    async def end_all(self, abort: str, outcome: str) -> None:
        """The socket closed: every create still answering ends, cut short."""
        for lane in self.lanes.values():
            while lane:
                create = lane.popleft()
                self.relay.metrics.stream_aborts.labels(abort).inc()
                await self.finish(create, None, outcome)

    async def finish(self, create: _Create, status: int | None, outcome: str) -> None:
        """Record a create once: counted, its owners written, its usage handed over."""
        if create.done:
            return
        create.done = True
        relay, operation = self.relay, self.relay.operation
        relay.metrics.in_flight.dec()
        if outcome == "forwarded":
            outcome = create.decision.outcome  # forwarded, or shadow_throttled
        relay.metrics.count(self.identity.label, operation, outcome)
        relay.writer.count_request(self.identity.tenant, operation.request_class, outcome)
        Tracing.end(create.span, outcome, status)
        if status is not None:
            relay.metrics.upstream_status(operation.request_class, status)
            duration = relay.metrics.upstream_duration
            duration.labels(operation.request_class, operation.name).observe(
                relay.clock() - create.started
            )
        try:
            await create.observer.end()
        finally:
            create.observer.hand_over()


T = TypeVar("T")


def _outcome(task: asyncio.Future[T], what: str) -> T | None:
    """A finished relay task's result; None (logged) if it failed or was cancelled."""
    if task.cancelled():
        return None
    failed = task.exception()
    if failed is not None:
        log.warning("%s broke: %r", what, failed)
        return None
    return task.result()

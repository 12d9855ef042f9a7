"""The request path, top to bottom: classify, tenant, ownership, quota, forward, observe.

Plain ASGI, so that bodies stream chunk by chunk in both directions and
nothing sits between the upstream's bytes and the client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from tollhouse.api import references
from tollhouse.api.classify import Operation, RequestClass, classify
from tollhouse.api.dialects import served
from tollhouse.api.errors import (
    ErrorResponse,
    not_found,
    unparseable_body,
)
from tollhouse.api.paths import path_problem
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.proxy.asgi import (
    ClientDisconnected,
    Receive,
    Scope,
    Send,
    request_body,
    send_error,
)
from tollhouse.proxy.exchange import Exchange
from tollhouse.proxy.flows import take_flow
from tollhouse.proxy.isolate import (
    Body,
    Named,
    Refused,
    checked_body,
    named_ids,
    narrowed,
)
from tollhouse.proxy.lists import MAX_PAGES, SHARED_LISTS, BadPaging, ListRequest, filtered_list
from tollhouse.proxy.observe import Observer, observes
from tollhouse.proxy.ownership import LedgerUnavailable, Ownership
from tollhouse.proxy.relay import Relay, add_headers
from tollhouse.proxy.spend import Hold, Spending
from tollhouse.proxy.tarpit import Tarpit
from tollhouse.proxy.tenants import OTHER, Identity, IdentityRefused, Tenants
from tollhouse.proxy.tokens import (
    COSTED_OPERATIONS,
    LATER_OPERATIONS,
    AnswerCost,
    TokenStep,
)
from tollhouse.proxy.twins import Twins
from tollhouse.proxy.websocket import SocketRelay
from tollhouse.quota.admission import Decision, Quota
from tollhouse.telemetry.metrics import Metrics
from tollhouse.telemetry.tracing import Tracing
from tollhouse.upstream.forward import (
    Forwarder,
    Headers,
    UpstreamError,
    UpstreamResponse,
    forwarded_headers,
)

log = logging.getLogger(__name__)

MAX_JSON_BODY = 8 * 1024 * 1024  # the most of a JSON request body read to check it
RUN_POLL = "threads.runs.retrieve"


class Proxy:
    """The ASGI application that forwards ``/v1/...`` (and Azure's ``/openai/...``) upstream."""

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
        max_body: int = MAX_JSON_BODY,
        list_pages: int = MAX_PAGES,
        tarpit: Tarpit | None = None,
        spending: Spending | None = None,
        tokens: TokenStep | None = None,
    ) -> None:
        self._spending = spending
        self._tokens = tokens
        self._tarpit = tarpit if tarpit is not None else Tarpit(0.0)
        self._max_body = max_body
        self._list_pages = list_pages
        self._forwarder = forwarder
        self._relayer = Relay(metrics, forwarder.name)
        self._metrics = metrics
        self._tenants = tenants
        self._quota = quota
        self._ownership = ownership
        self._writer = writer
        self._tracing = tracing
        self._clock = clock
        self.websocket = SocketRelay(
            forwarder, metrics, tenants, quota, ownership, writer, tracing, clock
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = self._clock()
        method: str = scope["method"]
        path: str = scope["path"]
        if not served(path):
            await send_error(send, not_found(method, path))
            return
        raw_path: bytes = scope.get("raw_path") or path.encode()
        problem = path_problem(raw_path)
        if problem is not None:
            await self._refuse(send, OTHER, OTHER, classify(method, ""), "rejected", problem)
            return
        operation = classify(method, path)
        try:
            identity, headers = self._tenants().identify(forwarded_headers(scope["headers"]))
            flow, headers = take_flow(headers)
        except IdentityRefused as exc:
            log.info("refused %s %s: %s", method, operation.name, exc)
            await self._refuse(send, OTHER, OTHER, operation, "rejected", exc.response())
            return
        decision = await self._admit(scope, send, identity, operation)
        if decision is None:
            return
        budgeted = await self._spend(send, receive, identity, operation)
        if budgeted is None:
            return
        hold, receive, send = budgeted
        if operation.name == RUN_POLL:
            self._metrics.run_polls.labels(identity.label).inc()
        span = self._tracing.start(operation, method, identity.tenant, operation.request_class)
        observer = Observer(self._ownership, self._writer, identity.tenant, operation, span)
        exchange = Exchange(
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
        exchange.flow = flow
        self._metrics.in_flight.inc()
        failed = False
        try:
            await self._forward(scope, receive, send, exchange, headers)
        except BaseException:
            failed = True
            if self._spending is not None:
                self._spending.release(hold)  # what the request cost, if anything, is unknown
            raise
        finally:
            exchange.finish("forwarded")  # no-op unless a path below left it unrecorded
            # what was seen goes to the ledger even when the stream broke or the client left
            if self._spending is not None and not failed:  # costs committed, then released
                self._spending.settle(hold, observer.hand_over)
            else:
                observer.hand_over()
            if (exchanged := exchange.exchanged()) is not None:
                self._writer.exchanged(exchanged)
            self._metrics.in_flight.dec()  # last: at 0, every request's sightings are handed over

    async def _admit(
        self, scope: Scope, send: Send, identity: Identity, operation: Operation
    ) -> Decision | None:
        """The request's buckets, after holding a connection back before its retry-after;
        None: refused and answered."""
        client = scope.get("client")
        connection = (client, identity.tenant, operation.request_class) if client else None
        early = self._tarpit.early(connection) if connection else 0.0
        if early > 0:  # back on the same connection before its retry-after
            await self._tarpit.hold(early)
        decision = await self._quota.admit(identity.tenant, operation.request_class)
        self._metrics.record_budget(
            decision.request_class,
            decision.levels(identity.label),
            decision.wait if decision.allowed else 0.0,
        )
        if not decision.allowed:
            if connection:
                self._tarpit.refused(connection, decision.wait)
            await self._refuse(
                send, identity.tenant, identity.label, operation, "throttled", decision.refusal()
            )
            return None
        if connection:
            self._tarpit.admitted(connection)
        return decision

    async def _spend(
        self, send: Send, receive: Receive, identity: Identity, operation: Operation
    ) -> tuple[Hold | None, Receive, Send] | None:
        """Spend budgets: a cost-creating request's worst case reserved, or it is refused
        (None: answered). Budgeted tenants' answers carry what remains of their budget."""
        if self._spending is None:
            return None, receive, send
        spent, receive = await self._spending.admit(identity.tenant, operation, receive)
        if isinstance(spent, ErrorResponse):
            tenant, label = identity.tenant, identity.label
            await self._refuse(send, tenant, label, operation, "throttled", spent)
            return None
        return spent, receive, self._spending.with_headers(send, identity.tenant, spent)

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
        self, scope: Scope, receive: Receive, send: Send, exchange: Exchange, headers: Headers
    ) -> None:
        method: str = scope["method"]
        operation, tenant = exchange.operation, exchange.identity.tenant
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        query = scope["query_string"].decode("latin-1")
        isolated = not self._ownership.reaches_all(tenant)
        metered = self._tokens.reads_body(tenant, operation) if self._tokens else False
        try:
            body, document = await self._body(
                receive, method, operation, headers, isolated, metered
            )
            named = named_ids(operation, raw_path, query, document)
            exchange.tag(body)
            twins, owned_parent = await self._isolate(tenant, operation, named)
            if twins:
                raw_path, query = twins.path(raw_path), twins.query(query)
                if document is not None:
                    body = references.replaced(document, twins.of, anywhere=not operation.known)
        except ClientDisconnected:
            exchange.finish("rejected")
            return
        except (Refused, LedgerUnavailable) as exc:
            exchange.finish("rejected")
            await send_error(send, exc.response())
            return
        except references.UnreadableBody:
            exchange.finish("rejected")
            await send_error(send, unparseable_body())
            return
        if isolated:
            # Every answer an isolated tenant gets comes in a coding tollhouse can undo,
            # refused (twinned) or not, so the two cannot be told apart by their coding.
            headers = narrowed(headers)
            self._mark(exchange, twins, owned_parent, named)
        if isinstance(body, bytes):
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        if metered and not await self._reserve_tokens(send, exchange, body, raw_path):
            return
        self._watch_cost(exchange)
        exchange.upstream_started = self._clock()
        try:
            if not twins and self._filters(tenant, operation):
                await self._filtered_list(receive, send, exchange, method, raw_path, query, headers)
                return
            response = await self._forwarder.send(method, raw_path, query, headers, body)
        except UpstreamError as exc:
            log.warning("upstream request failed for %s %s: %s", method, operation.name, exc)
            exchange.finish("upstream_error")
            await send_error(send, exc.response())
            return
        except ClientDisconnected:
            exchange.finish("rejected")
            return
        add_headers(response, exchange)
        try:
            if twins:
                await self._relayer.restored(response, receive, send, exchange, twins)
            else:
                await self._relayer.relay(response, receive, send, exchange)
        finally:
            response.close()

    async def _body(
        self,
        receive: Receive,
        method: str,
        operation: Operation,
        headers: Headers,
        isolated: bool,
        metered: bool,
    ) -> tuple[Body, object]:
        """The request body, read whole once when the isolation or the token step needs it."""
        if not (isolated or metered):  # nothing to check: the body streams as it comes
            return await request_body(receive), None
        body, document = await checked_body(receive, method, operation, headers, self._max_body)
        return body, document if isolated else None

    async def _reserve_tokens(self, send: Send, exchange: Exchange, body: Body, path: str) -> bool:
        """The token step: reserve the call's estimate; False when refused (and answered)."""
        assert self._tokens is not None
        if not isinstance(body, bytes):  # no body: the upstream's own 400 says so
            return True
        tenant, operation = exchange.identity.tenant, exchange.operation
        call = await self._tokens.admit(tenant, operation, body, path)
        if call is None:
            return True
        if not call.decision.allowed:
            exchange.finish("throttled")
            await send_error(send, call.decision.refusal())
            return False
        exchange.tokens = call
        exchange.observer.watch(call.seen)
        return True

    def _watch_cost(self, exchange: Exchange) -> None:
        """The answer's cost, for its header; usage of responses the token step awaits."""
        name = exchange.operation.name
        if self._tokens is not None and name in COSTED_OPERATIONS:
            exchange.cost = AnswerCost(self._tokens, exchange.identity.tenant)
            exchange.observer.watch(exchange.cost.seen)
            if name in LATER_OPERATIONS:
                exchange.observer.watch(self._tokens.later)

    def _mark(self, exchange: Exchange, twins: Twins, owned_parent: bool, named: Named) -> None:
        """Count a refusal; or let the observer take what the tenant's own answer holds."""
        operation = exchange.operation
        if twins:
            self._metrics.isolation_denials.labels(exchange.identity.label, operation.name).inc()
            log.info("%s named objects %s cannot reach", operation.name, exchange.identity.tenant)
            exchange.touches = False
        elif owned_parent:  # (admins are not isolated: their sightings would take others')
            exchange.observer.sighting = True
            exchange.observer.named = frozenset([*operation.params.values(), *named.in_body])

    async def _isolate(self, tenant: str, operation: Operation, named: Named) -> tuple[Twins, bool]:
        """The twins of the ids ``tenant`` may not reach; whether it owns the path's parent."""
        twins = Twins(await self._ownership.foreign(tenant, named.strict, named.loose))
        parent = next(iter(operation.params.values()), None)
        if twins:
            owned_parent = False
        elif parent is not None:
            owned_parent = await self._ownership.owns(tenant, parent)
        else:
            owned_parent = operation.creates is not None
        return twins, owned_parent

    def _filters(self, tenant: str, operation: Operation) -> bool:
        return operation.name in SHARED_LISTS and not self._ownership.reaches_all(tenant)

    async def _filtered_list(
        self,
        receive: Receive,
        send: Send,
        exchange: Exchange,
        method: str,
        raw_path: str,
        query: str,
        headers: Headers,
    ) -> None:
        """An organisation-wide list, narrowed to the caller's objects."""
        tenant, label = exchange.identity.tenant, exchange.identity.label

        async def visible(ids: list[str]) -> set[str]:
            return set(ids) - await self._ownership.foreign(tenant, strict=ids)

        async def may_fetch() -> bool:
            decision = await self._quota.admit(tenant, RequestClass.GET)
            return decision.allowed

        try:
            request = ListRequest.parse(query)
        except BadPaging as exc:
            exchange.finish("rejected")
            error = ErrorResponse(400, str(exc), "invalid_request_error", exc.code, exc.param)
            await send_error(send, error)
            return
        pages = await filtered_list(
            self._forwarder,
            raw_path,
            request,
            headers,
            visible,
            may_fetch,
            self._list_pages,
        )
        if isinstance(pages, UpstreamResponse):
            pages.headers.extend(exchange.decision.headers())
            try:
                await self._relayer.relay(pages, receive, send, exchange)
            finally:
                pages.close()
            return
        self._metrics.list_pages.labels(label).inc(pages.upstream_pages)
        exchange.status = pages.status
        if observes(exchange.operation, pages.status):
            await exchange.observer.whole_body(pages.body, pages.status)
        exchange.finish("forwarded")
        headers_out = [*pages.headers, *exchange.decision.headers()]
        await send({"type": "http.response.start", "status": pages.status, "headers": headers_out})
        # HEAD (and OPTIONS) learn the filtered page's length, never the organisation's.
        content = pages.body if method == "GET" else b""
        await send({"type": "http.response.body", "body": content})

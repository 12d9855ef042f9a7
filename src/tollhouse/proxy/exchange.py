"""One request's passage through the proxy: who asked, what for, and what came of it, recorded
once in metrics, the ledger and its trace whichever way it ends."""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.trace import Span

from tollhouse.api.classify import Operation
from tollhouse.ledger.follow import FOLLOWING, Exchanged
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.metering.assistants import messages_added
from tollhouse.metering.flows import api_of
from tollhouse.proxy.flows import body_flow
from tollhouse.proxy.observe import Observer
from tollhouse.proxy.tenants import Identity
from tollhouse.proxy.tokens import (
    AnswerCost,
    TokenCall,
)
from tollhouse.quota.admission import Decision
from tollhouse.telemetry.metrics import Metrics
from tollhouse.telemetry.tracing import Tracing


class Exchange:
    """One request's bookkeeping; ``finish`` records it once, before its last bytes go out."""

    __slots__ = (
        "_clock",
        "_done",
        "_metrics",
        "_writer",
        "cost",
        "decision",
        "ended",
        "first_byte",
        "flow",
        "identity",
        "messages",
        "observer",
        "operation",
        "span",
        "started",
        "status",
        "streamed",
        "tokens",
        "touches",
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
        self.touches = True  # a success moves the last use of the objects it names
        self.tokens: TokenCall | None = None  # the call's token reservation, if any
        self.cost: AnswerCost | None = None  # the answer's cost, if it can carry usage
        self._done = False
        self.flow: str | None = None
        self.messages = 0
        self.streamed = False
        self.first_byte: float | None = None
        self.ended: float | None = None

    def tag(self, body: object) -> None:
        """What the request body adds: messages to a thread; a flow name in its metadata, for
        a create not tagged by its header."""
        self.messages = messages_added(self.operation.name, body)
        if self.flow is None and self.operation.creates is not None:
            self.flow = body_flow(body)

    def first_out(self) -> None:
        """The first byte of the answer's body is going out."""
        if self.first_byte is None:
            self.first_byte = self._clock()

    def exchanged(self) -> Exchanged | None:
        """For the ledger: what this request was and how long its answer took (none
        if no answer came from upstream)."""
        if self.status is None or self.ended is None:
            return None
        if self.flow is None and not self.messages and self.operation.name not in FOLLOWING:
            return None  # nothing the ledger keeps: not even built
        first = self.ended if self.first_byte is None else min(self.first_byte, self.ended)
        observer = self.observer
        return Exchanged(
            tenant=self.identity.tenant,
            operation=self.operation.name,
            api=api_of(self.operation.name),
            status=self.status,
            streamed=self.streamed,
            runs=tuple(observer.runs),
            responses=tuple(observer.responses),
            flow=self.flow,
            thread=self.operation.params.get("thread_id") or next(iter(observer.threads), None),
            messages=self.messages,
            first_byte_ms=round((first - self.started) * 1000),
            last_byte_ms=round((self.ended - self.started) * 1000),
        )

    def finish(self, outcome: str) -> None:
        if self._done:
            return
        self._done = True
        self.ended = self._clock()
        metrics, operation = self._metrics, self.operation
        if outcome == "forwarded":
            outcome = self.decision.outcome  # forwarded, or shadow_throttled
        metrics.count(self.identity.label, operation, outcome)
        self._writer.count_request(self.identity.tenant, operation.request_class, outcome)
        Tracing.end(self.span, outcome, self.status)
        if self.tokens is not None:
            self.tokens.ended(self.status)
        if self.status is not None:
            metrics.upstream_status(operation.request_class, self.status)
            if self.status < 400 and operation.params and self.touches:
                self._writer.touch(operation.params.values())
        if self.upstream_started is not None and outcome != "upstream_error":
            now = self._clock()
            upstream = now - self.upstream_started
            metrics.upstream_duration.labels(operation.request_class, operation.name).observe(
                upstream
            )
            added = now - self.started - upstream - self.decision.wait
            metrics.overhead.observe(max(added, 0.0))

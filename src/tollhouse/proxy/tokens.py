"""The token step of the request path: a model call's tokens estimated and reserved before
it is sent, settled with its usage once known; and what an answer's usage costs its caller.

Only ``responses.create`` and ``chat.completions.create`` are estimated (their bodies say
everything the model reads); a run's input lives upstream in its thread, so runs are
limited by their request class alone. Settling happens in a task of its own, never on the
path of the answer; a failed settlement is logged and counted, and leaves the reservation
spent, as does a call that ends without reporting usage.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import unquote

import tiktoken

from tollhouse.api.classify import Operation
from tollhouse.config.policy import Policy
from tollhouse.metering.charge import answer_cost, final_usage, header_value
from tollhouse.metering.estimate import Api, Estimate, Estimator, load_o200k
from tollhouse.metering.meter import RunSeen, Seen
from tollhouse.metering.pricing import PricingTable
from tollhouse.metering.responses import ResponseSeen
from tollhouse.quota.memory import RESERVATION_TTL
from tollhouse.quota.tokens import TokenDecision, TokenQuota
from tollhouse.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

TOKEN_APIS: dict[str, Api] = {"responses.create": "responses", "chat.completions.create": "chat"}
# Answers that can carry final usage, whose cost is told in a header when they are JSON.
COSTED_OPERATIONS = frozenset(
    {
        "responses.create",
        "responses.retrieve",
        "responses.cancel",
        "chat.completions.create",
        "threads.runs.retrieve",
        "threads.runs.cancel",
    }
)
COST_HEADER = b"x-tollhouse-cost-usd"
# Bodies up to this size are estimated on the event loop (tens of microseconds); larger
# ones in a worker thread, so that counting never holds up other requests.
INLINE_BYTES = 8 * 1024
DEPLOYMENTS = "/openai/deployments/"
# Answers whose response may be one a call left to finish later (in the background).
LATER_OPERATIONS = frozenset({"responses.retrieve", "responses.cancel"})
MAX_PENDING = 100_000  # responses awaited at most; the oldest are given up first
Headers = list[tuple[bytes, bytes]]


class TokenStep:
    """Estimates, reserves and settles model calls' tokens under the policy in force."""

    def __init__(
        self,
        quota: TokenQuota,
        policy: Callable[[], Policy],
        pricing: PricingTable,
        metrics: Metrics,
        label: Callable[[str], str],
        encoding: tiktoken.Encoding | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._quota = quota
        self._policy = policy
        self._pricing = pricing
        self._metrics = metrics
        self._label = label
        self._encoding = encoding
        self._loading: asyncio.Task[None] | None = None
        self._estimators: dict[int, Estimator] = {}
        self._settling: set[asyncio.Task[None]] = set()
        self._clock = clock
        # response id -> (its call's decision, until when): responses that finish later
        self._pending: OrderedDict[str, tuple[TokenDecision, float]] = OrderedDict()
        # Headers told beside an answer's cost, from (tenant, cost): where a spend budget
        # adds what is left of it (x-tollhouse-budget-remaining-usd).
        self.beside_cost: list[Callable[[str, Decimal], Headers]] = []

    async def prepare(self) -> None:
        """At start-up: if the policy limits tokens, load the encoding (about a second of
        CPU) in a worker thread, once. (A reload that turns limits on loads it then.)"""
        if self._encoding is None and self._policy().token_limited:
            if self._loading is None:
                self._loading = asyncio.ensure_future(self._load())
            await self._loading

    async def _load(self) -> None:
        self._encoding = await asyncio.to_thread(load_o200k)
        self._estimators.clear()

    def reads_body(self, tenant: str, operation: Operation) -> bool:
        """Whether the request's body must be read whole to estimate its tokens."""
        return operation.name in TOKEN_APIS and self._quota.applies(tenant)

    def _estimator(self) -> Estimator:
        if self._encoding is None and self._loading is None:
            # a reload turned token limits on: load now, count by bytes meanwhile
            self._loading = asyncio.ensure_future(self._load())
        default = self._policy().token_estimates.default_output_tokens
        estimator = self._estimators.get(default)
        if estimator is None:
            estimator = self._estimators[default] = Estimator(self._encoding, default)
        return estimator

    async def admit(
        self, tenant: str, operation: Operation, body: bytes, path: str = ""
    ) -> TokenCall | None:
        """Reserve the call's estimate; None when no token limit applies to it.

        An Azure deployment's call names its model in the path, not the body: the
        deployment's name then stands for the model."""
        api = TOKEN_APIS.get(operation.name)
        if api is None or not self._quota.applies(tenant):
            return None
        estimator = self._estimator()
        if len(body) <= INLINE_BYTES:
            estimated = _estimate(estimator, body, api)
        else:
            estimated = await asyncio.to_thread(_estimate, estimator, body, api)
        if estimated is None:  # not a JSON object: the upstream's own 400 will say so
            return None
        model, estimate = estimated
        model = model or deployment(path)
        decision = await self._quota.reserve(tenant, model, estimate.total)
        if decision is None:
            return None
        outcome = (
            ("shadow_throttled" if decision.shadow else "forwarded")
            if decision.allowed
            else ("too_large" if decision.too_large else "throttled")
        )
        self._metrics.record_token_reservation(self._label(tenant), outcome, estimate.total)
        return TokenCall(self, decision)

    def settle(self, decision: TokenDecision, actual: int, outcome: str) -> None:
        """Settle in a task of its own; the answer does not wait for it."""
        reservation = decision.reservation
        if reservation is None:
            return
        task = asyncio.ensure_future(self._settle(decision, actual, outcome))
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def _settle(self, decision: TokenDecision, actual: int, outcome: str) -> None:
        assert decision.reservation is not None
        try:
            settled = await self._quota.settle(decision.reservation, actual)
        except Exception:  # the answer went out; the reservation stays spent
            log.exception("settling %d tokens of %s failed", actual, decision.tenant)
            self._metrics.record_token_settlement("failed", 0)
            return
        if not settled.applied:
            outcome = "not_applied"  # settled before, kept past its time, or Redis away
        self._metrics.record_token_settlement(outcome, actual - decision.reservation.tokens)

    async def settled(self) -> None:
        """Wait for the settlements under way (tests, and a clean stop)."""
        while self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    def kept(self) -> None:
        """A call that succeeded without reporting usage keeps its reservation."""
        self._metrics.record_token_settlement("kept", 0)

    def await_usage(self, response_id: str, decision: TokenDecision) -> None:
        """A response that finishes later (in the background, or a stream cut short):
        settled when an answer of this process shows its usage, while it can be."""
        now = self._clock()
        pending = self._pending
        pending[response_id] = (decision, now + RESERVATION_TTL)
        while pending and (len(pending) > MAX_PENDING or next(iter(pending.values()))[1] <= now):
            pending.popitem(last=False)
            self.kept()

    def later(self, observations: list[Seen]) -> None:
        """Watches retrieve and cancel answers for the usage of responses awaited."""
        if not self._pending:
            return
        for seen in observations:
            if isinstance(seen, ResponseSeen) and seen.usage is not None:
                entry = self._pending.pop(seen.id, None)
                if entry is not None:
                    self.settle(entry[0], seen.usage.total_tokens, "settled")

    def cost(self, seen: list[Seen]) -> Decimal | None:
        try:
            return answer_cost(self._pricing, seen)
        except ValueError as exc:  # counts no price can be given for
            log.warning("cannot price an answer's usage: %s", exc)
            return None


class TokenCall:
    """One request's tokens: its decision, its settlement (once), and its answer's cost."""

    __slots__ = ("_response", "_settled", "_step", "cost", "decision")

    def __init__(self, step: TokenStep, decision: TokenDecision) -> None:
        self._step = step
        self.decision = decision
        self._settled = False
        self._response: str | None = None  # the response the answer named, if any
        self.cost: Decimal | None = None

    def headers(self) -> Headers:
        return self.decision.headers()

    def seen(self, observations: list[Seen]) -> None:
        """What the observer read: final usage settles the reservation."""
        for observation in observations:
            if isinstance(observation, ResponseSeen):
                self._response = observation.id
        found = final_usage(observations)
        if found is None or isinstance(found, RunSeen) or found.usage is None:
            return
        if not self._settled:
            self._settled = True
            self._step.settle(self.decision, found.usage.total_tokens, "settled")

    def ended(self, status: int | None) -> None:
        """The exchange is over: an error answer (no model call ran) gives everything back;
        a response still running is awaited; any other success that never reported usage
        keeps what it reserved."""
        if self._settled:
            return
        self._settled = True
        if status is None or status >= 400:
            self._step.settle(self.decision, 0, "refunded")
        elif self._response is not None:
            self._step.await_usage(self._response, self.decision)
        else:
            self._step.kept()


class AnswerCost:
    """The cost of an answer's final usage, for the ``x-tollhouse-cost-usd`` header."""

    __slots__ = ("_step", "_tenant", "value")

    def __init__(self, step: TokenStep, tenant: str) -> None:
        self._step = step
        self._tenant = tenant
        self.value: Decimal | None = None

    def seen(self, observations: list[Seen]) -> None:
        cost = self._step.cost(observations)
        if cost is not None:
            self.value = cost

    def headers(self) -> Headers:
        if self.value is None:
            return []
        headers = [(COST_HEADER, header_value(self.value))]
        for beside in self._step.beside_cost:
            headers += beside(self._tenant, self.value)
        return headers


def deployment(path: str) -> str:
    """The deployment an Azure path names (``/openai/deployments/{name}/...``), or ``""``."""
    if not path.startswith(DEPLOYMENTS):
        return ""
    return unquote(path[len(DEPLOYMENTS) :].split("/", 1)[0])


def _estimate(estimator: Estimator, body: bytes, api: Api) -> tuple[str, Estimate] | None:
    try:
        document: Any = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    model = document.get("model")
    return (model if isinstance(model, str) else ""), estimator.estimate(document, api)

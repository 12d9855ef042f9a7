"""Spend budgets on the request path: reserve a request's worst case, settle it, count costs.

A request that creates cost (``budgets.worst_case_usd`` names the operations) from a
tenant with a budget reserves its worst case in every period of the budget at once
(committed + in flight + this request <= the hard limit, else 429
``insufficient_quota``). When it ends, the reservation is released, or, if its answer
left a costly object running (a queued run, a background response), it stays in flight
until that object's cost is metered. Metered costs come from the ledger writer's
observations (``metered``) and are committed once per object across every replica that
shares the store. The request path never waits on the database: the store is memory or
Redis, like the buckets; settlements go to it in order, from a background task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial

from tollhouse.api.classify import Operation
from tollhouse.api.errors import ErrorResponse
from tollhouse.config.policy import Policy, TenantBudget
from tollhouse.metering.estimate import Estimator
from tollhouse.metering.meter import Seen as Sighting
from tollhouse.metering.pricing import PricingTable
from tollhouse.proxy.asgi import Message, Receive, Send
from tollhouse.quota.backends import PeriodKey, SpendStore, SpendUnavailable
from tollhouse.quota.budget import (
    Period,
    Standing,
    micros,
    periods,
    refusal,
    remaining_header,
    usd,
)
from tollhouse.quota.spend_costs import Metered, metered_cost, pending_object, worst_case
from tollhouse.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

# How long a reservation counts if nothing settles it (its replica died, its run was
# never seen again): then it stops counting, on the store's clock.
HOLD_TTL = 3600.0


@dataclass
class Hold:
    """One request's reservation: its worst case, in flight in each of its periods."""

    id: str
    tenant: str
    amount: int  # micro-dollars
    keys: list[str]
    standings: list[Standing]
    done: bool = False  # released, or left in flight until a running object's cost is known
    ended: bool = False  # its request is over


@dataclass
class _Shown:
    """The latest spend this replica knows of a tenant, for headers on any answer."""

    standings: list[Standing] = field(default_factory=list)


def _keys(found: Iterable[Period]) -> list[PeriodKey]:
    return [(p.key, p.limit, p.expires_at) for p in found]


class Spending:
    """Spend budgets for the proxy; one per process, over one store."""

    def __init__(
        self,
        store: SpendStore,
        policy: Callable[[], Policy],
        pricing: PricingTable,
        estimator: Estimator,
        metrics: Metrics,
        label: Callable[[str], str],
        clock: Callable[[], float],
        max_body: int,
        hold_ttl: float = HOLD_TTL,
    ) -> None:
        self._store = store
        self._policy = policy
        self._pricing = pricing
        self._estimator = estimator
        self._metrics = metrics
        self._label = label
        self._clock = clock
        self._max_body = max_body
        self._hold_ttl = hold_ttl
        self._shown: dict[str, _Shown] = {}
        self._queue: deque[tuple[str, Callable[[], Awaitable[object]]]] = deque()
        self._drainer: asyncio.Task[None] | None = None
        self._settling: Hold | None = None
        self._open = 0  # requests holding a reservation that have not ended
        self._idle = asyncio.Event()
        self._idle.set()
        # A store in memory starts empty: what finished before this start is in the ledger,
        # counted by the seeding, and must not count again when it is seen again.
        self._started = int(clock()) if store.name == "memory" else None  # (whole seconds)
        self._initialise()

    def _initialise(self) -> None:
        """The budgeted tenants' label sets, at zero spend, from the start."""
        now = self._clock()
        for tenant in self.tenants():
            self._metrics.budget_refusals.labels(self._label(tenant))
            self._show(tenant, [Standing(p, 0) for p in self.periods(tenant, now)])

    # -- admission --------------------------------------------------------------------------

    def tenants(self) -> list[str]:
        """The tenants the policy in force gives a budget."""
        return sorted(self._policy().budgets.tenants)

    def budget(self, tenant: str) -> TenantBudget | None:
        return self._policy().budgets.tenants.get(tenant)

    def periods(self, tenant: str, at: float | None = None) -> list[Period]:
        """The tenant's budget periods holding ``at`` (default: now); [] without a budget."""
        budget = self.budget(tenant)
        if budget is None:
            return []
        zone = self._policy().budgets.zone
        return periods(tenant, budget, self._clock() if at is None else at, zone)

    async def admit(
        self, tenant: str, operation: Operation, receive: Receive
    ) -> tuple[Hold | ErrorResponse | None, Receive]:
        """Reserve the worst case of a cost-creating request; None when nothing is reserved.

        Reads the JSON body of such a request (up to ``max_body``) to price it, and
        returns a ``receive`` that hands the body on unchanged.
        """
        budgets = self._policy().budgets
        if operation.name not in budgets.worst_case_usd or tenant not in budgets.tenants:
            return None, receive
        found = self.periods(tenant)
        body, receive = await _peek(receive, self._max_body)
        today = datetime.fromtimestamp(self._clock(), UTC).date()
        amount = micros(
            worst_case(operation.name, body, budgets, self._pricing, self._estimator, today)
        )
        hold = Hold(uuid.uuid4().hex, tenant, amount, [p.key for p in found], [])
        try:
            refused, spent = await self._store.reserve(
                hold.id, _keys(found), amount, self._hold_ttl
            )
        except SpendUnavailable as exc:
            # Admitting unchecked beats refusing everyone while the store is away.
            log.warning("spend store unreachable, %s admitted unchecked: %s", operation.name, exc)
            self._metrics.budget_store_errors.inc()
            return None, receive
        hold.standings = [Standing(p, s) for p, s in zip(found, spent, strict=True)]
        self._show(tenant, hold.standings)
        if refused is not None:
            self._metrics.budget_refusals.labels(self._label(tenant)).inc()
            return refusal(tenant, hold.standings[refused], amount), receive
        self._open += 1
        self._idle.clear()
        return hold, receive

    def headers(self, tenant: str, hold: Hold | None) -> list[tuple[bytes, bytes]]:
        """``x-tollhouse-budget-remaining-usd`` for a tenant with a budget."""
        if hold is not None:
            return remaining_header(hold.standings)
        shown = self._shown.get(tenant)
        if shown is None or self.budget(tenant) is None:
            return []
        now = self._clock()
        return remaining_header([s for s in shown.standings if s.period.end.timestamp() > now])

    def with_headers(self, send: Send, tenant: str, hold: Hold | None) -> Send:
        """``send``, adding the budget header to the answer's start (budgeted tenants only)."""
        if self.budget(tenant) is None:
            return send

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = self.headers(tenant, hold)
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return sending

    # -- settlement ---------------------------------------------------------------------

    def settle(self, hold: Hold | None, hand_over: Callable[[], None]) -> None:
        """After a request: its observations go to the ledger writer (``hand_over``), whose
        costs this commits (``metered``); then the reservation is released, unless the
        answer left a costly object running, on which it stays until that is metered."""
        self._settling = hold
        try:
            hand_over()
        finally:
            self._settling = None
            self.release(hold)

    def release(self, hold: Hold | None) -> None:
        """Take a request's reservation out of flight (its request failed or is settled)."""
        if hold is None:
            return
        if not hold.done:
            hold.done = True
            self._enqueue(hold.tenant, lambda: self._store.release(hold.id, hold.keys))
        if not hold.ended:
            hold.ended = True
            self._open -= 1
            if not self._open:
                self._idle.set()

    def metered(self, tenant: str, observations: Iterable[Sighting]) -> None:
        """The ledger writer's hook: costs made final by what it was handed, committed once."""
        if self.budget(tenant) is None:
            return
        now = self._clock()
        day = datetime.fromtimestamp(now, UTC).date()
        hold = self._settling
        for observation in observations:
            cost = metered_cost(observation, self._pricing, _day(observation, day))
            if cost is not None:
                self._commit(tenant, cost, now)
                continue
            running = pending_object(observation)
            if running and hold is not None and hold.tenant == tenant and not hold.done:
                hold.done = True
                self._enqueue(tenant, partial(self._park, hold, running))

    def _commit(self, tenant: str, cost: Metered, now: float) -> None:
        if self._started is not None and cost.at is not None and cost.at < self._started:
            return
        found = self.periods(tenant, cost.at)
        live = [p for p in found if p.expires_at > now]
        if not live:
            return
        amount = micros(cost.usd)
        ttl = max(p.expires_at for p in live) - now

        async def commit() -> None:
            _, parked = await self._store.commit(cost.object_id, _keys(live), amount, ttl)
            if parked is not None:
                await self._store.release(*parked)

        self._enqueue(tenant, commit)

    async def _park(self, hold: Hold, object_id: str) -> None:
        if not await self._store.park(hold.id, hold.keys, object_id, self._hold_ttl):
            await self._store.release(hold.id, hold.keys)  # its cost is in already

    # -- start-up -------------------------------------------------------------------------

    async def seed(self, tenant: str, ledger: dict[str, Decimal], at: float) -> None:
        """Committed spend of the periods holding ``at`` is at least what the ledger has
        (by period name); the live count may already be ahead of it."""
        found = [p for p in self.periods(tenant, at) if p.name in ledger]
        await self._store.seed(_keys(found), [micros(ledger[p.name]) for p in found])
        await self.refresh(tenant)

    def seeded(self, done: bool) -> None:
        self._metrics.budget_seeded.set(1 if done else 0)

    # -- the background queue -------------------------------------------------------------

    def _enqueue(self, tenant: str, step: Callable[[], Awaitable[object]]) -> None:
        self._queue.append((tenant, step))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.create_task(self._drain(), name="spend-settlements")

    async def _drain(self) -> None:
        """Settlements in the order they were made: a commit before the release after it.

        Runs until the queue is empty with nothing awaited since it was last looked at,
        so whatever is queued meanwhile (while spend is refreshed) is drained too.
        """
        while self._queue:
            touched: set[str] = set()
            while self._queue:
                tenant, step = self._queue.popleft()
                touched.add(tenant)
                try:
                    await step()
                except SpendUnavailable as exc:
                    # A lost release ends with its hold's time; a lost commit is in the
                    # ledger, and counts again from the next start's seeding.
                    log.warning("spend store unreachable, a settlement is lost: %s", exc)
                    self._metrics.budget_store_errors.inc()
            for tenant in touched:
                await self.refresh(tenant)

    async def refresh(self, tenant: str) -> None:
        found = self.periods(tenant)
        if not found:
            return
        try:
            spent = await self._store.spent(_keys(found))
        except SpendUnavailable as exc:
            log.warning("spend store unreachable, %s's spend not refreshed: %s", tenant, exc)
            self._metrics.budget_store_errors.inc()
            return
        self._show(tenant, [Standing(p, s) for p, s in zip(found, spent, strict=True)])

    def _show(self, tenant: str, standings: list[Standing]) -> None:
        self._shown.setdefault(tenant, _Shown()).standings = standings
        label, metrics = self._label(tenant), self._metrics
        thresholds = self._policy().budgets.thresholds(tenant)
        for standing in standings:
            name, limit = standing.period.name, usd(standing.period.limit)
            metrics.budget_usd.labels(label, name).set(limit)
            metrics.budget_spent_usd.labels(label, name).set(usd(standing.spent))
            for fraction in thresholds:
                metrics.budget_soft_usd.labels(label, name, f"{fraction:g}").set(limit * fraction)

    async def settled(self) -> None:
        """Wait until no request holds a reservation and every settlement reached the store."""
        await self._idle.wait()
        await self._drained()

    async def _drained(self) -> None:
        while self._drainer is not None and not self._drainer.done():
            await asyncio.shield(self._drainer)

    async def close(self) -> None:
        """Send what was handed over to the store (requests have ended), and close it."""
        await self._drained()
        await self._store.close()


def _day(observation: Sighting, today: date) -> date:
    at = getattr(observation, "finished_at", None) or getattr(observation, "created_at", None)
    return datetime.fromtimestamp(at, UTC).date() if isinstance(at, int) else today


async def _peek(receive: Receive, limit: int) -> tuple[object, Receive]:
    """The request's JSON body (None if not JSON or past ``limit``), and a ``receive``
    that replays what was read before passing on to the client's."""
    read: list[Message] = []
    size = 0
    while True:
        message = await receive()
        read.append(message)
        if message["type"] == "http.disconnect":
            break
        size += len(message.get("body", b""))
        if size > limit or not message.get("more_body", False):
            break
    replay = deque(read)

    async def replaying() -> Message:
        return replay.popleft() if replay else await receive()

    complete = read[-1]["type"] != "http.disconnect" and not read[-1].get("more_body", False)
    if not complete or size > limit:
        return None, replaying
    try:
        return json.loads(b"".join(m.get("body", b"") for m in read)), replaying
    except (ValueError, RecursionError):
        return None, replaying

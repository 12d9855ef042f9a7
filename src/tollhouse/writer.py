"""The ledger writer: batches observations off the request path and never loses them.

The proxy hands observations over without waiting. A background task writes
them in batches, in a worker thread. When the database fails, the batch goes
to the spool file and is replayed once the database answers again; every
failure is logged and counted in ``tollhouse_ledger_write_errors_total``.
Ownership records are the exception: a create's owner is written before the
create's response is returned (``record_owned``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollhouse import ledger
from tollhouse.ledger import Batch, Counted, Owned, Sample, Seen
from tollhouse.meter import ObjectSeen, RunSeen, StepSeen
from tollhouse.metrics import Metrics
from tollhouse.pricing import PricingTable, token_cost
from tollhouse.spool import Spool

log = logging.getLogger(__name__)


class LedgerWriter:
    def __init__(
        self,
        engine: Engine,
        metrics: Metrics,
        pricing: PricingTable,
        spool: Spool,
        label: Callable[[str], str],
        clock: Callable[[], float] = time.time,
        interval: float = 0.25,
        max_pending: int = 50_000,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._pricing = pricing
        self._spool = spool
        self.label = label
        self._clock = clock
        self._interval = interval
        self._max_pending = max_pending
        self._pending = Batch()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._owned_queue: list[tuple[Batch, asyncio.Future[None]]] = []
        self._owned_writer: asyncio.Task[None] | None = None
        self._known_tenants: set[str] = set()
        # The latest sighting of each run since the last flush (a terminal one wins).
        self._runs: dict[str, Seen] = {}

    # -- the request path: no waiting ---------------------------------------------------

    def add(self, tenant: str, observations: Iterable[RunSeen | StepSeen | ObjectSeen]) -> None:
        for observation in observations:
            if isinstance(observation, RunSeen):
                # Polls of one run collapse to its latest state (terminal wins), so a
                # client polling in a tight loop costs one row per flush, not one per poll.
                previous = self._runs.get(observation.id)
                if previous is None or observation.terminal or not _terminal(previous):
                    self._runs[observation.id] = Seen(tenant, observation)
            elif isinstance(observation, ObjectSeen):
                self._pending.owned.append(Owned(tenant, observation))
            else:
                self._pending.seen.append(Seen(tenant, observation))
        self._maybe_wake()

    def add_sample(self, sample: Sample) -> None:
        self._pending.samples.append(sample)
        self._maybe_wake()

    def touch(self, object_ids: Iterable[str]) -> None:
        """Objects a successful request used: their last use moves to now (for the cleaner)."""
        now = int(self._clock())
        touched = self._pending.touched
        for object_id in object_ids:
            touched[object_id] = now

    def count_request(self, tenant: str, request_class: str, outcome: str) -> None:
        minute = int(self._clock()) // 60 * 60
        key = (tenant, request_class, outcome, minute)
        requests = self._pending.requests
        requests[key] = requests.get(key, 0) + 1

    def _maybe_wake(self) -> None:
        if len(self._pending) + len(self._runs) >= self._max_pending:
            self._wake.set()

    # -- creates: the owner is written before the response goes out ---------------------

    async def record_owned(self, tenant: str, objects: list[ObjectSeen]) -> None:
        """Write owners now; concurrent creates share one transaction (group commit).

        If the database fails the records go to the spool, and the create still
        succeeds: the proxy's own cache already enforces the new ownership.
        """
        done = asyncio.get_running_loop().create_future()
        self._owned_queue.append((Batch(owned=[Owned(tenant, o) for o in objects]), done))
        if self._owned_writer is None or self._owned_writer.done():
            self._owned_writer = asyncio.create_task(self._write_owned())
        await done

    async def _write_owned(self) -> None:
        while self._owned_queue:
            queued, self._owned_queue = self._owned_queue, []
            batch = Batch(owned=[owned for part, _ in queued for owned in part.owned])
            new_tenants = sorted({o.tenant for o in batch.owned} - self._known_tenants)
            try:
                await asyncio.to_thread(
                    ledger.record_owners, self._engine, batch.owned, new_tenants, int(self._clock())
                )
            except SQLAlchemyError as exc:
                self._failed(batch, exc)
            else:
                self._known_tenants.update(new_tenants)
            for _, done in queued:
                if not done.done():
                    done.set_result(None)

    def spooled(self) -> bool:
        """Whether records are waiting in the spool for the database."""
        return self._spool.pending()

    # -- the background task ------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            # wake on the interval, or early when the pending batch is full
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything handed over so far (and the spool, if the database is back)."""
        async with self._lock:
            if self._spool.pending():
                await asyncio.to_thread(self._replay)
            batch, self._pending = self._pending, Batch()
            batch.seen.extend(self._runs.values())
            self._runs = {}
            if not len(batch):
                return
            try:
                counted = await asyncio.to_thread(
                    ledger.apply, self._engine, batch, int(self._clock())
                )
            except SQLAlchemyError as exc:
                self._failed(batch, exc)
                return
            self._count(counted)

    def _failed(self, batch: Batch, exc: Exception) -> None:
        self._metrics.ledger_write_errors.inc()
        log.error(
            "ledger write failed (%d records spooled to %s for replay): %s",
            len(batch),
            self._spool.path,
            exc,
        )
        self._spool.append(batch)

    def _replay(self) -> None:
        batches = self._spool.read()
        for done, batch in enumerate(batches):
            try:
                counted = ledger.apply(self._engine, batch, int(self._clock()))
            except SQLAlchemyError as exc:
                log.warning("spool replay paused, database still failing: %s", exc)
                self._spool.rewrite(batches[done:])
                return
            self._count(counted)
        self._spool.clear()
        log.info("spool replayed: %d batches written to the ledger", len(batches))

    # -- metrics for what was new ---------------------------------------------------------

    def _count(self, counted: Counted) -> None:
        metrics, label = self._metrics, self.label
        for finished in counted.finished_runs:
            run, tenant = finished.run, label(finished.tenant)
            metrics.runs.labels(tenant, run.status).inc()
            if run.finished_at is not None:
                metrics.run_duration.labels(run.status).observe(
                    max(0, run.finished_at - run.created_at)
                )
            usage, model = run.usage, run.model or "unknown"
            if usage is None:
                continue
            metrics.tokens.labels(tenant, model, "input").inc(usage.prompt_tokens)
            metrics.tokens.labels(tenant, model, "output").inc(usage.completion_tokens)
            day = _day(run.finished_at or run.created_at)
            cost = token_cost(
                self._pricing, run.model, usage.prompt_tokens, usage.completion_tokens, day
            )
            if cost is None:
                metrics.unpriced_usage.labels(model).inc(usage.total_tokens)
            else:
                metrics.cost.labels(tenant, "tokens").inc(float(cost))
        for tenant, tool in counted.tool_calls:
            if tool == "file_search":
                metrics.file_search_calls.labels(label(tenant)).inc()
                price = self._pricing.file_search_call(_day(self._clock()))
                metrics.cost.labels(label(tenant), "file_search_calls").inc(float(price))
        for tenant in counted.sessions:
            metrics.code_interpreter_sessions.labels(label(tenant)).inc()
            price = self._pricing.code_interpreter_session(_day(self._clock()))
            metrics.cost.labels(label(tenant), "code_interpreter").inc(float(price))


def _terminal(seen: Seen) -> bool:
    return isinstance(seen.observation, RunSeen) and seen.observation.terminal


def _day(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()

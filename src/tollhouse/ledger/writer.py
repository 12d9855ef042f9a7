"""The ledger writer: batches observations off the request path and never loses them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from functools import partial

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.ledger import store as ledger
from tollhouse.ledger.follow import FOLLOWING, Exchanged
from tollhouse.ledger.responses import merged
from tollhouse.ledger.spool import Spool, SpoolError
from tollhouse.ledger.store import Batch, Counted, Owned, Sample, Seen
from tollhouse.metering.costs import token_cost
from tollhouse.metering.flows import FlowNames
from tollhouse.metering.meter import ObjectSeen, RunSeen
from tollhouse.metering.meter import Seen as Sighting
from tollhouse.metering.pricing import PricingTable
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    ToolItemSeen,
    auto_containers,
)
from tollhouse.telemetry.metered import SuccessorMetrics
from tollhouse.telemetry.metrics import Metrics

log = logging.getLogger(__name__)
FORGET_EVERY = 3600  # seconds between prunings of applied batch ids
APPLIED_KEPT = 30 * 86400  # a spooled batch replayed later than this could count twice

# Spooled batches replayed at most per flush: a long backlog drains over several
# flushes, and what the proxy hands over meanwhile waits one flush, not the whole drain.
REPLAY_LIMIT = 500


@dataclass
class _Written:
    """What one flush did, handed back from the ledger thread to the event loop."""

    counted: list[Counted] = field(default_factory=list)
    kept: Batch | None = None  # neither the database nor the spool took it


class LedgerWriter:
    """Writes what the proxy observed to the ledger, in batches, off the request path.

    The proxy hands observations over without waiting. A background task writes them
    every ``interval`` in a thread of the writer's own. A batch the database refuses
    goes to the spool (see ``spool``); while the spool holds anything, each new batch
    joins its end and the oldest are replayed first, so the ledger sees batches in the
    order they were made. Failures are logged when they start and stop and counted in
    ``tollhouse_ledger_write_errors_total``.

    Ownership records are the exception: a create's owners are written before its
    answer goes back (``record_owned``), in a second thread, for at most
    ``owner_timeout``. A write that takes longer is left running and the owners go to
    the spool, fsynced, before ``record_owned`` returns; the late commit, if it comes,
    changes nothing (owners are upserted, the first owner wins). While such a write is
    still waiting, later owners go straight to the spool rather than queue behind it.
    """

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
        owner_timeout: float = 1.0,
        metered: Callable[[str, list[Sighting]], None] = lambda tenant, observations: None,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._pricing = pricing
        self._spool = spool
        self.label = label
        self._clock = clock
        self._interval = interval
        self._max_pending = max_pending
        self._owner_timeout = owner_timeout
        # Told of every observation as it is handed over, before any database write:
        # spend budgets commit the costs it makes final (once per object, in their store).
        self._metered = metered
        self._pending = Batch()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._owned_queue: list[tuple[list[Owned], asyncio.Future[None]]] = []
        self._owned_writer: asyncio.Task[None] | None = None
        self._owner_write: asyncio.Future[None] | None = None
        self._known_tenants: set[str] = set()
        self._flows = FlowNames()
        # Untagged follow-ups since the last flush, alike ones collapsed (a tight poll
        # loop costs one record per run and flush, as its run sightings do).
        self._followups: dict[tuple[object, ...], Exchanged] = {}
        # The latest sighting of each run since the last flush (a terminal one wins).
        self._runs: dict[str, Seen] = {}
        # Likewise for responses, tool calls (one per item id), chat completions and
        # containers (their sightings merged).
        self._latest: dict[tuple[str, str], Seen] = {}
        self._successor_metrics = SuccessorMetrics(metrics, pricing, label, clock)
        # One thread each, so a database call that hangs in one (a thread cannot be
        # cancelled) never holds up the others, and hung calls cannot pile up.
        self._ledger_thread = ThreadPoolExecutor(1, thread_name_prefix="tollhouse-ledger")
        self._owner_thread = ThreadPoolExecutor(1, thread_name_prefix="tollhouse-owners")
        self._spool_thread = ThreadPoolExecutor(1, thread_name_prefix="tollhouse-spool")
        self._forgotten_at = 0  # when applied batch ids were last pruned (ledger thread)
        self._failing = False  # batches: the database failed the last write
        self._owners_failing = False
        metrics.spool_bytes.set_function(lambda: spool.bytes)
        metrics.spool_batches.set_function(lambda: spool.batches)

    # -- the request path: no waiting ---------------------------------------------------

    def add(self, tenant: str, observations: Iterable[Sighting]) -> None:
        observations = list(observations)
        self._metered(tenant, observations)
        for observation in [*observations, *auto_containers(observations)]:
            if isinstance(observation, ContainerSeen):
                self._merge(tenant, observation)
            elif isinstance(observation, ResponseSeen | ToolItemSeen | ChatCompletionSeen):
                self._collapse(tenant, observation)
            elif isinstance(observation, RunSeen):
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

    def _collapse(
        self, tenant: str, seen: ResponseSeen | ToolItemSeen | ChatCompletionSeen
    ) -> None:
        """Sightings of one response, item or chat completion since the last flush collapse
        to one: a terminal response, an item naming its response, a completion with usage
        wins over whatever came before it."""
        key = (type(seen).__name__, seen.id)
        previous = self._latest.get(key)
        if previous is not None and not _better(seen, previous.observation):
            return
        self._latest[key] = Seen(tenant, seen)

    def _merge(self, tenant: str, container: ContainerSeen) -> None:
        """Sightings of one container since the last flush merge into one (its earliest
        creation, its latest activity); the first tenant stays."""
        key = ("ContainerSeen", container.id)
        previous = self._latest.get(key)
        if previous is not None and isinstance(previous.observation, ContainerSeen):
            tenant, container = previous.tenant, merged([previous.observation, container])
        self._latest[key] = Seen(tenant, container)

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

    def exchanged(self, exchange: Exchanged) -> None:
        """A request was answered: kept when it belongs to a flow (its flow name capped per
        tenant) or tells how a run is followed (polled, streamed, given tool outputs)."""
        flow, now = exchange.flow, int(self._clock())
        if flow is None and not exchange.messages:
            if exchange.operation not in FOLLOWING or not exchange.runs:
                return
            e = exchange
            key = (e.tenant, e.operation, e.runs, e.streamed, e.status)
            previous = self._followups.get(key)
            count = 1 if previous is None else previous.count + 1
            self._followups[key] = replace(exchange, at=now, count=count)
            return
        if flow is not None:
            flow = self._flows.admit(exchange.tenant, flow)
        self._pending.exchanges.append(replace(exchange, flow=flow, at=now))
        self._maybe_wake()

    def _maybe_wake(self) -> None:
        waiting = len(self._runs) + len(self._latest) + len(self._followups)
        if len(self._pending) + waiting >= self._max_pending:
            self._wake.set()

    # -- creates: the owner is recorded before the response goes out --------------------

    async def record_owned(self, tenant: str, objects: list[ObjectSeen]) -> None:
        """Record owners now; concurrent creates share one write (group commit).

        Returns once the ledger has them or, after at most ``owner_timeout``, the
        spool has them on disk; the create then succeeds either way, and the proxy's
        own cache already enforces the new ownership.
        """
        done = asyncio.get_running_loop().create_future()
        self._owned_queue.append(([Owned(tenant, o) for o in objects], done))
        if self._owned_writer is None or self._owned_writer.done():
            self._owned_writer = asyncio.create_task(self._write_owned())
        await done

    async def _write_owned(self) -> None:
        while self._owned_queue:
            queued, self._owned_queue = self._owned_queue, []
            try:
                await self._write_owners([owned for part, _ in queued for owned in part])
            finally:
                for _, done in queued:
                    if not done.done():
                        done.set_result(None)

    async def _write_owners(self, owned: list[Owned]) -> None:
        loop = asyncio.get_running_loop()
        if self._owner_write is not None and not self._owner_write.done():
            reason = "an earlier owner write still waits for the database"
        else:
            tenants = sorted({o.tenant for o in owned} - self._known_tenants)
            write = loop.run_in_executor(
                self._owner_thread,
                ledger.record_owners,
                self._engine,
                owned,
                tenants,
                int(self._clock()),
            )
            write.add_done_callback(partial(self._owners_written, tenants))
            self._owner_write = write
            try:
                await asyncio.wait_for(asyncio.shield(write), self._owner_timeout)
            except TimeoutError:
                reason = f"no answer within {self._owner_timeout:g} s"
            except SQLAlchemyError as exc:
                reason = str(exc)
            else:
                return
        self._metrics.ledger_write_errors.inc()
        if not self._owners_failing:
            self._owners_failing = True
            log.error(
                "owner write failed (%s): owners go to the spool %s until the database answers",
                reason,
                self._spool.path,
            )
        try:
            await loop.run_in_executor(self._spool_thread, self._spool.append, Batch(owned=owned))
        except SpoolError as exc:
            log.error("%d owners kept in memory for the next flush: %s", len(owned), exc)
            self._pending.owned[:0] = owned

    def _owners_written(self, tenants: list[str], write: asyncio.Future[None]) -> None:
        """When an owner write ends, even one no longer waited for."""
        if write.cancelled():
            return
        exc = write.exception()
        if exc is None:
            self._known_tenants.update(tenants)
            if self._owners_failing:
                self._owners_failing = False
                log.info("owner writes reach the database again")
        elif not isinstance(exc, SQLAlchemyError):
            log.error("owner write failed unexpectedly", exc_info=exc)

    def spooled(self) -> bool:
        """Whether records are waiting in the spool for the database."""
        return self._spool.pending()

    # -- the background task ------------------------------------------------------------

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def close(self) -> None:
        """Write (or spool) everything handed over, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self._owned_writer is not None:
            await self._owned_writer
        await self.flush()
        for pool in (self._ledger_thread, self._owner_thread, self._spool_thread):
            # An owner write may still hang on the database: it ends within the
            # database timeouts, and nothing waits for it.
            pool.shutdown(wait=False)
        self._spool.close()

    async def _run(self) -> None:
        while not self._closing:
            # wake on the interval, or early when the pending batch is full
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write everything handed over so far (and replay the spool, if the database is back)."""
        async with self._lock:
            batch, self._pending = self._pending, Batch()
            batch.seen.extend(self._runs.values())
            batch.seen.extend(self._latest.values())
            batch.exchanges.extend(self._followups.values())
            self._runs, self._latest, self._followups = {}, {}, {}
            now = int(self._clock())
            loop = asyncio.get_running_loop()
            write = loop.run_in_executor(self._ledger_thread, self._write, batch, now)
            # Its outcome is handled even if this task is cancelled meanwhile: the
            # thread goes on, and a batch it could not place must not be dropped.
            write.add_done_callback(self._written)
            await asyncio.shield(write)

    def _write(self, batch: Batch, now: int) -> _Written:
        """In the ledger thread: write ``batch``, or spool it; replay the spool."""
        written = _Written()
        if self._spool.pending():
            # The spool's batches are older: this one joins their end, so the ledger
            # sees batches in order, and the replay is the database's test.
            if len(batch):
                self._spool_batch(batch, written)
            self._replay(written, now)
            return written
        if not len(batch):
            return written
        try:
            written.counted.append(ledger.apply(self._engine, batch, now))
            if now - self._forgotten_at >= FORGET_EVERY:
                # Batch ids only matter while a batch could still be replayed.
                ledger.forget_applied(self._engine, now - APPLIED_KEPT)
                self._forgotten_at = now
        except SQLAlchemyError as exc:
            self._write_failed(exc)
            if not written.counted:
                self._spool_batch(batch, written)
        else:
            self._write_succeeded()
        return written

    def _replay(self, written: _Written, now: int) -> None:
        def apply(batch: Batch) -> None:
            written.counted.append(ledger.apply(self._engine, batch, now))

        try:
            replayed = self._spool.replay(apply, REPLAY_LIMIT)
        except SQLAlchemyError as exc:
            self._write_failed(exc)
            return
        except OSError as exc:
            log.error("spool %s could not be replayed: %s", self._spool.path, exc)
            return
        if replayed:
            self._write_succeeded()
            if not self._spool.pending():
                log.info("spool %s replayed: the ledger has everything again", self._spool.path)

    def _spool_batch(self, batch: Batch, written: _Written) -> None:
        try:
            self._spool.append(batch)
        except SpoolError as exc:
            log.error("%d records kept in memory for the next flush: %s", len(batch), exc)
            written.kept = batch

    def _write_failed(self, exc: SQLAlchemyError) -> None:
        self._metrics.ledger_write_errors.inc()
        if self._failing:
            log.debug("ledger write failed again: %s", exc)
            return
        self._failing = True
        log.error(
            "ledger write failed: batches go to the spool %s until the database answers: %s",
            self._spool.path,
            exc,
        )

    def _write_succeeded(self) -> None:
        if self._failing:
            self._failing = False
            log.info("ledger writes reach the database again")

    def _written(self, write: asyncio.Future[_Written]) -> None:
        """On the event loop, once the ledger thread is done with a flush."""
        if write.cancelled():
            return
        exc = write.exception()
        if exc is not None:
            log.error("ledger flush failed unexpectedly", exc_info=exc)
            return
        written = write.result()
        for counted in written.counted:
            self._count(counted)
        if written.kept is not None:
            self._keep(written.kept)

    def _keep(self, batch: Batch) -> None:
        """A batch neither the database nor the spool took goes back, ahead of newer ones."""
        pending = self._pending
        pending.owned[:0] = batch.owned
        pending.seen[:0] = batch.seen
        pending.samples[:0] = batch.samples
        pending.exchanges[:0] = batch.exchanges
        for key, count in batch.requests.items():
            pending.requests[key] = pending.requests.get(key, 0) + count
        for object_id, at in batch.touched.items():
            pending.touched[object_id] = max(at, pending.touched.get(object_id, at))

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
        self._successor_metrics.count(counted.successors)


def _better(new: object, old: object) -> bool:
    """Whether a later sighting of the same response, item or completion replaces ``old``."""
    if isinstance(old, ResponseSeen) and isinstance(new, ResponseSeen):
        return new.terminal or not old.terminal
    if isinstance(old, ToolItemSeen) and isinstance(new, ToolItemSeen):
        return new.response_id is not None or old.response_id is None
    if isinstance(old, ChatCompletionSeen) and isinstance(new, ChatCompletionSeen):
        return new.usage is not None or old.usage is None
    return True


def _terminal(seen: Seen) -> bool:
    return isinstance(seen.observation, RunSeen) and seen.observation.terminal


def _day(at: float) -> date:
    return datetime.fromtimestamp(at, UTC).date()

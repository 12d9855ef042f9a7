"""The collector: what the proxy could not see, asked of the upstream on a schedule.

- The reconciler retrieves runs the proxy never saw finish (the client stopped
  polling, a stream broke) and lists the steps of finished runs that had Code
  Interpreter or File Search enabled but whose steps were never seen. Responses the
  proxy saw start but not finish (a background response never polled to its end, a
  stream cut and never resumed) are retrieved the same way.
- The storage sampler lists every vector store (paginated) and records its
  ``usage_bytes`` against its owning tenant.
- After an unclean stop, ``recover`` lists the runs of every thread active in the
  hour before it, so what the lost batch held — even a run created in the instant
  of the crash, whose id tollhouse never recorded — is metered.

Its upstream calls spend the organisation's GET budget as the internal tenant
``_tollhouse``, so they can never push the organisation over its limits. With
several replicas, one at a time runs each scheduled job (see ``schedule``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select, update
from sqlmodel import col

from tollhouse.api.classify import Kind, RequestClass, classify
from tollhouse.ledger import store as ledger
from tollhouse.ledger.models import OwnedObject, Response, Run
from tollhouse.ledger.responses import forget_response
from tollhouse.ledger.store import GONE, Sample
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.metering.meter import RunSeen, observe_json, observe_json_all
from tollhouse.metering.responses import ResponseSeen
from tollhouse.quota.admission import Quota
from tollhouse.telemetry.metrics import Metrics
from tollhouse.upstream.forward import Forwarder, UpstreamError, json_object

log = logging.getLogger(__name__)

COLLECTOR_TENANT = "_tollhouse"
UNOWNED = "_unowned"
PAGE = 100
MIN_WAIT = 0.001  # a wait shorter than the clock can measure would spin
JOBS = ("reconciler", "storage_sampler")
# How far back the reconciler looks for responses created through the proxy that the ledger
# has no state of; older ones are left alone (say, from before tollhouse metered responses).
UNSEEN_WINDOW = 86_400


class BudgetExhausted(Exception):
    """The organisation's GET bucket has nothing to spare for the collector right now."""


@dataclass(frozen=True)
class CollectorSettings:
    upstream_api_key: str
    reconcile_after: float = 300.0  # seconds a live run must go unseen before it is fetched
    batch: int = 200  # runs per reconciliation round


@dataclass
class Recovery:
    """What ``recover`` looked at."""

    threads: int = 0
    runs: int = 0  # runs listed in those threads, created in the window
    steps: int = 0  # finished runs with Code Interpreter or File Search whose steps were listed


def recovery_since(
    now: float, alive_at: float | None, pending_since: int | None, lookback: float
) -> int:
    """Where recovery after an unclean stop starts: ``lookback`` before the process was last
    known alive (its marker's heartbeat), and no later than a recovery still unfinished."""
    last_alive = now if alive_at is None else min(now, alive_at)
    since = int(last_alive - lookback)
    return since if pending_since is None else min(since, pending_since)


class Collector:
    def __init__(
        self,
        engine: Engine,
        writer: LedgerWriter,
        forwarder: Forwarder,
        quota: Quota,
        metrics: Metrics,
        settings: CollectorSettings,
        label: Callable[[str], str],
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._engine = engine
        self._writer = writer
        self._forwarder = forwarder
        self._quota = quota
        self._metrics = metrics
        self._settings = settings
        self._label = label
        self._clock = clock
        self._sleep = sleep

    async def _get(self, path: str, query: str = "", wait: bool = False) -> tuple[int, bytes]:
        """One paced GET; with ``wait`` it waits for the budget instead of giving up."""
        while True:
            decision = await self._quota.admit(COLLECTOR_TENANT, RequestClass.GET)
            if decision.allowed:
                break
            if not wait:
                raise BudgetExhausted(f"organisation GET budget: retry in {decision.wait:.1f}s")
            await self._sleep(max(decision.wait, MIN_WAIT))
        return await self._forwarder.fetch("GET", path, query, self._settings.upstream_api_key)

    # -- runs ---------------------------------------------------------------------------

    def _unfinished(self, now: float) -> list[Run]:
        cutoff = int(now - self._settings.reconcile_after)
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(Run)
                .where(
                    or_(
                        and_(col(Run.usage_recorded_at).is_(None), col(Run.last_seen_at) <= cutoff),
                        and_(
                            col(Run.usage_recorded_at).is_not(None),
                            col(Run.steps_seen).is_(False),
                            or_(col(Run.code_interpreter), col(Run.file_search)),
                        ),
                    )
                )
                .order_by(col(Run.last_seen_at))
                .limit(self._settings.batch)
            )
            return [Run.model_validate(row._mapping) for row in rows]

    async def reconcile(self) -> int:
        """One round; returns how many runs and responses it looked at."""
        runs = self._unfinished(self._clock())
        done = 0
        try:
            for run in runs:
                finished = run.usage_recorded_at is not None or await self._fetch_run(run)
                if finished and (run.code_interpreter or run.file_search):
                    await self._fetch_steps(run.thread_id, run.id, run.tenant)
                done += 1
            for response_id, tenant in self._unfinished_responses(self._clock()):
                await self._fetch_response(response_id, tenant)
                done += 1
        except BudgetExhausted as exc:
            log.info("reconciler paused after %d runs and responses: %s", done, exc)
        self.census()
        self._succeeded("reconciler")
        return done

    def census(self) -> None:
        """Count the runs not yet seen terminal, and how old the oldest of each status is."""
        now = self._clock()
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(
                    col(Run.tenant),
                    col(Run.status),
                    func.count(),
                    func.min(col(Run.created_at)),
                )
                .where(col(Run.usage_recorded_at).is_(None))
                .group_by(col(Run.tenant), col(Run.status))
            ).all()
        counts: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[str, float] = {}
        for tenant, status, count, created in rows:
            counts[(self._label(tenant), status)] += count
            oldest[status] = max(oldest.get(status, 0.0), now - created)
        self._metrics.record_live_runs(counts, oldest)

    async def _fetch_run(self, run: Run) -> bool:
        """Retrieve a run for the ledger; True if it turned out to be finished."""
        path = f"/v1/threads/{run.thread_id}/runs/{run.id}"
        status, body = await self._get(path)
        if status == 404:
            self._forget(run.id)
            return False
        if status != 200:
            raise UpstreamError(path, f"status {status}")
        observations = observe_json(classify("GET", path), status, body)
        self._writer.add(run.tenant, observations)
        return any(isinstance(o, RunSeen) and o.terminal for o in observations)

    def _unfinished_responses(self, now: float) -> list[tuple[str, str]]:
        """Responses not seen terminal and not seen at all for ``reconcile_after``; and those
        created through the proxy within ``UNSEEN_WINDOW`` whose state the ledger never got
        (a stream that broke upstream, a batch lost in a crash): their ids and tenants."""
        cutoff = int(now - self._settings.reconcile_after)
        owned = OwnedObject
        with self._engine.connect() as connection:
            live = connection.execute(
                select(col(Response.id), col(Response.tenant))
                .where(
                    col(Response.usage_recorded_at).is_(None), col(Response.last_seen_at) <= cutoff
                )
                .order_by(col(Response.last_seen_at))
                .limit(self._settings.batch)
            ).all()
            unseen = connection.execute(
                select(col(owned.id), col(owned.tenant))
                .outerjoin(Response, col(Response.id) == col(owned.id))
                .where(
                    col(owned.kind) == str(Kind.RESPONSE),
                    col(owned.deleted_at).is_(None),
                    col(owned.created_at) >= int(now - UNSEEN_WINDOW),
                    col(owned.created_at) <= cutoff,
                    col(Response.id).is_(None),
                )
                .order_by(col(owned.created_at))
                .limit(self._settings.batch)
            ).all()
        found = [(str(row.id), str(row.tenant)) for row in [*live, *unseen]]
        return found[: self._settings.batch]

    async def _fetch_response(self, response_id: str, tenant: str) -> bool:
        """Retrieve a response for the ledger; True if it turned out to be finished.

        Still live: the sighting moves its last-seen time, so it is asked again after
        another ``reconcile_after``. Gone (deleted, or never stored): recorded without usage."""
        path = f"/v1/responses/{response_id}"
        status, body = await self._get(path)
        if status == 404:
            with self._engine.begin() as connection:
                forget_response(connection, response_id, tenant, int(self._clock()))
            return False
        if status != 200:
            raise UpstreamError(path, f"status {status}")
        observations = observe_json_all(classify("GET", path), status, body)
        self._writer.add(tenant, observations)
        return any(isinstance(o, ResponseSeen) and o.terminal for o in observations)

    async def _fetch_steps(
        self, thread_id: str, run_id: str, tenant: str, wait: bool = False
    ) -> None:
        path = f"/v1/threads/{thread_id}/runs/{run_id}/steps"
        operation = classify("GET", path)
        after = ""
        while True:
            query = f"limit={PAGE}&order=asc" + (f"&after={after}" if after else "")
            status, body = await self._get(path, query, wait)
            if status != 200:
                return
            self._writer.add(tenant, observe_json(operation, status, body))
            page = json_object(body)
            if not page.get("has_more") or not page.get("last_id"):
                return
            after = str(page["last_id"])

    def _forget(self, run_id: str) -> None:
        """The upstream no longer has the run: stop asking; it is recorded without usage.

        Only a run still unfinished: another replica may have recorded it meanwhile."""
        with self._engine.begin() as connection:
            connection.execute(
                update(Run)
                .where(col(Run.id) == run_id, col(Run.usage_recorded_at).is_(None))
                .values(status=GONE, usage_recorded_at=int(self._clock()), steps_seen=True)
            )

    # -- after an unclean stop --------------------------------------------------------------

    async def recover(self, since: int) -> Recovery:
        """Meter again what a crash may have lost: every thread active since ``since``.

        Each thread's runs are listed (newest first, back to ``since``) and recorded for
        the thread's owner, so a run whose id tollhouse never recorded is found too;
        finished runs with Code Interpreter or File Search have their steps listed.
        Counting is idempotent, so what the ledger already holds is not counted again.
        Requests are paced like the reconciler's, but wait for the budget rather than
        give up. Runs still live are left to the proxy and the reconciler.
        """
        threads = await asyncio.to_thread(self._active_threads, since)
        recovery = Recovery(threads=len(threads))
        for thread_id, owner in sorted(threads.items()):
            for run in await self._list_runs(thread_id, owner, since):
                recovery.runs += 1
                if run.terminal and (run.code_interpreter or run.file_search):
                    await self._fetch_steps(thread_id, run.id, owner, wait=True)
                    recovery.steps += 1
        await self._writer.flush()
        return recovery

    def _active_threads(self, since: int) -> dict[str, str]:
        """Threads the ledger saw used since ``since``, and their owners.

        A thread counts if it was created or used, got a message or a run created, or had
        a run seen in that time; its owner is the thread's own, else the tenant of that
        activity."""
        owned = OwnedObject
        queries = (
            select(col(Run.thread_id), col(Run.tenant)).where(col(Run.last_seen_at) >= since),
            select(col(owned.parent_id), col(owned.tenant)).where(
                col(owned.kind).in_([str(Kind.MESSAGE), str(Kind.RUN)]),
                col(owned.created_at) >= since,
                col(owned.parent_id).is_not(None),
            ),
            select(col(owned.id), col(owned.tenant)).where(
                col(owned.kind) == str(Kind.THREAD),
                col(owned.last_used_at) >= since,
                col(owned.deleted_at).is_(None),
            ),
        )
        threads: dict[str, str] = {}
        with self._engine.connect() as connection:
            for query in queries:
                threads.update(
                    (str(thread), str(tenant)) for thread, tenant in connection.execute(query)
                )
        threads.update(ledger.owners(self._engine, threads))
        return threads

    async def _list_runs(self, thread_id: str, owner: str, since: int) -> list[RunSeen]:
        """The thread's runs created since ``since``, handed to the writer for ``owner``."""
        path = f"/v1/threads/{thread_id}/runs"
        operation = classify("GET", path)
        found: list[RunSeen] = []
        after = ""
        while True:
            query = f"limit={PAGE}&order=desc" + (f"&after={after}" if after else "")
            status, body = await self._get(path, query, wait=True)
            if status == 404:  # deleted since: nothing left to meter
                return found
            if status != 200:
                raise UpstreamError(path, f"status {status}")
            runs = [
                seen
                for seen in observe_json(operation, status, body)
                if isinstance(seen, RunSeen) and seen.created_at >= since
            ]
            self._writer.add(owner, runs)
            found += runs
            page = json_object(body)
            oldest = (page.get("data") or [{}])[-1]
            created = oldest.get("created_at") if isinstance(oldest, dict) else None
            past = isinstance(created, int) and created < since  # newest first: done
            if past or not page.get("has_more") or not page.get("last_id"):
                return found
            after = str(page["last_id"])

    # -- vector-store storage -------------------------------------------------------------

    async def sample_storage(self) -> int:
        """List every vector store and record its bytes; returns how many were sampled."""
        stores: list[dict[str, Any]] = []
        after = ""
        while True:
            query = f"limit={PAGE}&order=asc" + (f"&after={after}" if after else "")
            status, body = await self._get("/v1/vector_stores", query)
            if status != 200:
                raise UpstreamError("/v1/vector_stores", f"status {status}")
            page = json_object(body)
            stores.extend(s for s in page.get("data", []) if isinstance(s, dict) and "id" in s)
            if not page.get("has_more") or not page.get("last_id"):
                break
            after = str(page["last_id"])
        now = int(self._clock())
        owners = ledger.owners(self._engine, [s["id"] for s in stores])
        by_tenant: dict[str, int] = defaultdict(int)
        for store in stores:
            tenant = owners.get(store["id"], UNOWNED)
            size = int(store.get("usage_bytes") or 0)
            by_tenant[tenant] += size
            self._writer.add_sample(Sample(store["id"], tenant, now, size))
        labels: dict[str, int] = defaultdict(int)
        for tenant, size in by_tenant.items():
            labels[self._label(tenant)] += size
        self._metrics.vector_store_bytes.clear()
        for label, size in labels.items():
            self._metrics.vector_store_bytes.labels(label).set(size)
        self._succeeded("storage_sampler")
        return len(stores)

    def started(self) -> None:
        """At start-up the jobs count as just succeeded, so one that never does still alerts."""
        self.census()
        for job in JOBS:
            self._succeeded(job)
            self._metrics.collector_lease_held.labels(job).set(0)

    def lease_held(self, job: str, held: bool) -> None:
        self._metrics.collector_lease_held.labels(job).set(1 if held else 0)

    def elsewhere(self, job: str) -> None:
        """Another replica holds ``job``'s lease and runs its round: the census is still
        taken here, and the round counts as done (the holder's timestamp shows failures)."""
        if job == "reconciler":
            self.census()
        self._succeeded(job)

    def _succeeded(self, job: str) -> None:
        self._metrics.collector_last_success.labels(job).set(self._clock())

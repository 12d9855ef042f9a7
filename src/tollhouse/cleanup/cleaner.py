"""The stale-resource cleaner: one sweep, the same for ``tollhouse cleanup`` and ``serve``'s job.

A sweep, in order:
1. takes the lease (deleting sweeps only), so one replica sweeps at a time;
2. selects stale objects from the ownership ledger (``stale.find_stale``); objects of
   unknown ownership are never looked at;
3. per object, confirms against the upstream (still there, no protect marker, a vector
   store's ``last_active_at``; a file stays while a vector store that stays holds it,
   so stores go first: deleting a store detaches its files, nothing needs detaching
   before) and against the ledger (not touched since the sweep began);
4. paces the DELETE through the organisation's DELETE bucket at the policy's share,
   checks the ledger again, writes the intent to the audit table, deletes;
5. settles the audit row (2xx, or 404: already gone) or records the failure, goes on;
6. sets the metrics. Pending intents of a sweep that was cut short are resumed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.api.classify import RequestClass
from tollhouse.cleanup import audit, confirm, stale
from tollhouse.cleanup.pacing import PacedClient, Sleep
from tollhouse.cleanup.stale import Record, Upstream, Verdict
from tollhouse.config.policy import Cleanup
from tollhouse.ledger import lease
from tollhouse.ledger.lease import LeaseLost
from tollhouse.quota.admission import Quota
from tollhouse.telemetry.metrics import Metrics
from tollhouse.upstream.forward import Forwarder, UpstreamError

log = logging.getLogger(__name__)

LEASE = "cleanup"
Progress = Callable[[int, int], None]  # (objects done, objects to look at)
P = ParamSpec("P")
T = TypeVar("T")


class SweepFailed(Exception):
    """A sweep could not run to its end (database, lease); the next one starts over."""


@dataclass(frozen=True)
class CleanerSettings:
    upstream_api_key: str
    request_timeout: float = 30.0  # seconds for one upstream call
    lease_seconds: float = 300.0  # renewed while sweeping


@dataclass(frozen=True, slots=True)
class Found:
    record: Record
    verdict: Verdict
    usage_bytes: int = 0


@dataclass
class SweepReport:
    apply: bool
    started_at: float
    status: str = "running"  # completed, skipped (another replica holds the lease), failed
    held_by: str | None = None
    found: list[Found] = field(default_factory=list)
    deleted: list[Found] = field(default_factory=list)
    failures: list[tuple[Record, str]] = field(default_factory=list)
    finished_at: float | None = None


class Cleaner:
    def __init__(
        self,
        engine: Engine,
        forwarder: Forwarder,
        quota: Quota,
        metrics: Metrics,
        settings: CleanerSettings,
        label: Callable[[str], str],
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        holder: str | None = None,
    ) -> None:
        self.engine = engine
        self.quota = quota
        self.metrics = metrics
        self.settings = settings
        self.label = label
        self.clock = clock
        self.upstream = forwarder.name
        self.client = PacedClient(
            forwarder, quota, settings.upstream_api_key, sleep, settings.request_timeout
        )
        self.holder = holder or lease.holder_id()

    async def db(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A ledger call, off the event loop (the proxy may share it)."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def sweep(
        self,
        apply: bool = False,
        tenants: Collection[str] | None = None,
        kinds: Collection[str] | None = None,
        progress: Progress | None = None,
        now: float | None = None,
    ) -> SweepReport:
        """One sweep; a dry run (``apply=False``) only reads the ledger and the upstream."""
        if apply and now is not None:
            raise ValueError("only a dry run can look at another time than now")
        report = SweepReport(apply, self.clock() if now is None else now)
        leased = False
        try:
            if apply and not (leased := await self._take_lease(report)):
                return report
            await _Sweep(self, report, self.quota.policy.cleanup, progress).run(tenants, kinds)
        except (SQLAlchemyError, LeaseLost) as exc:
            report.status = "failed"
            log.error("cleanup sweep failed after %d deletes: %s", len(report.deleted), exc)
            raise SweepFailed(str(exc)) from exc
        finally:
            report.finished_at = self.clock()
            if leased:
                self._release()
        self._record_metrics(report)
        return report

    async def _take_lease(self, report: SweepReport) -> bool:
        ttl = self.settings.lease_seconds
        if await self.db(lease.take, self.engine, LEASE, self.holder, self.clock(), ttl):
            return True
        held = await self.db(lease.current, self.engine, LEASE)
        report.status, report.held_by = "skipped", held[0] if held else None
        log.info("cleanup skipped: the lease is held by %s", report.held_by)
        return False

    def _release(self) -> None:
        try:
            lease.release(self.engine, LEASE, self.holder)
        except SQLAlchemyError as exc:  # it expires on its own
            log.warning("could not release the cleanup lease (it will expire): %s", exc)

    def _record_metrics(self, report: SweepReport) -> None:
        found: Counter[tuple[str, str]] = Counter(
            (self.label(item.record.tenant), item.record.kind) for item in report.found
        )
        self.metrics.record_stale(found)
        if report.apply and report.finished_at is not None:
            self.metrics.cleanup_last_success.set(report.finished_at)
            self.metrics.cleanup_duration.observe(report.finished_at - report.started_at)


class _Sweep:
    """One sweep while it runs."""

    def __init__(
        self, cleaner: Cleaner, report: SweepReport, policy: Cleanup, progress: Progress | None
    ) -> None:
        self.c = cleaner
        self.report = report
        self.policy = policy
        self.progress = progress or (lambda done, total: None)
        self.began = report.started_at
        self.sweep_id = 0
        self.renewed = report.started_at
        self.attachments: Mapping[str, Collection[str]] | None = None

    async def run(self, tenants: Collection[str] | None, kinds: Collection[str] | None) -> None:
        c, report = self.c, self.report
        if report.apply:
            self.sweep_id = await c.db(audit.start_sweep, c.engine, c.holder, int(self.began))
        cutoffs = stale.cutoffs(self.policy, self.began, kinds)
        records = await c.db(audit.candidates, c.engine, cutoffs, tenants)
        found = stale.find_stale(records, self.policy, self.began)
        # Deletes a sweep cut short left pending, that this one would not select again.
        selected = {record.id for record, _ in found}
        resumed = await c.db(audit.pending, c.engine, tenants, kinds) if report.apply else []
        work: list[tuple[Record, Verdict | None]] = [
            (record, None) for record in resumed if record.id not in selected
        ]
        work += found
        self.progress(0, len(work))
        for done, (record, verdict) in enumerate(work, 1):
            await self.one(record, verdict)
            await self.step(done, len(work))
        report.status = "completed"
        counts = len(report.found), len(report.deleted), len(report.failures)
        what = "sweep" if report.apply else "dry run"
        log.info("cleanup %s: %d stale, %d deleted, %d failed", what, *counts)
        if report.apply:
            now = int(c.clock())
            await c.db(audit.finish_sweep, c.engine, self.sweep_id, now, "completed", *counts)

    async def step(self, done: int, total: int) -> None:
        self.progress(done, total)
        now, settings = self.c.clock(), self.c.settings
        if self.report.apply and now - self.renewed > settings.lease_seconds / 3:
            await self.c.db(
                lease.renew, self.c.engine, LEASE, self.c.holder, now, settings.lease_seconds
            )
            self.renewed = now

    async def one(self, record: Record, verdict: Verdict | None) -> None:
        """Confirm, pace, delete and audit one object; a failure is recorded, never raised."""
        try:
            await self._one(record, verdict)
        except UpstreamError as exc:
            self.failed(record, str(exc))
            if self.report.apply:
                await self.c.db(audit.fail, self.c.engine, record.id, str(exc))

    async def _one(self, record: Record, selected: Verdict | None) -> None:
        """``selected`` is None for a resumed delete, whose DELETE may already have gone out."""
        c, path = self.c, confirm.path(record)
        seen = await confirm.inspect(c.client, c.upstream, record, self.policy.keep_marker)
        if seen is None:
            return await self.gone(
                record, selected or stale.decide(record, self.policy, self.began)
            )
        verdict = await self.recheck(record, seen, again=False)
        if verdict is None:
            return
        item = Found(record, verdict, seen.usage_bytes)
        if not self.report.apply:
            self.report.found.append(item)
            log.info("would delete %s: %s", _name(record), verdict.reason)
            return
        await c.client.take(RequestClass.DELETE)
        if await self.recheck(record, seen, again=True) is None:  # touched while it waited
            return
        self.report.found.append(item)
        now = int(c.clock())
        await c.db(audit.intend, c.engine, self.sweep_id, record, verdict, seen.usage_bytes, now)
        answer = await c.client.send("DELETE", path)
        if not (answer.ok or answer.status == 404):
            error = answer.body.get("error")
            message = error.get("message", "") if isinstance(error, dict) else ""
            raise UpstreamError(c.upstream, f"DELETE {path}: status {answer.status} {message}")
        await self.settle(item)

    async def recheck(self, record: Record, seen: Upstream, again: bool) -> Verdict | None:
        """The verdict with the upstream's view, and with ``again`` the ledger's; None: it stays."""
        c, known = self.c, record
        if again:
            if (current := await c.db(audit.current, c.engine, record.id)) is None:
                return None  # settled meanwhile
            known = current
        verdict = stale.decide(known, self.policy, self.began, seen, began=self.began)
        if verdict.stale and record.kind == "file":
            verdict = stale.in_use(verdict, await self.holders(record.id))
        if verdict.stale:
            return verdict
        log.info("keeping %s: %s", _name(record), verdict.reason)
        if self.report.apply:  # a resumed delete that no longer applies
            await c.db(audit.cancel, c.engine, record.id, verdict.reason)
        return None

    async def holders(self, file_id: str) -> list[str]:
        """The vector stores that hold a file and stay; listed once, after stores went."""
        if self.attachments is None:
            self.attachments = await confirm.attachments(self.c.client)
        going = self.report.deleted if self.report.apply else self.report.found
        leaving = {f.record.id for f in going if f.record.kind == "vector_store"}
        return stale.holders(file_id, self.attachments, leaving)

    async def gone(self, record: Record, verdict: Verdict) -> None:
        """Already gone upstream: counts as deleted."""
        reason = f"already gone upstream; {verdict.reason}"
        item = Found(record, Verdict(verdict.finding, verdict.last_touched, verdict.ttl, reason))
        self.report.found.append(item)
        if self.report.apply:
            await self.settle(item)

    async def settle(self, item: Found) -> None:
        c, record = self.c, item.record
        now = int(c.clock())
        await c.db(
            audit.settle, c.engine, self.sweep_id, record, item.verdict, item.usage_bytes, now
        )
        self.report.deleted.append(item)
        c.metrics.cleanup_deleted.labels(c.label(record.tenant), record.kind).inc()
        c.metrics.cleanup_reclaimed_bytes.inc(item.usage_bytes)
        log.info("deleted %s: %s", _name(record), item.verdict.reason)

    def failed(self, record: Record, error: str) -> None:
        self.report.failures.append((record, error))
        self.c.metrics.cleanup_failures.labels(record.kind).inc()
        log.warning("could not clean %s: %s", _name(record), error)


def _name(record: Record) -> str:
    return f"{record.kind} {record.id} of {record.tenant}"

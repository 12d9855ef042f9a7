"""The collector's jobs and the nightly cleanup on an in-process APScheduler, in ``serve``.

Every replica schedules every job; a lease in the ledger lets one replica at a time
run each (the collector jobs here, the cleanup in the cleaner).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.cleanup.cleaner import Cleaner, SweepFailed
from tollhouse.config.policy import Cleanup
from tollhouse.jobs.bill import BillCheck
from tollhouse.jobs.collector import BudgetExhausted, Collector
from tollhouse.ledger.lease import JobLease, LeaseLost
from tollhouse.report.drift import BillError
from tollhouse.upstream.forward import UpstreamError

log = logging.getLogger(__name__)


def guarded(name: str, job: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    """A job whose expected failures are logged with context; the next run tries again.

    A job that keeps failing stops moving its
    ``tollhouse_collector_last_success_timestamp_seconds``, which is what alerts watch.
    """

    async def run() -> None:
        try:
            count = await job()
        except (UpstreamError, SQLAlchemyError, BudgetExhausted, LeaseLost) as exc:
            log.warning("%s failed, will retry on its next run: %s", name, exc)
            return
        log.debug("%s done: %d items", name, count)

    return run


def leased(
    collector: Collector, job_lease: JobLease, job: Callable[[], Awaitable[int]]
) -> Callable[[], Awaitable[int]]:
    """A collector job that runs only on the replica holding its lease."""

    async def run() -> int:
        try:
            held, count = await job_lease.run(job)
        finally:
            collector.lease_held(job_lease.name, job_lease.held)
        if not held:
            log.debug("%s: another replica holds the lease", job_lease.name)
            collector.elsewhere(job_lease.name)
        return count or 0

    return run


def collector_scheduler(
    collector: Collector,
    leases: Mapping[str, JobLease],
    reconcile_seconds: float,
    sample_seconds: float,
) -> AsyncIOScheduler:
    """The reconciler and the storage sampler; ``leases`` has one per job, by job name."""
    scheduler = AsyncIOScheduler(timezone="UTC")
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 60}
    jobs = (
        ("reconciler", collector.reconcile, reconcile_seconds),
        ("storage_sampler", collector.sample_storage, sample_seconds),
    )
    for name, job, seconds in jobs:
        scheduler.add_job(
            guarded(name, leased(collector, leases[name], job)),
            IntervalTrigger(seconds=seconds),
            id=name,
            **common,
        )
    return scheduler


CLEANUP_JOB = "cleanup"


def cleanup_job(cleaner: Cleaner) -> Callable[[], Awaitable[None]]:
    """One deleting sweep. A failed sweep is logged; its metrics stop moving, and alerts
    watch ``tollhouse_cleanup_last_success_timestamp_seconds``."""

    async def run() -> None:
        try:
            report = await cleaner.sweep(apply=True)
        except SweepFailed as exc:
            log.error("scheduled cleanup failed, will run again at its next time: %s", exc)
            return
        log.info("scheduled cleanup %s: %d deleted", report.status, len(report.deleted))

    return run


def schedule_cleanup(scheduler: AsyncIOScheduler, cleaner: Cleaner, cleanup: Cleanup) -> None:
    """(Re)schedule the sweep on the policy's crontab (UTC); no job when cleanup is disabled.

    Every replica schedules it; the lease in the ledger lets one of them sweep.
    """
    if scheduler.get_job(CLEANUP_JOB) is not None:
        scheduler.remove_job(CLEANUP_JOB)
    if not cleanup.enabled:
        log.info("cleanup is disabled by the policy: no scheduled sweeps")
        return
    scheduler.add_job(
        cleanup_job(cleaner),
        CronTrigger.from_crontab(cleanup.schedule, timezone="UTC"),
        id=CLEANUP_JOB,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )


BILL_JOB = "bill_check"


def schedule_bill_check(scheduler: AsyncIOScheduler, check: BillCheck, hour: int = 6) -> None:
    """Daily at ``hour`` UTC, when yesterday's bill is complete: it against the ledger.

    A failed check is logged; ``tollhouse_bill_last_success_timestamp_seconds`` stops
    moving, and an alert fires when two days went by without one."""

    async def run() -> None:
        try:
            drifting = await check.yesterday()
        except (BillError, SQLAlchemyError) as exc:
            log.warning("the bill check failed, will run again tomorrow: %s", exc)
            return
        log.info("bill check done: %d measures beyond the tolerance", drifting)

    check.started()
    scheduler.add_job(
        run,
        CronTrigger(hour=hour, minute=0, timezone="UTC"),
        id=BILL_JOB,
        max_instances=1,
        coalesce=True,
        misfire_grace_time=3600,
    )

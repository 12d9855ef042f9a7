"""The collector's jobs and the nightly cleanup on an in-process APScheduler, in ``serve``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.cleaner import Cleaner, SweepFailed
from tollhouse.collector import BudgetExhausted, Collector
from tollhouse.forward import UpstreamError
from tollhouse.policy import Cleanup

log = logging.getLogger(__name__)


def guarded(name: str, job: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[None]]:
    """A job whose expected failures are logged with context; the next run tries again.

    A job that keeps failing stops moving its
    ``tollhouse_collector_last_success_timestamp_seconds``, which is what alerts watch.
    """

    async def run() -> None:
        try:
            count = await job()
        except (UpstreamError, SQLAlchemyError, BudgetExhausted) as exc:
            log.warning("%s failed, will retry on its next run: %s", name, exc)
            return
        log.debug("%s done: %d items", name, count)

    return run


def collector_scheduler(
    collector: Collector, reconcile_seconds: float, sample_seconds: float
) -> AsyncIOScheduler:
    scheduler = AsyncIOScheduler(timezone="UTC")
    common = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 60}
    scheduler.add_job(
        guarded("reconciler", collector.reconcile),
        IntervalTrigger(seconds=reconcile_seconds),
        id="reconciler",
        **common,
    )
    scheduler.add_job(
        guarded("storage_sampler", collector.sample_storage),
        IntervalTrigger(seconds=sample_seconds),
        id="storage_sampler",
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

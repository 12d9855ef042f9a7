"""The collector's jobs on an in-process APScheduler, inside ``tollhouse serve``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.collector import BudgetExhausted, Collector
from tollhouse.forward import UpstreamError

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

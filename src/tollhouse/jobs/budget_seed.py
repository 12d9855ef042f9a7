"""At start-up: the spend of the current budget periods, read from the ledger.

Until it is done, budgets count only what this start has seen (and what other replicas
put in a shared store); ``tollhouse_budget_seeded`` is 0 meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from tollhouse.metering.pricing import PricingTable
from tollhouse.proxy.spend import Spending
from tollhouse.quota.backends import SpendUnavailable
from tollhouse.report.build import build_report

log = logging.getLogger(__name__)


async def seed_budgets(
    spending: Spending,
    engine: Engine,
    pricing: PricingTable,
    clock: Callable[[], float],
    retry_seconds: float = 30.0,
) -> None:
    """Seed every budgeted tenant's current periods; retried until the ledger and store answer."""
    spending.seeded(False)
    while True:
        try:
            await _seed(spending, engine, pricing, clock())
        except (SQLAlchemyError, SpendUnavailable) as exc:
            log.warning("budgets not seeded from the ledger, again in %gs: %s", retry_seconds, exc)
            await asyncio.sleep(retry_seconds)
            continue
        spending.seeded(True)
        return


async def _seed(spending: Spending, engine: Engine, pricing: PricingTable, now: float) -> None:
    moment = datetime.fromtimestamp(now, UTC)
    for tenant in spending.tenants():
        ledger: dict[str, Decimal] = {}
        for period in spending.periods(tenant, now):
            report = await asyncio.to_thread(
                build_report, engine, pricing, period.start, period.end, moment, tenant=tenant
            )
            ledger[period.name] = report.totals.total_cost
        await spending.seed(tenant, ledger, now)

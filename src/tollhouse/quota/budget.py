"""Spend budgets: calendar periods in a time zone, money in micro-dollars, and the refusal.

Pure functions of the policy's budgets and ``now`` (Unix seconds): which daily and
monthly period a moment falls in, when each resets, and the answer a tenant past its
hard limit gets. The stores that count spend (``spend_memory``, ``spend_redis``) only
ever see the keys and limits worked out here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from tollhouse.api.errors import ErrorResponse
from tollhouse.config.policy import TenantBudget

MICROS = 1_000_000  # spend is counted in whole micro-dollars, so replicas add up exactly
# A period's counters outlive it by this much, for late commits of objects it metered.
GRACE_SECONDS = 2 * 86_400
PERIODS = ("daily", "monthly")


def micros(usd: Decimal) -> int:
    """USD as whole micro-dollars, rounded up: a budget never counts less than was spent."""
    return math.ceil(usd * MICROS)


def usd(amount: int) -> float:
    return amount / MICROS


@dataclass(frozen=True, slots=True)
class Period:
    """One calendar period of one tenant's budget."""

    name: str  # "daily" or "monthly"
    key: str  # tenant and the period's local date, e.g. "acme:daily:2026-12-03"
    limit: int  # micro-dollars
    start: datetime  # aware, in the budget's time zone
    end: datetime  # when it resets (the next period's start)

    @property
    def expires_at(self) -> int:
        """When a store may forget the period's counters (Unix seconds)."""
        return int(self.end.timestamp()) + GRACE_SECONDS


def period_bounds(name: str, now: float, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local calendar day or month holding ``now``: its start and its end."""
    local = datetime.fromtimestamp(now, UTC).astimezone(zone)
    if name == "daily":
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
        following = start.date() + timedelta(days=1)
    else:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        following = (start.date() + timedelta(days=32)).replace(day=1)
    # Midnight of the next local date, in whatever offset it has then (DST moves it).
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return start.replace(tzinfo=zone), end


def periods(tenant: str, budget: TenantBudget, now: float, zone: ZoneInfo) -> list[Period]:
    """The tenant's current periods that have a limit: daily, then monthly."""
    found = []
    for name, limit in (("daily", budget.daily_usd), ("monthly", budget.monthly_usd)):
        if limit is None:
            continue
        start, end = period_bounds(name, now, zone)
        stamp = start.strftime("%Y-%m-%d" if name == "daily" else "%Y-%m")
        found.append(Period(name, f"{tenant}:{name}:{stamp}", micros(limit), start, end))
    return found


@dataclass(frozen=True, slots=True)
class Standing:
    """Spend in one period as a store reported it: committed plus in flight."""

    period: Period
    spent: int  # micro-dollars

    @property
    def remaining(self) -> int:
        return max(0, self.period.limit - self.spent)


def tightest(standings: list[Standing]) -> Standing | None:
    """The period with the least left, for ``x-tollhouse-budget-remaining-usd``."""
    return min(standings, key=lambda s: s.remaining, default=None)


def remaining_header(standings: list[Standing]) -> list[tuple[bytes, bytes]]:
    least = tightest(standings)
    if least is None:
        return []
    return [(b"x-tollhouse-budget-remaining-usd", f"{usd(least.remaining):.6f}".encode())]


def refusal(tenant: str, refused: Standing, worst_case: int) -> ErrorResponse:
    """OpenAI's answer for an exhausted quota, naming the budget and when it resets.

    ``x-should-retry: false`` tells the official clients not to retry: waiting seconds
    changes nothing before the period ends.
    """
    period = refused.period
    resets = period.end.isoformat()
    message = (
        f"Tenant '{tenant}' has reached its {period.name} spend budget of "
        f"${usd(period.limit):.2f} (spent or in flight: ${usd(refused.spent):.4f}; this "
        f"request may cost up to ${usd(worst_case):.4f}). Requests that create cost are "
        f"refused until the budget resets at {resets}; reads and deletes still work."
    )
    headers = [(b"x-should-retry", b"false"), *remaining_header([refused])]
    return ErrorResponse(429, message, "insufficient_quota", "insufficient_quota", headers=headers)

"""Usage and cost per tenant for a period: the ledger's usage, priced.

``fetch_usage`` is the SQL: the period's runs and tool use, aggregated per tenant, model,
assistant and UTC day (the finest grain any report needs), and the vector-store samples
storage is integrated from. ``price_usage`` is pure: it integrates storage, prices
everything and groups it into rows. ``build_report`` joins the two.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from sqlalchemy import Engine

from tollhouse.metering.costs import GIB, STORAGE_PLACES, gb_days, storage_costs, token_cost
from tollhouse.metering.pricing import PricingError, PricingTable
from tollhouse.report.query import (
    DAY,
    LedgerUsage,
    StoreHistory,
    fetch_usage,
    unix_day,
)

GroupBy = Literal["model", "assistant", "day"]
GROUP_BYS: tuple[GroupBy, ...] = ("model", "assistant", "day")
UNKNOWN = "(unknown)"
TOOLS_AND_STORAGE = "(tools and storage)"
STORAGE = "(storage)"
TOTAL = "TOTAL"
GB_DAY_PLACES = Decimal("1E-9")


@dataclass(slots=True)
class Row:
    """Usage and cost of one tenant (and group), or the total of all rows."""

    tenant: str
    group: str | None = None
    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    token_cost: Decimal = Decimal(0)
    code_interpreter_sessions: int = 0
    code_interpreter_cost: Decimal = Decimal(0)
    file_search_calls: int = 0
    file_search_cost: Decimal = Decimal(0)
    storage_gb_days: Decimal = Decimal(0)
    storage_cost: Decimal = Decimal(0)
    has_unpriced_usage: bool = False

    @property
    def total_cost(self) -> Decimal:
        costs = (self.token_cost, self.code_interpreter_cost, self.file_search_cost)
        return sum(costs, self.storage_cost)

    def add(self, other: Row) -> None:
        for name in (f.name for f in fields(self)):
            if name not in ("tenant", "group", "has_unpriced_usage"):
                setattr(self, name, getattr(self, name) + getattr(other, name))
        self.has_unpriced_usage = self.has_unpriced_usage or other.has_unpriced_usage


@dataclass(slots=True)
class Unpriced:
    """Usage the pricing table has no price for: a model's runs, or a tool's quantity."""

    tenant: str
    kind: Literal["model", "tool"]
    name: str
    runs: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    quantity: Decimal = Decimal(0)
    unit: str = "tokens"


@dataclass(frozen=True, slots=True)
class Report:
    since: datetime
    until: datetime
    generated_at: datetime
    group_by: GroupBy | None
    tenant: str | None
    pricing_source: str
    rows: tuple[Row, ...]
    totals: Row
    unpriced: tuple[Unpriced, ...]


def _group(group_by: GroupBy | None, day: date, model: str | None, assistant: str | None) -> str:
    if group_by == "day":
        return day.isoformat()
    if group_by == "model":
        return model or UNKNOWN
    return assistant or UNKNOWN


class _Builder:
    """Rows and unpriced lines being filled in."""

    def __init__(self, group_by: GroupBy | None, tenant: str | None) -> None:
        self.group_by, self.tenant = group_by, tenant
        self.rows: dict[tuple[str, str | None], Row] = {}
        self.unpriced: dict[tuple[str, str, str], Unpriced] = {}

    def wants(self, tenant: str) -> bool:
        return self.tenant is None or tenant == self.tenant

    def row(self, tenant: str, day: date, model: str | None, assistant: str | None) -> Row:
        group = None if self.group_by is None else _group(self.group_by, day, model, assistant)
        key = (tenant, group)
        if key not in self.rows:
            self.rows[key] = Row(tenant, group)
        return self.rows[key]

    def unpriced_line(
        self, row: Row, kind: Literal["model", "tool"], name: str, unit: str = "tokens"
    ) -> Unpriced:
        row.has_unpriced_usage = True
        key = (row.tenant, kind, name)
        if key not in self.unpriced:
            self.unpriced[key] = Unpriced(row.tenant, kind, name, unit=unit)
        return self.unpriced[key]


def _tool_price(price: Callable[[date], Decimal], day: date) -> Decimal | None:
    try:
        return price(day)
    except PricingError:
        return None


def price_usage(
    usage: LedgerUsage,
    table: PricingTable,
    start: int,
    end: int,
    group_by: GroupBy | None = None,
    tenant: str | None = None,
) -> tuple[list[Row], list[Unpriced]]:
    """Price ``usage`` and group it into rows; storage is integrated over [start, end).

    Storage is shared across every tenant in ``usage`` before ``tenant`` picks its rows."""
    builder = _Builder(group_by, tenant)
    tools = TOOLS_AND_STORAGE if group_by == "model" else None
    for run in (r for r in usage.runs if builder.wants(r.tenant)):
        row = builder.row(run.tenant, run.day, run.model, run.assistant_id)
        row.runs += run.runs
        row.input_tokens += run.input_tokens
        row.output_tokens += run.output_tokens
        cost = token_cost(table, run.model, run.input_tokens, run.output_tokens, run.day)
        if cost is None:
            line = builder.unpriced_line(row, "model", run.model or UNKNOWN)
            line.runs += run.runs
            line.input_tokens += run.input_tokens
            line.output_tokens += run.output_tokens
        else:
            row.token_cost += cost
    for session in (s for s in usage.sessions if builder.wants(s.tenant)):
        row = builder.row(session.tenant, session.day, tools, session.assistant_id)
        row.code_interpreter_sessions += session.count
        price = _tool_price(table.code_interpreter_session, session.day)
        if price is None:
            line = builder.unpriced_line(row, "tool", "code_interpreter", "sessions")
            line.quantity += session.count
        else:
            row.code_interpreter_cost += session.count * price
    for calls in (c for c in usage.file_search_calls if builder.wants(c.tenant)):
        row = builder.row(calls.tenant, calls.day, tools, calls.assistant_id)
        row.file_search_calls += calls.count
        price = _tool_price(table.file_search_call, calls.day)
        if price is None:
            builder.unpriced_line(row, "tool", "file_search", "calls").quantity += calls.count
        else:
            row.file_search_cost += calls.count * price
    _price_storage(builder, table, storage_by_day(usage.stores, start, end))
    rows = sorted(builder.rows.values(), key=_row_order)
    unpriced = sorted(builder.unpriced.values(), key=lambda u: (u.tenant, u.kind, u.name))
    return rows, unpriced


def _row_order(row: Row) -> tuple[str, bool, str]:
    group = row.group or ""
    return (row.tenant, group.startswith("("), group)


def _price_storage(
    builder: _Builder, table: PricingTable, days: list[tuple[date, int, dict[str, float]]]
) -> None:
    group = STORAGE if builder.group_by == "assistant" else TOOLS_AND_STORAGE
    for day, covered, by_tenant in days:
        try:
            table.storage(day)
        except PricingError:
            costs = None
        else:  # the average over the part of the day covered; the cost is then pro rata
            average = {t: value * GIB * DAY / covered for t, value in by_tenant.items()}
            costs = storage_costs(table, average, day)
        for tenant, value in sorted(by_tenant.items()):
            if not builder.wants(tenant):
                continue
            row = builder.row(tenant, day, group, group)
            quantity = Decimal(value).quantize(GB_DAY_PLACES)
            row.storage_gb_days += quantity
            if costs is None:
                line = builder.unpriced_line(row, "tool", "file_search_storage", "GB-days")
                line.quantity += quantity
            else:
                row.storage_cost += _pro_rata(costs[tenant], covered)


def _pro_rata(cost: Decimal, covered: int) -> Decimal:
    if covered == DAY:
        return cost
    share = Fraction(cost) * covered / DAY
    exact = Decimal(share.numerator) / Decimal(share.denominator)
    return exact.quantize(Decimal(1).scaleb(-STORAGE_PLACES))


def storage_by_day(
    stores: Sequence[StoreHistory], start: int, end: int
) -> list[tuple[date, int, dict[str, float]]]:
    """Per UTC day overlapping [start, end): the seconds covered and GB-days per tenant."""
    windows = [
        (unix_day(n), max(start, n * DAY), min(end, (n + 1) * DAY))
        for n in range(start // DAY, (end - 1) // DAY + 1)
        if end > start
    ]
    totals: dict[date, dict[str, float]] = {day: defaultdict(float) for day, _, _ in windows}
    for store in stores:
        ordered = sorted(store.samples, key=lambda sample: sample[0])
        for tenant in sorted({sample[1] for sample in ordered}):
            points = [(at, size if owner == tenant else 0) for at, owner, size in ordered]
            if store.gone_at is not None:
                points.append((store.gone_at, 0))  # sorted after a sample at the same time
                points.sort(key=lambda point: point[0])
            times = [at for at, _ in points]
            for day, low, high in windows:
                first = max(bisect_right(times, low) - 1, 0)
                value = gb_days(points[first : bisect_left(times, high)], low, high)
                if value > 0:
                    totals[day][tenant] += value
    return [(day, high - low, dict(totals[day])) for day, low, high in windows]


def build_report(
    engine: Engine,
    table: PricingTable,
    since: datetime,
    until: datetime,
    now: datetime,
    *,
    tenant: str | None = None,
    group_by: GroupBy | None = None,
    pricing_source: str = "",
) -> Report:
    """The report for [since, until), as of ``now`` (storage is not counted past it)."""
    if since.tzinfo is None or until.tzinfo is None or now.tzinfo is None:
        raise ValueError("since, until and now must be timezone-aware")
    if since >= until:
        raise ValueError(f"since ({since.isoformat()}) must be before until ({until.isoformat()})")
    start, end = _whole_second(since), _whole_second(until)
    storage_end = max(start, min(end, _whole_second(now)))
    usage = fetch_usage(engine, start, end, storage_end, tenant)
    rows, unpriced = price_usage(usage, table, start, storage_end, group_by, tenant)
    totals = Row(TOTAL)
    for row in rows:
        totals.add(row)
    return Report(
        since=datetime.fromtimestamp(start, UTC),
        until=datetime.fromtimestamp(end, UTC),
        generated_at=now.astimezone(UTC),
        group_by=group_by,
        tenant=tenant,
        pricing_source=pricing_source,
        rows=tuple(rows),
        totals=totals,
        unpriced=tuple(unpriced),
    )


def _whole_second(moment: datetime) -> int:
    return int(moment.timestamp() // 1)

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

from tollhouse.metering.costs import (
    GIB,
    STORAGE_PLACES,
    container_cost,
    container_sessions,
    gb_days,
    storage_costs,
    token_cost,
    tool_call_cost,
    usage_cost,
)
from tollhouse.metering.pricing import (
    DEFAULT_MEMORY_LIMIT,
    FILE_SEARCH_CALL,
    STANDARD_TIERS,
    PricingError,
    PricingTable,
)
from tollhouse.metering.responses import TokenUsage
from tollhouse.report.query import (
    DAY,
    CallUse,
    ContainerUse,
    LedgerUsage,
    StoreHistory,
    TokenUse,
    fetch_usage,
    unix_day,
)

GroupBy = Literal["model", "assistant", "day", "api"]
GROUP_BYS: tuple[GroupBy, ...] = ("model", "assistant", "day", "api")
# The APIs usage is grouped by with --group-by api.
ASSISTANTS, RESPONSES, CHAT = "assistants", "responses", "chat.completions"
# Container memory limits with a column of their own (SPEC); others count in the total only.
MEMORY_TIERS = ("1g", "4g", "16g", "64g")
DEFAULT_CONTAINER_MINUTES = 20  # SPEC: a container expires 20 minutes after its last activity
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
    responses: int = 0
    chat_completions: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    web_search_calls: int = 0
    web_search_cost: Decimal = Decimal(0)
    image_generation_calls: int = 0
    other_tool_calls: int = 0
    other_tool_cost: Decimal = Decimal(0)
    container_sessions: int = 0
    container_sessions_1g: int = 0
    container_sessions_4g: int = 0
    container_sessions_16g: int = 0
    container_sessions_64g: int = 0
    container_active_seconds: int = 0
    container_cost: Decimal = Decimal(0)
    has_unpriced_usage: bool = False

    @property
    def total_cost(self) -> Decimal:
        costs = (
            self.token_cost,
            self.code_interpreter_cost,
            self.file_search_cost,
            self.web_search_cost,
            self.other_tool_cost,
            self.container_cost,
        )
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
    responses: int = 0
    chat_completions: int = 0


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


def _group(
    group_by: GroupBy | None, day: date, model: str | None, assistant: str | None, api: str
) -> str:
    if group_by == "day":
        return day.isoformat()
    if group_by == "model":
        return model or UNKNOWN
    if group_by == "api":
        return api
    return assistant or UNKNOWN


class _Builder:
    """Rows and unpriced lines being filled in."""

    def __init__(self, group_by: GroupBy | None, tenant: str | None) -> None:
        self.group_by, self.tenant = group_by, tenant
        self.rows: dict[tuple[str, str | None], Row] = {}
        self.unpriced: dict[tuple[str, str, str], Unpriced] = {}

    def wants(self, tenant: str) -> bool:
        return self.tenant is None or tenant == self.tenant

    def row(
        self,
        tenant: str,
        day: date,
        model: str | None,
        assistant: str | None,
        api: str = ASSISTANTS,
    ) -> Row:
        group = None if self.group_by is None else _group(self.group_by, day, model, assistant, api)
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
    _price_tokens(builder, table, usage.responses, RESPONSES)
    _price_tokens(builder, table, usage.chat_completions, CHAT)
    _price_calls(builder, table, usage.response_tool_calls)
    _price_containers(builder, table, usage.containers, end)
    rows = sorted(builder.rows.values(), key=_row_order)
    unpriced = sorted(builder.unpriced.values(), key=lambda u: (u.tenant, u.kind, u.name))
    return rows, unpriced


def _price_tokens(
    builder: _Builder, table: PricingTable, uses: Sequence[TokenUse], api: str
) -> None:
    """Responses or chat completions: cached input at the cached rate, cache writes at the
    cache-write rate, reasoning as output, all times the service tier's multiplier."""
    for use in (u for u in uses if builder.wants(u.tenant)):
        row = builder.row(use.tenant, use.day, use.model, None, api)
        if api == RESPONSES:
            row.responses += use.count
        else:
            row.chat_completions += use.count
        row.input_tokens += use.input_tokens
        row.output_tokens += use.output_tokens
        row.cached_tokens += use.cached_tokens
        row.cache_write_tokens += use.cache_write_tokens
        row.reasoning_tokens += use.reasoning_tokens
        usage = TokenUsage(
            use.input_tokens,
            use.cached_tokens,
            use.cache_write_tokens,
            use.output_tokens,
            use.reasoning_tokens,
            use.input_tokens + use.output_tokens,
        )
        cost = usage_cost(table, use.model, usage, use.service_tier, use.day)
        if cost is None:
            tier = use.service_tier
            shown = use.model or UNKNOWN
            if tier is not None and tier not in STANDARD_TIERS:
                shown = f"{shown} ({tier} tier)"
            line = builder.unpriced_line(row, "model", shown)
            if api == RESPONSES:
                line.responses += use.count
            else:
                line.chat_completions += use.count
            line.input_tokens += use.input_tokens
            line.output_tokens += use.output_tokens
        else:
            row.token_cost += cost


def _price_calls(builder: _Builder, table: PricingTable, calls: Sequence[CallUse]) -> None:
    """Responses tool calls by kind: web search by the model and tool version, file search
    at the Responses per-call price, any other kind by its table entry, if any."""
    for use in (c for c in calls if builder.wants(c.tenant)):
        row = builder.row(use.tenant, use.day, use.model, None, RESPONSES)
        if use.kind == "web_search_call":
            row.web_search_calls += use.count
        elif use.kind == FILE_SEARCH_CALL:
            row.file_search_calls += use.count
        elif use.kind == "image_generation_call":
            row.image_generation_calls += use.count
        else:
            row.other_tool_calls += use.count
        price = tool_call_cost(table, use.kind, use.model, use.tool, use.day)
        if price is None:
            name = " ".join(
                part for part in (use.kind, use.tool, use.model and f"on {use.model}") if part
            )
            builder.unpriced_line(row, "tool", name, "calls").quantity += use.count
        elif use.kind == "web_search_call":
            row.web_search_cost += use.count * price
        elif use.kind == FILE_SEARCH_CALL:
            row.file_search_cost += use.count * price
        else:
            row.other_tool_cost += use.count * price


def _price_containers(
    builder: _Builder, table: PricingTable, containers: Sequence[ContainerUse], end: int
) -> None:
    """A container lives from its creation until it expires (or the report's end, if
    sooner), priced by the billing in effect on the day it was created."""
    group = TOOLS_AND_STORAGE if builder.group_by == "model" else None
    for use in (c for c in containers if builder.wants(c.tenant)):
        day = unix_day(use.created_at // DAY)
        row = builder.row(use.tenant, day, group, None, RESPONSES)
        minutes = use.expires_after_minutes or DEFAULT_CONTAINER_MINUTES
        until = min(use.last_active_at + minutes * 60, max(end, use.created_at))
        active = max(0, until - use.created_at)
        size = use.memory_limit or DEFAULT_MEMORY_LIMIT
        row.container_active_seconds += active
        sessions = container_sessions(table, size, active, day)
        cost = container_cost(table, size, active, day)
        row.container_sessions += sessions or 1
        if size in MEMORY_TIERS:
            name = f"container_sessions_{size}"
            setattr(row, name, getattr(row, name) + (sessions or 1))
        if cost is None:
            builder.unpriced_line(row, "tool", f"container {size}", "containers").quantity += 1
        else:
            row.container_cost += cost


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
            row = builder.row(tenant, day, group, group, STORAGE)
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

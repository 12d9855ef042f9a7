"""Flows side by side: per tenant, flow and API, the requests tagged with the flow, their
latency as tollhouse saw it, and the tokens, tool calls and cost of the runs and responses
they made, per completed one. Reads the ledger (``fetch_flows``), then prices (``build``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, func, select
from sqlmodel import col

from tollhouse.ledger.models import FlowRequest, FlowUnit, Response, ResponseToolCall, Run, ToolCall
from tollhouse.metering.costs import token_cost, tool_call_cost
from tollhouse.metering.pricing import PricingTable
from tollhouse.report.query import DAY, unix_day

COMPLETED = "completed"
NOTES = (
    "Requests: those tagged with the flow (X-Tollhouse-Flow, or metadata.tollhouse_flow on a "
    "create) answered in the period; latency is from their arrival at tollhouse to the first "
    "and to the last byte of the answer (p50/p95, nearest rank), upstream time included.",
    "Units: the runs (Assistants) and responses (Responses) those requests made or followed, "
    "by the day they finished. Tokens are all their tokens; tool calls are Code Interpreter "
    "and File Search calls of the runs' steps, and every tool-call item of the responses.",
    "Cost per completed unit: the tokens and per-call fees of the completed units, at the "
    "prices of their day, divided by their number. Code Interpreter sessions and containers "
    "are not split per flow and are left out; unpriced tokens are counted, not priced.",
)


@dataclass(frozen=True, slots=True)
class _Unit:
    tenant: str
    flow: str
    api: str
    id: str
    model: str | None
    status: str
    day: date
    input_tokens: int
    cached_tokens: int
    output_tokens: int
    tier: str | None


@dataclass
class FlowRow:
    tenant: str
    flow: str
    api: str
    requests: int = 0
    errors: int = 0
    first_byte_p50_ms: int | None = None
    first_byte_p95_ms: int | None = None
    last_byte_p50_ms: int | None = None
    last_byte_p95_ms: int | None = None
    units: int = 0
    completed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    tool_calls: int = 0
    cost: Decimal = Decimal(0)
    unpriced_tokens: int = 0
    _first: list[int] = field(default_factory=list, repr=False)
    _last: list[int] = field(default_factory=list, repr=False)

    @property
    def cost_per_completed(self) -> Decimal | None:
        return None if not self.completed else self.cost / self.completed


def percentile(values: Sequence[int], share: float) -> int | None:
    """The nearest-rank percentile (``share`` in (0, 1]) of ``values``; None if empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(1, math.ceil(share * len(ordered))) - 1]


def _units(engine: Engine, start: int, end: int, tenant: str | None) -> list[_Unit]:
    run_at = func.coalesce(col(Run.finished_at), col(Run.created_at))
    response_at = func.coalesce(col(Response.finished_at), col(Response.created_at))
    runs = (
        select(
            col(FlowUnit.tenant), col(FlowUnit.flow), col(FlowUnit.api), col(Run.id),
            col(Run.model), col(Run.status), (run_at // DAY).label("day"),
            func.coalesce(col(Run.prompt_tokens), 0).label("input"),
            func.coalesce(col(Run.completion_tokens), 0).label("output"),
        )
        .join(Run, col(Run.id) == col(FlowUnit.unit_id))
        .where(run_at >= start, run_at < end)
    )  # fmt: skip
    responses = (
        select(
            col(FlowUnit.tenant), col(FlowUnit.flow), col(FlowUnit.api), col(Response.id),
            col(Response.model), col(Response.status), (response_at // DAY).label("day"),
            func.coalesce(col(Response.input_tokens), 0).label("input"),
            func.coalesce(col(Response.cached_tokens), 0).label("cached"),
            func.coalesce(col(Response.output_tokens), 0).label("output"),
            col(Response.service_tier),
        )
        .join(Response, col(Response.id) == col(FlowUnit.unit_id))
        .where(response_at >= start, response_at < end)
    )  # fmt: skip
    if tenant is not None:
        runs = runs.where(col(FlowUnit.tenant) == tenant)
        responses = responses.where(col(FlowUnit.tenant) == tenant)
    found = []
    with engine.connect() as connection:
        for row in connection.execute(runs):
            found.append(
                _Unit(row.tenant, row.flow, row.api, row.id, row.model, row.status,
                      unix_day(int(row.day)), int(row.input), 0, int(row.output), None)
            )  # fmt: skip
        for answer in connection.execute(responses):
            found.append(
                _Unit(answer.tenant, answer.flow, answer.api, answer.id, answer.model,
                      answer.status, unix_day(int(answer.day)), int(answer.input),
                      int(answer.cached), int(answer.output), answer.service_tier)
            )  # fmt: skip
    return found


def _tool_calls(engine: Engine, ids: list[str]) -> dict[str, list[tuple[str, str | None]]]:
    """Per run or response id: its tool calls' (type, declared tool version)."""
    calls: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    if not ids:
        return calls
    with engine.connect() as connection:
        for run_id, kind in connection.execute(
            select(col(ToolCall.run_id), col(ToolCall.type)).where(col(ToolCall.run_id).in_(ids))
        ):
            calls[run_id].append((kind, None))
        for response_id, kind, tool in connection.execute(
            select(
                col(ResponseToolCall.response_id), col(ResponseToolCall.type),
                col(ResponseToolCall.tool),
            ).where(col(ResponseToolCall.response_id).in_(ids))
        ):  # fmt: skip
            if response_id is not None:
                calls[response_id].append((kind, tool))
    return calls


def _unit_cost(
    table: PricingTable, unit: _Unit, calls: list[tuple[str, str | None]]
) -> Decimal | None:
    """Tokens and per-call fees of one unit; None if any part is unpriced."""
    try:
        cost = token_cost(
            table, unit.model, unit.input_tokens, unit.output_tokens, unit.day,
            cached_tokens=unit.cached_tokens, tier=unit.tier,
        )  # fmt: skip
    except ValueError:
        return None
    if cost is None:
        return None
    for kind, tool in calls:
        fee: Decimal | None
        if unit.api == "assistants":
            fee = table.file_search_call(unit.day) if kind == "file_search" else Decimal(0)
        else:
            fee = tool_call_cost(table, kind, unit.model, tool, unit.day)
        if fee is None:
            return None
        cost += fee
    return cost


def build_flows(
    engine: Engine, table: PricingTable, start: int, end: int, tenant: str | None = None
) -> list[FlowRow]:
    """One row per tenant, flow and API with requests in [start, end) or units finished in it."""
    rows: dict[tuple[str, str, str], FlowRow] = {}

    def row(key: tuple[str, str, str]) -> FlowRow:
        return rows.setdefault(key, FlowRow(*key))

    query: Any = select(
        col(FlowRequest.tenant), col(FlowRequest.flow), col(FlowRequest.api),
        col(FlowRequest.status), col(FlowRequest.first_byte_ms), col(FlowRequest.last_byte_ms),
    ).where(col(FlowRequest.at) >= start, col(FlowRequest.at) < end)  # fmt: skip
    if tenant is not None:
        query = query.where(col(FlowRequest.tenant) == tenant)
    with engine.connect() as connection:
        for request in connection.execute(query):
            this = row((request.tenant, request.flow, request.api))
            this.requests += 1
            this.errors += request.status >= 400
            if request.first_byte_ms is not None and request.last_byte_ms is not None:
                this._first.append(int(request.first_byte_ms))
                this._last.append(int(request.last_byte_ms))
    units = _units(engine, start, end, tenant)
    calls = _tool_calls(engine, sorted(u.id for u in units))
    for unit in units:
        this = row((unit.tenant, unit.flow, unit.api))
        this.units += 1
        this.input_tokens += unit.input_tokens
        this.output_tokens += unit.output_tokens
        this.tool_calls += len(calls.get(unit.id, ()))
        if unit.status != COMPLETED:
            continue
        this.completed += 1
        cost = _unit_cost(table, unit, calls.get(unit.id, []))
        if cost is None:
            this.unpriced_tokens += unit.input_tokens + unit.output_tokens
        else:
            this.cost += cost
    for this in rows.values():
        this.first_byte_p50_ms = percentile(this._first, 0.5)
        this.first_byte_p95_ms = percentile(this._first, 0.95)
        this.last_byte_p50_ms = percentile(this._last, 0.5)
        this.last_byte_p95_ms = percentile(this._last, 0.95)
    return [rows[key] for key in sorted(rows)]

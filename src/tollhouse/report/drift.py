"""The upstream's bill for a UTC day beside the ledger's report for it, measure by measure.

``bill_from_pages`` reads the organisation usage and costs API's pages into a ``Bill``;
``compare`` lines it up with a report grouped by model: per measure (and per model for
tokens and dollars) the bill's figure, tollhouse's, the difference and the ratio. The
difference is what reached the upstream without passing tollhouse (or what tollhouse
missed): it belongs to no tenant.

tollhouse's figure for a measure is the report row's field named in ``MEASURES``; a
measure whose field the report does not have yet is shown as not metered (``None``),
never as 0, so adding a measure to the report lights up its line here.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from tollhouse.report.build import TOOLS_AND_STORAGE, Report, Row
from tollhouse.report.query import StoreHistory

ALL = "(all)"
DOLLARS = "cost_usd"
VECTOR_STORE_BYTES = "vector_store_bytes"
_TOKEN_LINES = (", input", ", cached input", ", output")


@dataclass(frozen=True, slots=True)
class Measure:
    """A figure on both sides: where the bill has it, and the report row field holding it."""

    name: str
    endpoint: str  # the usage endpoint, under /v1/organization/usage/
    field: str  # the result field summed
    ledger: str | None  # the report Row field; None: only ever on the bill
    per_model: bool = False


MEASURES: tuple[Measure, ...] = (
    Measure("input_tokens", "completions", "input_tokens", "input_tokens", per_model=True),
    Measure(
        "input_cached_tokens",
        "completions",
        "input_cached_tokens",
        "input_cached_tokens",
        per_model=True,
    ),
    Measure("output_tokens", "completions", "output_tokens", "output_tokens", per_model=True),
    Measure("model_requests", "completions", "num_model_requests", "model_requests", True),
    Measure(
        "code_interpreter_sessions",
        "code_interpreter_sessions",
        "num_sessions",
        "code_interpreter_sessions",
    ),
    Measure("file_search_calls", "file_search_calls", "num_requests", "file_search_calls"),
    Measure("web_search_calls", "web_search_calls", "num_requests", "web_search_calls"),
    Measure(VECTOR_STORE_BYTES, "vector_stores", "usage_bytes", None),
)
ENDPOINTS = tuple(dict.fromkeys(measure.endpoint for measure in MEASURES))
GROUPED_BY_MODEL = frozenset({"completions", "web_search_calls"})
# The costs API's line items for tools, and the report Row field holding their dollars.
COST_LINES: Mapping[str, str] = {
    "Code Interpreter sessions": "code_interpreter_cost",
    "File search tool calls": "file_search_cost",
    "Web search tool calls": "web_search_cost",
    "File search storage": "storage_cost",
}


class BillError(Exception):
    """The bill could not be read; the message says what to fix (and never holds the key)."""


@dataclass
class Bill:
    """One UTC day of the upstream's bill. A measure missing from ``totals`` was not served
    (the upstream has no such endpoint)."""

    day: date
    totals: dict[str, float] = field(default_factory=dict)
    by_model: dict[str, dict[str, float]] = field(default_factory=dict)
    costs: dict[str, float] = field(default_factory=dict)  # USD by line item
    currency: str = "usd"


def _results(pages: Iterable[Mapping[str, Any]]) -> Iterable[Mapping[str, Any]]:
    for page in pages:
        for bucket in page.get("data") or ():
            yield from bucket.get("results") or ()


def bill_from_pages(
    day: date,
    usage: Mapping[str, Sequence[Mapping[str, Any]]],
    costs: Sequence[Mapping[str, Any]] | None,
) -> Bill:
    """The bill from the pages of each usage endpoint served (by endpoint name) and of costs."""
    bill = Bill(day)
    for measure in MEASURES:
        pages = usage.get(measure.endpoint)
        if pages is None:
            continue
        bill.totals[measure.name] = 0.0
        if measure.per_model:
            bill.by_model[measure.name] = defaultdict(float)
        for result in _results(pages):
            value = float(result.get(measure.field) or 0)
            bill.totals[measure.name] += value
            if measure.per_model:
                bill.by_model[measure.name][str(result.get("model") or "(unknown)")] += value
    if costs is not None:
        bill.totals[DOLLARS] = 0.0
        for result in _results(costs):
            amount = result.get("amount") or {}
            value = float(amount.get("value") or 0)
            bill.currency = str(amount.get("currency") or bill.currency)
            line = str(result.get("line_item") or "(total)")
            bill.costs[line] = bill.costs.get(line, 0.0) + value
            bill.totals[DOLLARS] += value
    return bill


@dataclass(frozen=True, slots=True)
class Line:
    """One measure (for one model, cost component, or everything) on both sides."""

    measure: str
    scope: str
    bill: float
    tollhouse: float | None  # None: tollhouse does not meter this yet

    @property
    def difference(self) -> float | None:
        return None if self.tollhouse is None else self.bill - self.tollhouse

    @property
    def ratio(self) -> float | None:
        """|bill - tollhouse| / bill; infinite when tollhouse has what the bill has not."""
        difference = self.difference
        if difference is None:
            return None
        if self.bill == 0:
            return 0.0 if difference == 0 else math.inf
        return abs(difference) / abs(self.bill)

    def drifts(self, tolerance: float) -> bool:
        ratio = self.ratio
        return ratio is not None and ratio > tolerance


@dataclass(frozen=True, slots=True)
class Reconciliation:
    day: date
    currency: str
    lines: tuple[Line, ...]
    tenants: Mapping[str, float]  # tollhouse's dollars per tenant; the difference has none

    def totals(self) -> list[Line]:
        return [line for line in self.lines if line.scope == ALL]

    def drifting(self, tolerance: float) -> list[Line]:
        return [line for line in self.lines if line.drifts(tolerance)]


def _number(value: Any) -> float | None:
    if value is None:
        return None
    return float(value) if isinstance(value, int | float | Decimal) else None


def _ledger(rows: Iterable[Row], name: str | None) -> float | None:
    """The sum of a Row field over ``rows``; None when the report has no such field."""
    if name is None or not hasattr(Row, name):
        return None
    values = [_number(getattr(row, name, None)) for row in rows]
    if any(value is None for value in values):
        return None
    return sum(value for value in values if value is not None)


def stored_bytes(stores: Iterable[StoreHistory], moment: int) -> float:
    """The bytes the ledger last sampled at or before ``moment`` in stores not yet gone."""
    total = 0
    for store in stores:
        if store.gone_at is not None and store.gone_at <= moment:
            continue
        seen = [sample for sample in store.samples if sample[0] <= moment]
        if seen:
            total += max(seen, key=lambda sample: sample[0])[2]
    return float(total)


def _cost_model(line: str) -> str | None:
    for suffix in _TOKEN_LINES:
        if line.endswith(suffix):
            return line[: -len(suffix)]
    return None


def _cost_lines(bill: Bill, rows: Sequence[Row], by_model: Mapping[str, list[Row]]) -> list[Line]:
    """Dollars per model (its token line items), per tool line item, and in all."""
    billed_models: dict[str, float] = defaultdict(float)
    billed_items: dict[str, float] = defaultdict(float)
    for item, value in bill.costs.items():
        model = _cost_model(item)
        if model is not None:
            billed_models[model] += value
        else:
            billed_items[item] += value
    lines = []
    for model in sorted(set(billed_models) | set(by_model)):
        figure = _ledger(by_model.get(model, []), "token_cost")
        lines.append(Line(DOLLARS, model, billed_models.get(model, 0.0), figure))
    for item in sorted(set(billed_items) | set(COST_LINES)):
        figure = _ledger(rows, COST_LINES.get(item))
        if item in billed_items or figure:
            lines.append(Line(DOLLARS, item, billed_items.get(item, 0.0), figure))
    lines.append(Line(DOLLARS, ALL, bill.totals[DOLLARS], _ledger(rows, "total_cost")))
    return lines


def compare(
    bill: Bill, report: Report, stores: Sequence[StoreHistory], moment: int
) -> Reconciliation:
    """The bill beside ``report`` (the ledger for the bill's day, grouped by model); vector
    storage is the bytes held at ``moment`` (the end of the day, or now)."""
    rows = list(report.rows)
    by_model: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        if row.group != TOOLS_AND_STORAGE:
            by_model[row.group or "(unknown)"].append(row)
    lines: list[Line] = []
    for measure in MEASURES:
        if measure.name not in bill.totals:
            continue
        if measure.per_model:
            billed = bill.by_model.get(measure.name, {})
            for model in sorted(set(billed) | set(by_model)):
                figure = _ledger(by_model.get(model, []), measure.ledger)
                lines.append(Line(measure.name, model, billed.get(model, 0.0), figure))
        total = (
            stored_bytes(stores, moment)
            if measure.name == VECTOR_STORE_BYTES
            else _ledger(rows, measure.ledger)
        )
        lines.append(Line(measure.name, ALL, bill.totals[measure.name], total))
    if DOLLARS in bill.totals:
        lines.extend(_cost_lines(bill, rows, by_model))
    tenants: dict[str, float] = defaultdict(float)
    for row in rows:
        tenants[row.tenant] += float(row.total_cost)
    return Reconciliation(bill.day, bill.currency, tuple(lines), dict(tenants))

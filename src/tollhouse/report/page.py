"""The admin page: a period's report and the buckets' levels as one self-contained HTML page.

Pure: reports and metric samples in, HTML out. The numbers are the JSON renderer's own
(``render_json`` for the table, ``row_fields`` for the daily chart), so the page says what
``tollhouse report --format json`` says, and a column added there appears here as well.
Everything is inline (CSS and SVG, no script), so the page works offline.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from html import escape
from typing import Any

from prometheus_client import Metric

from tollhouse.report.build import Report
from tollhouse.report.chart import colour, daily_costs, level
from tollhouse.report.migration import Migration
from tollhouse.report.migration_render import csv_row
from tollhouse.report.render import (
    month_start,
    parse_moment,
    render_json,
    row_fields,
    utc_text,
)

MAX_CHART_DAYS = 400  # beyond this a daily bar is under a pixel wide
LABELS = {"token_cost": "tokens"}  # a cost field's name in the legend, where it is not plain
ORGANISATION = "_org"  # the organisation's buckets' tenant label


class PeriodError(ValueError):
    """The query string's period cannot be read."""


@dataclass(frozen=True, slots=True)
class Bucket:
    """One (tenant, class) bucket from the metrics: its last level, limit and refusals."""

    tenant: str
    request_class: str
    remaining: float | None
    limit: float | None
    throttled: float


@dataclass(frozen=True, slots=True)
class PageData:
    """What the page shows; ``report`` and ``by_day`` are None when the ledger was not read."""

    since: datetime
    until: datetime
    now: datetime
    report: Report | None
    by_day: Report | None
    buckets: Sequence[Bucket]
    problem: str | None = None
    query: Mapping[str, str] = field(default_factory=dict)
    migration: Migration | None = None
    budgets: Sequence[Budget] = ()


def page_period(query: Mapping[str, str], now: datetime) -> tuple[datetime, datetime]:
    """``?since=&until=``: ISO dates or datetimes, UTC unless zoned, until excluded.

    Defaults as ``tollhouse report``: from the 1st of this month to now."""
    moments = []
    for name, default in (("since", month_start(now)), ("until", now)):
        text = query.get(name, "").strip()
        try:
            moments.append(parse_moment(text) if text else default)
        except ValueError:
            raise PeriodError(
                f"{name}={text!r} is not an ISO date or datetime (e.g. 2025-01-31)"
            ) from None
    since, until = moments
    if since >= until:
        raise PeriodError(f"since ({utc_text(since)}) is not before until ({utc_text(until)})")
    return since, until


def bucket_levels(families: Iterable[Metric]) -> list[Bucket]:
    """Each bucket seen (its level and limit) or refusing, from the metric families."""
    seen: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for family in families:
        for sample in family.samples:
            key = (sample.labels.get("tenant", ""), sample.labels.get("class", ""))
            if sample.name == "tollhouse_ratelimit_remaining":
                seen[key]["remaining"] = sample.value
            elif sample.name == "tollhouse_ratelimit_limit":
                seen[key]["limit"] = sample.value
            elif _refusals(sample.name, sample.labels) and sample.value > 0:
                seen[key]["throttled"] = seen[key].get("throttled", 0.0) + sample.value
    return [
        Bucket(tenant, request_class, v.get("remaining"), v.get("limit"), v.get("throttled", 0.0))
        for (tenant, request_class), v in sorted(seen.items())
    ]


@dataclass(frozen=True, slots=True)
class Budget:
    """A tenant's spend budget for one period, from the metrics: its limit and what is spent
    (metered plus the worst case in flight)."""

    tenant: str
    period: str
    limit: float
    spent: float


def budget_levels(families: Iterable[Metric]) -> list[Budget]:
    """Each (tenant, period) budget the metrics know, with what it has spent."""
    seen: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    names = {"tollhouse_budget_usd": "limit", "tollhouse_budget_spent_usd": "spent"}
    for family in families:
        for sample in family.samples:
            if sample.name in names:
                key = (sample.labels.get("tenant", ""), sample.labels.get("period", ""))
                seen[key][names[sample.name]] = sample.value
    return [
        Budget(tenant, period, v["limit"], v.get("spent", 0.0))
        for (tenant, period), v in sorted(seen.items())
        if v.get("limit")
    ]


def _refusals(name: str, labels: Mapping[str, str]) -> bool:
    return name == "tollhouse_requests_total" and labels.get("outcome") == "throttled"


def render_page(data: PageData) -> str:
    body = "".join(section(data) for section in SECTIONS)
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        "<meta http-equiv=Content-Security-Policy content=\"default-src 'none'; "
        "style-src 'unsafe-inline'; form-action 'self'\">"
        "<meta name=viewport content='width=device-width, initial-scale=1'>"
        f"<title>tollhouse: {_e(_period_text(data))}</title><style>{STYLE}</style></head>"
        f"<body><main data-since={_a(data.since.isoformat())} "
        f"data-until={_a(data.until.isoformat())} data-now={_a(data.now.isoformat())}>"
        f"{body}</main></body></html>\n"
    )


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _a(text: object) -> str:
    """An attribute value, quoted and escaped."""
    return f'"{_e(text)}"'


def _period_text(data: PageData) -> str:
    return f"{utc_text(data.since)} to {utc_text(data.until)} (excluded)"


def _json_text(value: object) -> str:
    """A JSON value as the page writes it in data-value: what json.dumps gives, unquoted."""
    return value if isinstance(value, str) else json.dumps(value)


def _plain_number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def _shown(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return ""
    return f"${value}" if name.endswith("_cost") else str(value)


def _heading(name: str) -> str:
    return name.replace("_", " ")


def _header(data: PageData) -> str:
    this_month = month_start(data.now)
    last_month = month_start(this_month - timedelta(days=1))
    recent = (data.now - timedelta(days=30)).date()
    links: tuple[tuple[str, dict[str, date]], ...] = (
        ("this month", {}),
        ("last month", {"since": last_month.date(), "until": this_month.date()}),
        ("last 30 days", {"since": recent}),
    )
    shortcuts = " · ".join(
        f"<a href={_a('?' + '&'.join(f'{k}={v}' for k, v in q.items()))}>{_e(t)}</a>"
        for t, q in links
    )
    source = f"; prices: {data.report.pricing_source}" if data.report else ""
    return (
        f"<header><h1>tollhouse</h1><p class=period>{_e(_period_text(data))}{_e(source)}; "
        f"as of {_e(utc_text(data.now))}</p><form method=get>"
        f"<label>since <input name=since placeholder=YYYY-MM-DD "
        f"value={_a(data.query.get('since', data.since.date().isoformat()))}></label> "
        f"<label>until (excluded) <input name=until placeholder='now' "
        f"value={_a(data.query.get('until', ''))}></label> "
        f"<button>show</button> {shortcuts}</form></header>"
    )


def _problem(data: PageData) -> str:
    if data.problem is None:
        return ""
    return (
        f"<section class=problem role=alert><h2>Not shown</h2><p>{_e(data.problem)}</p></section>"
    )


def _totals(data: PageData) -> str:
    if data.report is None:
        return ""
    document = json.loads(render_json(data.report))
    names = list(document["totals"])
    head = "".join(f"<th>{_e(_heading(n))}</th>" for n in names)
    rows = "".join(
        _table_row("row", row["tenant"], row, names, f"<a href={_a('#t-' + row['tenant'])}>")
        for row in document["rows"]
    )
    total = _table_row("totals", "TOTAL", document["totals"], names, "")
    empty = "" if document["rows"] else "<p>No usage in this period.</p>"
    return (
        "<section class=costs><h2>Usage and cost by tenant</h2>"
        "<p class=hint>As <code>tollhouse report --format json</code> gives it for this period.</p>"
        f"{empty}<table><thead><tr><th>tenant</th>{head}</tr></thead>"
        f"<tbody>{rows}</tbody><tfoot>{total}</tfoot></table>{_unpriced(document)}</section>"
    )


def _table_row(
    kind: str, tenant: str, values: Mapping[str, Any], names: list[str], link: str
) -> str:
    cells = "".join(
        f"<td data-field={_a(n)} data-value={_a(_json_text(values[n]))}>"
        f"{_e(_shown(n, values[n]))}</td>"
        for n in names
    )
    label = f"{link}{_e(tenant)}</a>" if link else _e(tenant)
    return f"<tr data-row={_a(kind)} data-tenant={_a(tenant)}><th>{label}</th>{cells}</tr>"


def _unpriced(document: Mapping[str, Any]) -> str:
    lines = document["unpriced"]
    if not lines:
        return ""
    items = "".join(
        "<li data-row=unpriced>"
        + ", ".join(
            f"<span data-field={_a(k)} data-value={_a(_json_text(v))}>{_e(_heading(k))} "
            f"<b>{_e(_shown(k, v))}</b></span>"
            for k, v in line.items()
        )
        + "</li>"
        for line in lines
    )
    return f"<h3>Unpriced usage (counted above, in no cost)</h3><ul class=unpriced>{items}</ul>"


def _tenants(data: PageData) -> str:
    names = {bucket.tenant for bucket in data.buckets}
    if data.report is not None:
        names |= {row.tenant for row in data.report.rows}
    return "".join(_tenant(data, name) for name in sorted(names - {ORGANISATION})) + (
        _tenant(data, ORGANISATION) if ORGANISATION in names else ""
    )


def _tenant(data: PageData, tenant: str) -> str:
    title = "the organisation (all tenants)" if tenant == ORGANISATION else tenant
    chart = "" if tenant == ORGANISATION else _chart(data, tenant)
    return (
        f"<section class=tenant id={_a('t-' + tenant)} data-tenant={_a(tenant)}>"
        f"<h2>{_e(title)}</h2>{chart}{_buckets(data, tenant)}</section>"
    )


def _days(since: datetime, until: datetime) -> list[date]:
    last = (until - timedelta(microseconds=1)).date()
    return [since.date() + timedelta(days=n) for n in range((last - since.date()).days + 1)]


def _chart(data: PageData, tenant: str) -> str:
    if data.by_day is None:
        return ""
    days = _days(data.since, data.until)
    if len(days) > MAX_CHART_DAYS:
        return f"<p>The daily chart covers at most {MAX_CHART_DAYS} days.</p>"
    names = row_fields(data.by_day.totals)
    kinds = [(n, _kind(n)) for n in names if n.endswith("_cost") and n != "total_cost"]
    costs: dict[date, dict[str, Decimal]] = {}
    for row in data.by_day.rows:
        if row.tenant == tenant and row.group is not None:
            values = row_fields(row)
            costs[date.fromisoformat(row.group)] = {k: Decimal(str(values[k])) for k, _ in kinds}
    if not any(any(c.values()) for c in costs.values()):
        return "<p class=hint>No cost in this period.</p>"
    legend = "".join(
        f"<li><i style={_a('background:' + colour(i))}></i>{_e(label)}</li>"
        for i, (_, label) in enumerate(kinds)
    )
    return (
        f"<h3>Cost by day and kind</h3><ul class=legend>{legend}</ul>"
        f"{daily_costs(f'cost by day of {tenant}', days, kinds, costs)}"
    )


def _kind(name: str) -> str:
    return LABELS.get(name, _heading(name.removesuffix("_cost")))


def _buckets(data: PageData, tenant: str) -> str:
    mine = [bucket for bucket in data.buckets if bucket.tenant == tenant]
    if not mine:
        return "<p class=hint>No bucket of this tenant has admitted or refused a request yet.</p>"
    rows = "".join(_bucket_row(bucket) for bucket in mine)
    return (
        "<h3>Buckets (since this process started)</h3><table class=buckets><thead><tr>"
        "<th>class</th><th>remaining / limit</th><th>remaining</th><th>limit per unit</th>"
        f"<th>refused (429)</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _bucket_row(bucket: Bucket) -> str:
    remaining, limit = bucket.remaining, bucket.limit
    bar = level(remaining / limit) if remaining is not None and limit else ""

    def cell(name: str, value: float | None) -> str:
        shown = "" if value is None else _plain_number(value)
        raw = "" if value is None else _json_text(float(value))
        return f"<td data-field={_a(name)} data-value={_a(raw)}>{_e(shown)}</td>"

    return (
        f"<tr data-row=bucket data-class={_a(bucket.request_class)}>"
        f"<th>{_e(bucket.request_class)}</th><td>{bar}</td>{cell('remaining', remaining)}"
        f"{cell('limit', limit)}{cell('throttled', bucket.throttled)}</tr>"
    )


def _budget_spent(data: PageData) -> str:
    """Each tenant's spend against its budgets, as the metrics have it right now."""
    if not data.budgets:
        return ""
    rows = []
    for budget in data.budgets:
        share = min(budget.spent / budget.limit, 1.0)
        cells = (
            ("tenant", budget.tenant),
            ("period", budget.period),
            ("limit_usd", f"{budget.limit:.2f}"),
            ("spent_usd", f"{budget.spent:.4f}"),
            ("spent_share", f"{share:.3f}"),
        )
        bar = (
            "<svg width=120 height=10 role=img><rect width=120 height=10 fill=#eee />"
            f"<rect width={120 * share:.1f} height=10 fill={'#c0392b' if share >= 1 else '#2c7'} />"
            "</svg>"
        )
        rows.append(
            f"<tr data-row=budget data-tenant={_a(budget.tenant)} data-period={_a(budget.period)}>"
            + "".join(f"<td data-field={_a(k)} data-value={_a(v)}>{_e(v)}</td>" for k, v in cells)
            + f"<td>{bar}</td></tr>"
        )
    head = "".join(f"<th>{_e(n)}</th>" for n in ("tenant", "period", "budget", "spent", "", ""))
    return (
        "<section class=budgets><h2>Spend budgets</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


MIGRATION_FIELDS = (
    "tenant",
    "assistants",
    "threads",
    "runs",
    "responses",
    "assistants_cost_usd",
    "responses_cost_usd",
    "unused_objects",
)


def _migration_summary(data: PageData) -> str:
    """Per tenant: what its Assistants work cost, what it would cost on Responses, and what
    would not need migrating; the numbers are ``tollhouse migration --format csv``'s."""
    if data.migration is None or not data.migration.tenants:
        return ""
    head = "".join(f"<th>{_e(name.replace('_', ' '))}</th>" for name in MIGRATION_FIELDS)
    rows = []
    for item in data.migration.tenants:
        fields = csv_row(item)
        cells = "".join(
            f"<td data-field={_a(name)} data-value={_a(fields[name])}>{_e(fields[name])}</td>"
            for name in MIGRATION_FIELDS
        )
        rows.append(f"<tr data-row=migration data-tenant={_a(item.tenant)}>{cells}</tr>")
    assumptions = "".join(f"<li>{_e(text)}</li>" for text in data.migration.assumptions)
    return (
        "<section class=migration><h2>Migrating to Responses</h2>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<details><summary>Assumptions</summary><ul>{assumptions}</ul></details></section>"
    )


def _notes(data: PageData) -> str:
    if data.report is None:
        return ""
    notes = json.loads(render_json(data.report))["notes"]
    items = "".join(f"<li>{_e(note)}</li>" for note in notes)
    return (
        "<details class=notes><summary>How the numbers are counted</summary>"
        f"<ul>{items}</ul></details>"
    )


SECTIONS: tuple[Callable[[PageData], str], ...] = (
    _header,
    _problem,
    _totals,
    _budget_spent,
    _migration_summary,
    _tenants,
    _notes,
)

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
main{max-width:1240px;margin:0 auto;padding:12px 20px}
h1{margin:0 0 4px;font-size:22px}h2{font-size:18px;margin:18px 0 6px}h3{font-size:15px}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px 14px;margin:12px 0}
.problem{border-color:#c33;background:#fff3f3}.hint,.period{color:#555}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;font-size:12px}
thead th{vertical-align:bottom;max-width:90px}th:first-child{text-align:left}
tfoot td,tfoot th{font-weight:bold;border-top:2px solid #999}
.chart{width:100%;height:auto}.chart .slot{fill:transparent}.chart .slot:hover{fill:#eee}
.grid{stroke:#ddd}.tick{font-size:11px;text-anchor:end;fill:#555}
.day{font-size:10px;text-anchor:middle;fill:#555}
.legend{list-style:none;padding:0;display:flex;gap:14px;margin:0}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.level{width:200px;height:12px}.level .slot{fill:#eee}.level .fill{fill:#59a14f}
.notes{margin:12px 0;color:#444}
"""

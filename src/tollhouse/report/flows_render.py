"""Flows side by side as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable, Sequence

from tollhouse.metering.costs import usd
from tollhouse.report.flows import NOTES, FlowRow
from tollhouse.report.render import plain

FIELDS = (
    "tenant",
    "flow",
    "api",
    "requests",
    "errors",
    "first_byte_p50_ms",
    "first_byte_p95_ms",
    "last_byte_p50_ms",
    "last_byte_p95_ms",
    "units",
    "completed",
    "input_tokens",
    "output_tokens",
    "tool_calls",
    "cost_usd",
    "cost_per_completed_usd",
    "unpriced_tokens",
)


def fields(row: FlowRow) -> dict[str, str | int | None]:
    per_unit = row.cost_per_completed
    return {
        "tenant": row.tenant,
        "flow": row.flow,
        "api": row.api,
        "requests": row.requests,
        "errors": row.errors,
        "first_byte_p50_ms": row.first_byte_p50_ms,
        "first_byte_p95_ms": row.first_byte_p95_ms,
        "last_byte_p50_ms": row.last_byte_p50_ms,
        "last_byte_p95_ms": row.last_byte_p95_ms,
        "units": row.units,
        "completed": row.completed,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "tool_calls": row.tool_calls,
        "cost_usd": plain(row.cost),
        "cost_per_completed_usd": None if per_unit is None else plain(per_unit),
        "unpriced_tokens": row.unpriced_tokens,
    }


def render_json(rows: Sequence[FlowRow]) -> str:
    return json.dumps({"flows": [fields(r) for r in rows], "notes": list(NOTES)}, indent=2) + "\n"


def render_csv(rows: Sequence[FlowRow]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(fields(row))
    return out.getvalue()


def _ms(p50: int | None, p95: int | None) -> str:
    return "-" if p50 is None else f"{p50}/{p95}"


def render_table(rows: Sequence[FlowRow]) -> str:
    header = (
        "TENANT", "FLOW", "API", "REQUESTS", "FIRST BYTE ms p50/p95", "LAST BYTE ms p50/p95",
        "COMPLETED/UNITS", "TOKENS IN/OUT", "TOOL CALLS", "COST/COMPLETED",
    )  # fmt: skip
    lines = [header]
    for r in rows:
        per_unit = r.cost_per_completed
        lines.append(
            (
                r.tenant, r.flow, r.api, f"{r.requests} ({r.errors} failed)",
                _ms(r.first_byte_p50_ms, r.first_byte_p95_ms),
                _ms(r.last_byte_p50_ms, r.last_byte_p95_ms),
                f"{r.completed}/{r.units}", f"{r.input_tokens:,}/{r.output_tokens:,}",
                str(r.tool_calls), "-" if per_unit is None else usd(per_unit),
            )
        )  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
            for line in lines]  # fmt: skip
    if not rows:
        text.append("No flow-tagged requests in the period.")
    text += ["", "Notes:"]
    for note in NOTES:
        text += textwrap.wrap(note, 96, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(text) + "\n"


RENDERERS: dict[str, Callable[[Sequence[FlowRow]], str]] = {
    "table": render_table,
    "csv": render_csv,
    "json": render_json,
}

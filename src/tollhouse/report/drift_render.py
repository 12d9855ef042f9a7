"""A reconciliation as text: a table for people, JSON for scripts."""

from __future__ import annotations

import json
import math
from typing import Any

from tollhouse.report.drift import DOLLARS, Line, Reconciliation

FORMATS = ("table", "json")
NOT_METERED = "not metered"
HEADERS = ("measure", "model / item", "bill", "tollhouse", "difference", "ratio", "")


def _figure(value: float | None, measure: str) -> str:
    if value is None:
        return NOT_METERED
    if measure == DOLLARS:
        return f"{value:.6f}"
    return f"{value:.0f}" if value == int(value) else f"{value:g}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "-"
    return "inf" if math.isinf(value) else f"{value:.4f}"


def _verdict(line: Line, tolerance: float) -> str:
    if line.tollhouse is None:
        return ""
    return "DRIFT" if line.drifts(tolerance) else "ok"


def render_table(found: Reconciliation, tolerance: float) -> str:
    cells = [
        (
            line.measure,
            line.scope,
            _figure(line.bill, line.measure),
            _figure(line.tollhouse, line.measure),
            _figure(line.difference, line.measure) if line.difference is not None else "-",
            _ratio(line.ratio),
            _verdict(line, tolerance),
        )
        for line in found.lines
    ]
    widths = [max(len(row[i]) for row in [HEADERS, *cells]) for i in range(len(HEADERS))]
    text = [
        f"bill for {found.day.isoformat()} (UTC) against the ledger; tolerance {tolerance:g}; "
        f"difference = bill - tollhouse: usage that did not pass tollhouse (no tenant)",
        "",
    ]
    for row in [HEADERS, *cells]:
        text.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if found.tenants:
        text.append("")
        text.append(f"tollhouse's {found.currency} by tenant:")
        for tenant, dollars in sorted(found.tenants.items()):
            text.append(f"  {tenant}: {dollars:.6f}")
    return "\n".join(line.rstrip() for line in text) + "\n"


def _number(value: float | None) -> float | str | None:
    if value is not None and math.isinf(value):
        return "inf"
    return value


def render_json(found: Reconciliation, tolerance: float) -> str:
    lines: list[dict[str, Any]] = [
        {
            "measure": line.measure,
            "scope": line.scope,
            "bill": line.bill,
            "tollhouse": line.tollhouse,
            "metered": line.tollhouse is not None,
            "difference": line.difference,
            "ratio": _number(line.ratio),
            "drifts": line.drifts(tolerance),
        }
        for line in found.lines
    ]
    document = {
        "day": found.day.isoformat(),
        "currency": found.currency,
        "tolerance": tolerance,
        "lines": lines,
        "tenants": dict(sorted(found.tenants.items())),
    }
    return json.dumps(document, indent=2) + "\n"


RENDERERS = {"table": render_table, "json": render_json}

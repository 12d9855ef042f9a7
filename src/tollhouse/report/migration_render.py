"""The migration report as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from tollhouse.metering.costs import usd
from tollhouse.report.migration import Estimate, Migration, TenantMigration
from tollhouse.report.render import plain, utc_text

CSV_FIELDS = (
    "tenant",
    "assistants",
    "threads",
    "messages",
    "runs",
    "streamed_runs",
    "polled_runs",
    "polls",
    "requires_action_round_trips",
    "prompt_tokens",
    "completion_tokens",
    "cached_share",
    "responses",
    "code_interpreter_sessions",
    "file_search_calls",
    "assistants_cost_usd",
    "responses_cost_usd",
    "unused_objects",
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return plain(value)
    if isinstance(value, datetime):
        return utc_text(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _estimate(estimate: Estimate) -> dict[str, Any]:
    return {**asdict(estimate), "total": estimate.total}


def _tenant(tenant: TenantMigration) -> dict[str, Any]:
    shown = asdict(tenant)
    shown["assistants_cost"] = _estimate(tenant.assistants_cost)
    shown["responses_cost"] = _estimate(tenant.responses_cost)
    return shown


def render_json(migration: Migration) -> str:
    document = {
        "since": migration.since,
        "until": migration.until,
        "generated_at": migration.generated_at,
        "priced_on": migration.priced_on.isoformat(),
        "tenants": [_tenant(t) for t in migration.tenants],
        "assumptions": list(migration.assumptions),
    }
    return json.dumps(_jsonable(document), indent=2) + "\n"


def csv_row(tenant: TenantMigration) -> dict[str, str | int]:
    p = tenant.patterns
    return {
        "tenant": tenant.tenant,
        "assistants": len(tenant.assistants),
        "threads": p.threads,
        "messages": p.messages,
        "runs": p.runs,
        "streamed_runs": p.streamed_runs,
        "polled_runs": p.polled_runs,
        "polls": p.polls,
        "requires_action_round_trips": p.requires_action_round_trips,
        "prompt_tokens": tenant.prompt_tokens,
        "completion_tokens": tenant.completion_tokens,
        "cached_share": plain(tenant.cached_share),
        "responses": tenant.responses,
        "code_interpreter_sessions": tenant.code_interpreter_sessions,
        "file_search_calls": tenant.file_search_calls,
        "assistants_cost_usd": plain(tenant.assistants_cost.total),
        "responses_cost_usd": plain(tenant.responses_cost.total),
        "unused_objects": sum(tenant.unused.values()),
    }


def render_csv(migration: Migration) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for tenant in migration.tenants:
        writer.writerow(csv_row(tenant))
    return out.getvalue()


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 120:
        return f"{value:.0f} s"
    if value < 7200:
        return f"{value / 60:.0f} min"
    return f"{value / 3600:.1f} h"


def _cost_line(name: str, estimate: Estimate, units: str) -> str:
    line = (
        f"    {name:<11}{usd(estimate.total):>12}  = tokens {usd(estimate.tokens)}, "
        f"{units} {usd(estimate.code_interpreter)}, file search {usd(estimate.file_search)}"
    )
    if estimate.unpriced_tokens:
        line += f" (+{estimate.unpriced_tokens:,} unpriced tokens)"
    return line


def _assistant_lines(tenant: TenantMigration) -> list[str]:
    lines = ["  assistants in use:"]
    if not tenant.assistants:
        lines.append("    none")
    for a in tenant.assistants:
        size = "?" if a.instructions_chars is None else f"{a.instructions_chars:,}"
        lines.append(
            f"    {a.id}  {a.model or '?'}  instructions {size} chars  {a.runs} runs "
            f"({a.runs_per_day:.2f}/day)  last used {utc_text(a.last_used)}"
        )
        lines.append(f"      on Responses: {a.equivalent}")
    return lines


def _tenant_lines(tenant: TenantMigration) -> list[str]:
    p = tenant.patterns
    unused = ", ".join(f"{kind} {n}" for kind, n in sorted(tenant.unused.items())) or "none"
    return [
        tenant.tenant,
        *_assistant_lines(tenant),
        f"  threads: {p.threads}, messages {p.messages} ({p.messages_per_thread:.1f}/thread), "
        f"runs {p.runs} ({p.runs_per_thread:.1f}/thread); lifetime median "
        f"{_seconds(p.lifetime_median_seconds)}, idle median {_seconds(p.idle_median_seconds)}",
        f"  runs followed: {p.streamed_runs} streamed, {p.polled_runs} polled ({p.polls} polls), "
        f"{p.requires_action_round_trips} requires_action round trips",
        f"  usage: {tenant.prompt_tokens:,} prompt + {tenant.completion_tokens:,} completion "
        f"tokens, {tenant.code_interpreter_sessions} Code Interpreter sessions, "
        f"{tenant.file_search_calls} file-search calls",
        f"  already on Responses: {tenant.responses} responses, "
        f"{tenant.cached_share:.1%} of their input tokens cached",
        "  cost:",
        _cost_line("Assistants", tenant.assistants_cost, "code interpreter"),
        _cost_line("Responses", tenant.responses_cost, f"{tenant.containers} containers"),
        f"  unused for their cleanup TTL (need no migrating): {unused}",
        "",
    ]


def render_table(migration: Migration) -> str:
    lines = [
        f"Migration to Responses: {utc_text(migration.since)} to {utc_text(migration.until)}, "
        f"Responses priced as of {migration.priced_on.isoformat()}",
        "",
    ]
    if not migration.tenants:
        lines += ["No Assistants work in the period.", ""]
    for tenant in migration.tenants:
        lines += _tenant_lines(tenant)
    lines.append("Assumptions:")
    for note in migration.assumptions:
        lines += textwrap.wrap(note, 96, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Migration], str]] = {
    "table": render_table,
    "csv": render_csv,
    "json": render_json,
}

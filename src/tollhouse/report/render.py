"""A report as a table, CSV or JSON."""

from __future__ import annotations

import csv
import io
import json
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal

from tollhouse.metering.costs import usd
from tollhouse.report.build import GroupBy, Report, Row, Unpriced

NOTES = (
    "Period: from --since (included) to --until (excluded), UTC, to the second. Tenants "
    "with no usage in the period are not listed.",
    "Runs: a run counts once it is terminal (completed, failed, cancelled, expired, "
    "incomplete) with its usage recorded, in the period and on the UTC day of its finish "
    "time (its creation time when the API gave none); runs the upstream no longer had when "
    "looked up have no usage and are not counted. Tokens are priced at the model's prices "
    "on that day, all prompt tokens at the full input rate.",
    "Unpriced usage: runs of a model the pricing table has no price for on their day count "
    "in runs and tokens but add nothing to any cost; they are listed under 'Unpriced "
    "usage', never priced at zero. Rows with such usage are marked *.",
    "Code Interpreter: a session counts in the period and on the day it starts (a thread's "
    "first call, covering that thread's calls for the next hour).",
    "File Search: calls count by the time of the run step that made them, priced at the "
    "table's Assistants per-call price (none in the shipped table); the count is always shown.",
    "Storage: a vector store's sampled usage_bytes holds until its next sample, and the last "
    "sample before the period carries into it. A store ends at its recorded deletion or at "
    "the first later sampling round that no longer listed it. Usage is integrated into "
    "GB-days (1 GB = 2^30 bytes) per UTC day, up to the end of the period or the time of the "
    "report, whichever is earlier; nothing is projected.",
    "Storage sharing: each day, every tenant's average usage_bytes is summed into one "
    "organisation total; the free GB is subtracted once and the remaining cost is shared "
    "between tenants in proportion to their bytes. A day only partly in the period is "
    "charged for that part: its price and free GB are pro rata to the share of the day "
    "covered. With --tenant the sharing still spans all tenants. '_unowned' holds stores "
    "created outside tollhouse.",
    "Responses: a response counts once it is terminal (completed, failed, cancelled, "
    "incomplete) with its usage recorded, on the UTC day it finished, however often it was "
    "polled, streamed, resumed or retrieved. Cached input tokens are priced at the model's "
    "cached rate and cache writes at its cache-write rate (the input rate where the table has "
    "none); reasoning tokens are part of the output tokens. A service tier other than "
    "default/auto multiplies the model's prices (flex, priority); a tier the table does not "
    "price for the model leaves the tokens unpriced. Chat completions are priced the same "
    "way, on the day they were created; one streamed without include_usage counts with no "
    "tokens.",
    "Responses tool calls: one output item is one call, counted once by its id, on its "
    "response's day. Web search is priced per call by the tool version the request declared "
    "and the response's model; file search at the Responses per-call price (in the File "
    "Search columns); image generation and other kinds by their table entry, else listed as "
    "unpriced. Their tokens are in the response's tokens.",
    "Containers: a container counts on the day it was created and lives until it expires "
    "(its expires_after minutes, 20 by default, after its last activity) or the end of the "
    "report, whichever is earlier; it is priced by its memory limit with the billing in "
    "effect that day (20-minute sessions, or per minute with a minimum). A response's "
    "'container: auto' Code Interpreter counts as a container even when no call ran. "
    "Container sessions are the 20-minute blocks, or one per container under per-minute "
    "billing.",
    "Groups: by api, usage is split into assistants, responses, chat.completions and (storage).",
    "Groups: by model, Code Interpreter, File Search and storage (not per model) are in "
    "'(tools and storage)'; by assistant, tool use follows its run's assistant (a Code "
    "Interpreter session: the run of its first call), '(unknown)' when that run was not "
    "seen, and storage is in '(storage)'; by day, everything is by UTC day.",
    "Money: exact decimals in CSV and JSON; the table rounds to 4 places, and its totals "
    "are sums of the exact amounts.",
)
FORMATS = ("table", "csv", "json")
_MONEY = (
    "token_cost",
    "code_interpreter_cost",
    "file_search_cost",
    "storage_cost",
    "web_search_cost",
    "other_tool_cost",
    "container_cost",
)


def parse_moment(text: str) -> datetime:
    """An ISO date or datetime, in UTC when it has no zone, to the second."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def plain(value: Decimal) -> str:
    """A decimal with no exponent and no trailing zeros, for machines."""
    return format(value.normalize(), "f") if value else "0"


def row_fields(row: Row) -> dict[str, str | int | bool | None]:
    """A row's usage and cost for CSV and JSON; money and GB-days as exact decimal strings."""
    return {
        "tenant": row.tenant,
        "group": row.group,
        "runs": row.runs,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "token_cost": plain(row.token_cost),
        "code_interpreter_sessions": row.code_interpreter_sessions,
        "code_interpreter_cost": plain(row.code_interpreter_cost),
        "file_search_calls": row.file_search_calls,
        "file_search_cost": plain(row.file_search_cost),
        "storage_gb_days": plain(row.storage_gb_days),
        "storage_cost": plain(row.storage_cost),
        "responses": row.responses,
        "chat_completions": row.chat_completions,
        "cached_tokens": row.cached_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "web_search_calls": row.web_search_calls,
        "web_search_cost": plain(row.web_search_cost),
        "image_generation_calls": row.image_generation_calls,
        "other_tool_calls": row.other_tool_calls,
        "other_tool_cost": plain(row.other_tool_cost),
        "container_sessions": row.container_sessions,
        "container_sessions_1g": row.container_sessions_1g,
        "container_sessions_4g": row.container_sessions_4g,
        "container_sessions_16g": row.container_sessions_16g,
        "container_sessions_64g": row.container_sessions_64g,
        "container_active_seconds": row.container_active_seconds,
        "container_cost": plain(row.container_cost),
        "total_cost": plain(row.total_cost),
        "has_unpriced_usage": row.has_unpriced_usage,
    }


def _unpriced_fields(line: Unpriced) -> dict[str, str | int]:
    named: dict[str, str | int] = {"tenant": line.tenant, "kind": line.kind, "name": line.name}
    if line.kind == "model":
        counts = {"runs": line.runs, "responses": line.responses}
        counts["chat_completions"] = line.chat_completions
        return named | {
            **{name: count for name, count in counts.items() if count or name == "runs"},
            "input_tokens": line.input_tokens,
            "output_tokens": line.output_tokens,
        }
    return named | {"quantity": plain(line.quantity), "unit": line.unit}


def render_json(report: Report) -> str:
    totals = row_fields(report.totals)
    del totals["tenant"], totals["group"]
    document = {
        "period": {
            "since": report.since.isoformat(),
            "until": report.until.isoformat(),
            "generated_at": report.generated_at.isoformat(),
        },
        "group_by": report.group_by,
        "tenant": report.tenant,
        "pricing": report.pricing_source,
        "rows": [row_fields(row) for row in report.rows],
        "totals": totals,
        "unpriced": [_unpriced_fields(line) for line in report.unpriced],
        "notes": list(NOTES),
    }
    return json.dumps(document, indent=2) + "\n"


def render_csv(report: Report) -> str:
    """One row per tenant (and group), then TOTAL; unpriced usage is flagged per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(list(row_fields(report.totals)))
    for row in (*report.rows, report.totals):
        values = row_fields(row)
        writer.writerow(
            "" if value is None else str(value).lower() if isinstance(value, bool) else value
            for value in values.values()
        )
    return out.getvalue()


def utc_text(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


_Column = tuple[str, Callable[[Row], str]]


def _container_tiers(row: Row) -> str:
    """Container sessions by memory limit, e.g. ``2x1g+1x4g``; the total when none is known."""
    tiers = [
        (size, getattr(row, f"container_sessions_{size}")) for size in ("1g", "4g", "16g", "64g")
    ]
    shown = "+".join(f"{count:,}x{size}" for size, count in tiers if count)
    rest = row.container_sessions - sum(count for _, count in tiers)
    return "+".join(part for part in (shown, f"{rest:,}x?" if rest else "") if part) or "0"


def _columns(group_by: GroupBy | None) -> list[_Column]:
    columns: list[_Column] = [("tenant", lambda r: r.tenant)]
    if group_by is not None:
        columns.append((group_by, lambda r: r.group or ""))
    return [
        *columns,
        ("runs", lambda r: f"{r.runs:,}"),
        ("input tokens", lambda r: f"{r.input_tokens:,}"),
        ("cached", lambda r: f"{r.cached_tokens:,}"),
        ("output tokens", lambda r: f"{r.output_tokens:,}"),
        ("reasoning", lambda r: f"{r.reasoning_tokens:,}"),
        ("token cost", lambda r: usd(r.token_cost)),
        ("responses", lambda r: f"{r.responses:,}"),
        ("chats", lambda r: f"{r.chat_completions:,}"),
        ("CI sessions", lambda r: f"{r.code_interpreter_sessions:,}"),
        ("CI cost", lambda r: usd(r.code_interpreter_cost)),
        ("FS calls", lambda r: f"{r.file_search_calls:,}"),
        ("FS cost", lambda r: usd(r.file_search_cost)),
        ("WS calls", lambda r: f"{r.web_search_calls:,}"),
        ("WS cost", lambda r: usd(r.web_search_cost)),
        ("other calls", lambda r: f"{r.image_generation_calls + r.other_tool_calls:,}"),
        ("calls cost", lambda r: usd(r.other_tool_cost)),
        ("containers", _container_tiers),
        ("container min", lambda r: f"{r.container_active_seconds / 60:,.1f}"),
        ("container cost", lambda r: usd(r.container_cost)),
        ("GB-days", lambda r: f"{r.storage_gb_days:,.4f}"),
        ("storage cost", lambda r: usd(r.storage_cost)),
        ("total", lambda r: usd(r.total_cost) + ("*" if r.has_unpriced_usage else " ")),
    ]


def _unpriced_line(line: Unpriced) -> str:
    if line.kind == "model":
        counts = [
            f"{name} {count:,}"
            for name, count in (
                ("runs", line.runs),
                ("responses", line.responses),
                ("chat completions", line.chat_completions),
            )
            if count or name == "runs"
        ]
        usage = ", ".join(
            [
                *counts,
                f"input tokens {line.input_tokens:,}",
                f"output tokens {line.output_tokens:,}",
            ]
        )
    else:
        usage = f"{line.quantity:,} {line.unit}"
    return f"  {line.tenant}: {line.kind} {line.name}: {usage}"


def render_table(report: Report) -> str:
    columns = _columns(report.group_by)
    cells = [[get(row) for _, get in columns] for row in (*report.rows, report.totals)]
    widths = [max(len(name), *(len(c[i]) for c in cells)) for i, (name, _) in enumerate(columns)]
    text_columns = 2 if report.group_by else 1

    def line(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if i < text_columns else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "-" * len(line(["-" * w for w in widths]))
    grouping = f", by {report.group_by}" if report.group_by else ""
    lines = [
        f"tollhouse report: {utc_text(report.since)} to {utc_text(report.until)} "
        f"(excluded){grouping}",
        f"tenant: {report.tenant or 'all'}; prices: {report.pricing_source}; "
        f"as of {utc_text(report.generated_at)}",
        "",
        line([name for name, _ in columns]),
        rule,
        *(line(values) for values in cells[:-1]),
        rule,
        line(cells[-1]),
    ]
    if report.unpriced:
        lines += ["", "Unpriced usage (counted above, in no cost):"]
        lines += [_unpriced_line(u) for u in report.unpriced]
    lines += ["", "Notes:"]
    lines += [textwrap.fill(n, 100, initial_indent="- ", subsequent_indent="  ") for n in NOTES]
    return "\n".join(lines) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {
    "table": render_table,
    "csv": render_csv,
    "json": render_json,
}

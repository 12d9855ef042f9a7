"""The report's Responses-era usage on real SQLite and real PostgreSQL: tokens by kind and
service tier, tool calls by kind and version, containers by memory limit and active time,
chat completions, and grouping by API. Expected costs are the table's prices written out."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine

from tollhouse.ledger import store as ledger
from tollhouse.ledger.store import Batch, Seen
from tollhouse.metering.meter import RunSeen, Usage
from tollhouse.metering.pricing import PricingTable, load_pricing
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    TokenUsage,
    ToolItemSeen,
    auto_containers,
)
from tollhouse.report.build import TOTAL, GroupBy, Report, Row, build_report
from tollhouse.report.render import render_csv, render_json, render_table

MAY1 = 1_777_593_600  # 2026-05-01T00:00:00Z: containers in 20-minute sessions
JUN10 = 1_781_049_600  # 2026-06-10T00:00:00Z: containers per minute, 5 at least
SINCE, UNTIL = datetime(2026, 5, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
MILLION = Decimal(1_000_000)


@pytest.fixture(scope="module")
def pricing() -> PricingTable:
    return load_pricing()


def usage(input_tokens: int, cached: int, output: int, reasoning: int = 0) -> TokenUsage:
    return TokenUsage(input_tokens, cached, 0, output, reasoning, input_tokens + output)


def response(response_id: str, model: str, used: TokenUsage, **extra: Any) -> ResponseSeen:
    fields: dict[str, Any] = {
        "id": response_id,
        "model": model,
        "status": "completed",
        "created_at": JUN10,
        "finished_at": JUN10 + 10,
        "service_tier": "default",
        "usage": used,
        "conversation_id": None,
        "previous_response_id": None,
        "background": False,
    }
    fields.update(extra)
    return ResponseSeen(**fields)


def call(item_id: str, kind: str, response_id: str, tool: str | None = None) -> ToolItemSeen:
    return ToolItemSeen(item_id, kind, response_id, "completed", tool=tool)


def record(engine: Engine, tenant: str, *seen: Any) -> None:
    ledger.apply(engine, Batch(seen=[Seen(tenant, s) for s in seen]), JUN10 + 60)


def report(
    engine: Engine, pricing: PricingTable, group_by: GroupBy | None = None, tenant: str = "acme"
) -> Report:
    return build_report(engine, pricing, SINCE, UNTIL, UNTIL, group_by=group_by, tenant=tenant)


def only_row(result: Report) -> Row:
    [row] = result.rows
    return row


def test_service_tiers_multiply_the_prices(engine: Engine, pricing: PricingTable) -> None:
    used = usage(2000, 1024, 500, reasoning=200)
    record(engine, "acme", response("resp_p", "gpt-4o", used, service_tier="priority"))
    record(engine, "acme", response("resp_f", "o3", used, service_tier="flex"))
    row = only_row(report(engine, pricing))
    gpt_4o = (976 * Decimal("2.50") + 1024 * Decimal("1.25") + 500 * Decimal("10")) / MILLION
    o3 = (976 * Decimal("2.00") + 1024 * Decimal("0.50") + 500 * Decimal("8")) / MILLION
    assert row.token_cost == gpt_4o * Decimal("1.7") + o3 * Decimal("0.5")
    assert (row.responses, row.cached_tokens, row.reasoning_tokens) == (2, 2048, 400)


def test_unknown_models_and_tiers_stay_unpriced_and_visible(
    engine: Engine, pricing: PricingTable
) -> None:
    used = usage(100, 0, 10)
    record(engine, "acme", response("resp_h", "house-model", used))
    record(engine, "acme", response("resp_s", "gpt-4o", used, service_tier="scale"))
    result = report(engine, pricing)
    row = only_row(result)
    assert (row.responses, row.input_tokens, row.token_cost) == (2, 200, Decimal(0))
    assert row.has_unpriced_usage
    assert sorted((u.name, u.responses) for u in result.unpriced) == [
        ("gpt-4o (scale tier)", 1),
        ("house-model", 1),
    ]
    assert "responses 1" in render_table(result)


def test_tool_calls_are_priced_by_kind_version_and_model(
    engine: Engine, pricing: PricingTable
) -> None:
    record(
        engine,
        "acme",
        response("resp_1", "gpt-4o", usage(10, 0, 1)),
        call("ws_1", "web_search_call", "resp_1", "web_search"),
        call("ws_2", "web_search_call", "resp_1", "web_search_preview"),
        call("fs_1", "file_search_call", "resp_1"),
        call("fn_1", "function_call", "resp_1"),
        call("ig_1", "image_generation_call", "resp_1"),
        response("resp_2", "house-model", usage(10, 0, 1)),
        call("ws_3", "web_search_call", "resp_2", "web_search_preview"),
    )
    result = report(engine, pricing)
    row = only_row(result)
    assert (row.web_search_calls, row.file_search_calls) == (3, 1)
    assert (row.image_generation_calls, row.other_tool_calls) == (1, 1)
    assert row.web_search_cost == Decimal("10") / 1000 + Decimal("25") / 1000
    assert row.file_search_cost == Decimal("2.50") / 1000
    assert row.other_tool_cost == Decimal(0)
    assert sorted((u.name, u.quantity) for u in result.unpriced if u.kind == "tool") == [
        ("image_generation_call on gpt-4o", Decimal(1)),
        ("web_search_call web_search_preview on house-model", Decimal(1)),
    ]


def test_containers_by_memory_limit_and_active_time(engine: Engine, pricing: PricingTable) -> None:
    record(
        engine,
        "acme",
        # 20-minute sessions: 25 minutes of use and 20 idle are 45 minutes, 3 sessions
        ContainerSeen("cntr_old", "active", MAY1, MAY1 + 25 * 60, "4g", 20),
        # per minute: 100 s of use and 5 idle minutes are 400 s, 7 started minutes
        ContainerSeen("cntr_new", "active", JUN10, JUN10 + 100, "1g", 5),
        ContainerSeen("cntr_new", "expired", JUN10, JUN10 + 40, "1g", 5),  # an older sighting
    )
    done = response("resp_a", "gpt-4o", usage(10, 0, 1), auto_container="16g")
    record(engine, "acme", done, *auto_containers([done]))  # no call ran: 20 minutes
    row = only_row(report(engine, pricing))
    assert (row.container_sessions_4g, row.container_sessions_1g, row.container_sessions_16g) == (
        3,
        1,
        1,
    )
    assert row.container_sessions == 5
    assert row.container_active_seconds == 45 * 60 + 400 + (10 + 20 * 60)
    expected = 3 * Decimal("0.12") + 7 * Decimal("0.0015") + 21 * Decimal("0.024")
    assert row.container_cost == expected
    table = render_table(report(engine, pricing))
    assert "1x1g+3x4g+1x16g" in table


def test_chat_completions_count_with_or_without_usage(
    engine: Engine, pricing: PricingTable
) -> None:
    record(
        engine,
        "acme",
        ChatCompletionSeen("chat_1", "gpt-4o-mini", JUN10, None, usage(1000, 0, 100)),
        ChatCompletionSeen("chat_2", "gpt-4o-mini", JUN10, None, None),
    )
    row = only_row(report(engine, pricing))
    assert (row.chat_completions, row.input_tokens, row.output_tokens) == (2, 1000, 100)
    assert row.token_cost == (1000 * Decimal("0.15") + 100 * Decimal("0.60")) / MILLION


def test_group_by_api_and_the_new_columns(engine: Engine, pricing: PricingTable) -> None:
    run = RunSeen(
        "run_1", "thread_1", "asst_1", "gpt-4o", "completed", JUN10, JUN10 + 5,
        Usage(100, 10, 110), False, False,
    )  # fmt: skip
    record(engine, "acme", run)
    record(engine, "acme", response("resp_1", "gpt-4o", usage(200, 0, 20)))
    record(engine, "acme", ChatCompletionSeen("chat_1", "gpt-4o", JUN10, None, usage(50, 0, 5)))
    result = report(engine, pricing, group_by="api")
    groups = {row.group or "": row for row in result.rows}
    assert sorted(groups) == ["assistants", "chat.completions", "responses"]
    assert (groups["assistants"].runs, groups["responses"].responses) == (1, 1)
    assert groups["chat.completions"].chat_completions == 1
    header = next(csv.reader(io.StringIO(render_csv(result))))
    for column in (
        "cached_tokens",
        "reasoning_tokens",
        "web_search_calls",
        "container_sessions_4g",
    ):
        assert column in header
    document = json.loads(render_json(result))
    assert document["group_by"] == "api"
    assert document["totals"]["responses"] == 1
    assert result.totals.tenant == TOTAL
    assert result.totals.input_tokens == 350

"""The pricing table: what it holds, how names and dates resolve, and the cost arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from importlib.resources import files
from pathlib import Path

import pytest
from pydantic import ValidationError

from tollhouse.metering.costs import (
    GIB,
    container_cost,
    container_sessions,
    gb_days,
    storage_costs,
    token_cost,
    tool_call_cost,
    usd,
)
from tollhouse.metering.pricing import PricingError, PricingTable, load_pricing

BAD = sorted((Path(__file__).parent / "pricing" / "bad").glob("*.yaml"))
DAY = 86400.0
D = Decimal


@pytest.fixture(scope="module")
def table() -> PricingTable:
    return load_pricing()


def expected_message(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must say what it expects"
    return first.removeprefix("# expect: ")


# (model, day, (input, cached_input, output) or None for unpriced)
PRICES: list[tuple[str, str, tuple[str, str | None, str] | None]] = [
    # gpt-4o family: the alias moved from the 05-13 snapshot to 08-06 on 2024-10-02
    ("gpt-4o-2024-05-13", "2024-05-12", None),
    ("gpt-4o-2024-05-13", "2024-05-13", ("5.00", None, "15.00")),
    ("gpt-4o-2024-05-13", "2025-06-01", ("5.00", None, "15.00")),
    ("gpt-4o", "2024-05-12", None),
    ("gpt-4o", "2024-05-13", ("5.00", None, "15.00")),
    ("gpt-4o", "2024-10-01", ("5.00", None, "15.00")),
    ("gpt-4o", "2024-10-02", ("2.50", "1.25", "10.00")),
    ("gpt-4o-2024-08-06", "2024-08-05", None),
    ("gpt-4o-2024-08-06", "2024-08-06", ("2.50", None, "10.00")),
    ("gpt-4o-2024-08-06", "2024-09-30", ("2.50", None, "10.00")),
    ("gpt-4o-2024-08-06", "2024-10-01", ("2.50", "1.25", "10.00")),
    ("gpt-4o-2024-11-20", "2024-11-19", None),
    ("gpt-4o-2024-11-20", "2024-11-20", ("2.50", "1.25", "10.00")),
    ("gpt-4o-mini", "2024-07-17", None),
    ("gpt-4o-mini", "2024-07-18", ("0.15", None, "0.60")),
    ("gpt-4o-mini", "2024-10-01", ("0.15", "0.075", "0.60")),
    ("gpt-4o-mini-2024-07-18", "2024-10-01", ("0.15", "0.075", "0.60")),
    # gpt-4-turbo, gpt-4, gpt-3.5-turbo
    ("gpt-4-turbo", "2023-11-05", None),
    ("gpt-4-turbo", "2023-11-06", ("10.00", None, "30.00")),
    ("gpt-4-turbo-2024-04-09", "2025-01-01", ("10.00", None, "30.00")),
    ("gpt-4-0125-preview", "2025-01-01", ("10.00", None, "30.00")),
    ("gpt-4-1106-preview", "2023-11-06", ("10.00", None, "30.00")),
    ("gpt-4", "2023-03-13", None),
    ("gpt-4", "2023-03-14", ("30.00", None, "60.00")),
    ("gpt-4-0613", "2025-01-01", ("30.00", None, "60.00")),
    ("gpt-4-0314", "2025-01-01", ("30.00", None, "60.00")),
    ("gpt-4-32k", "2025-01-01", ("60.00", None, "120.00")),
    ("gpt-3.5-turbo", "2024-01-24", None),
    ("gpt-3.5-turbo", "2024-01-25", ("0.50", None, "1.50")),
    ("gpt-3.5-turbo-0125", "2024-01-25", ("0.50", None, "1.50")),
    ("gpt-3.5-turbo-1106", "2023-11-05", None),
    ("gpt-3.5-turbo-1106", "2023-11-06", ("1.00", None, "2.00")),
    ("gpt-3.5-turbo-0613", "2023-06-13", ("1.50", None, "2.00")),
    # gpt-4.1 family
    ("gpt-4.1", "2025-04-13", None),
    ("gpt-4.1", "2025-04-14", ("2.00", "0.50", "8.00")),
    ("gpt-4.1-2025-04-14", "2025-04-14", ("2.00", "0.50", "8.00")),
    ("gpt-4.1-mini", "2025-04-14", ("0.40", "0.10", "1.60")),
    ("gpt-4.1-mini-2025-04-14", "2025-04-14", ("0.40", "0.10", "1.60")),
    ("gpt-4.1-nano", "2025-04-14", ("0.10", "0.025", "0.40")),
    ("gpt-4.1-nano-2025-04-14", "2025-04-14", ("0.10", "0.025", "0.40")),
    # o-series
    ("o1", "2024-12-16", None),
    ("o1", "2024-12-17", ("15.00", "7.50", "60.00")),
    ("o1-2024-12-17", "2024-12-17", ("15.00", "7.50", "60.00")),
    ("o1-preview", "2024-09-11", None),
    ("o1-preview", "2024-09-12", ("15.00", None, "60.00")),
    ("o1-preview", "2024-10-01", ("15.00", "7.50", "60.00")),
    ("o1-mini", "2024-09-11", None),
    ("o1-mini", "2024-09-12", ("3.00", None, "12.00")),
    ("o1-mini", "2024-10-01", ("3.00", "1.50", "12.00")),
    ("o1-mini", "2025-01-30", ("3.00", "1.50", "12.00")),
    ("o1-mini", "2025-01-31", ("1.10", "0.55", "4.40")),
    ("o1-mini-2024-09-12", "2025-01-31", ("1.10", "0.55", "4.40")),
    ("o3-mini", "2025-01-30", None),
    ("o3-mini", "2025-01-31", ("1.10", "0.55", "4.40")),
    ("o3-mini-2025-01-31", "2025-01-31", ("1.10", "0.55", "4.40")),
    ("o3", "2025-04-15", None),
    ("o3", "2025-04-16", ("10.00", "2.50", "40.00")),
    ("o3", "2025-06-09", ("10.00", "2.50", "40.00")),
    ("o3", "2025-06-10", ("2.00", "0.50", "8.00")),
    ("o3-2025-04-16", "2025-06-10", ("2.00", "0.50", "8.00")),
    ("o4-mini", "2025-04-15", None),
    ("o4-mini", "2025-04-16", ("1.10", "0.275", "4.40")),
    ("o4-mini-2025-04-16", "2025-04-16", ("1.10", "0.275", "4.40")),
    # gpt-5 family
    ("gpt-5", "2025-08-06", None),
    ("gpt-5", "2025-08-07", ("1.25", "0.125", "10.00")),
    ("gpt-5-2025-08-07", "2025-08-07", ("1.25", "0.125", "10.00")),
    ("gpt-5-mini", "2025-08-07", ("0.25", "0.025", "2.00")),
    ("gpt-5-mini-2025-08-07", "2025-08-07", ("0.25", "0.025", "2.00")),
    ("gpt-5-nano", "2025-08-07", ("0.05", "0.005", "0.40")),
    ("gpt-5-nano-2025-08-07", "2025-08-07", ("0.05", "0.005", "0.40")),
    ("gpt-5-pro", "2025-10-06", ("15.00", None, "120.00")),
    # gpt-5.x successors
    ("gpt-5.1", "2025-11-12", None),
    ("gpt-5.1", "2025-11-13", ("1.25", "0.125", "10.00")),
    ("gpt-5.1-2025-11-13", "2025-11-13", ("1.25", "0.125", "10.00")),
    ("gpt-5.2", "2025-12-11", ("1.75", "0.175", "14.00")),
    ("gpt-5.2-2025-12-11", "2025-12-11", ("1.75", "0.175", "14.00")),
    ("gpt-5.2-pro", "2026-01-01", ("21.00", None, "168.00")),
    ("gpt-5.3-codex", "2026-02-10", ("1.75", "0.175", "14.00")),
    ("gpt-5.3-chat-latest", "2026-02-10", ("1.75", "0.175", "14.00")),
    ("gpt-5.4", "2026-03-04", None),
    ("gpt-5.4", "2026-03-05", ("2.50", "0.25", "15.00")),
    ("gpt-5.4-2026-03-05", "2026-03-05", ("2.50", "0.25", "15.00")),
    ("gpt-5.4-mini", "2026-03-16", None),
    ("gpt-5.4-mini", "2026-03-17", ("0.75", "0.075", "4.50")),
    ("gpt-5.4-mini-2026-03-17", "2026-03-17", ("0.75", "0.075", "4.50")),
    ("gpt-5.4-nano", "2026-03-17", ("0.20", "0.02", "1.25")),
    ("gpt-5.4-nano-2026-03-17", "2026-03-17", ("0.20", "0.02", "1.25")),
    ("gpt-5.4-pro", "2026-03-05", ("30.00", None, "180.00")),
    ("gpt-5.5", "2026-04-22", None),
    ("gpt-5.5", "2026-04-23", ("5.00", "0.50", "30.00")),
    ("gpt-5.5-2026-04-23", "2026-04-23", ("5.00", "0.50", "30.00")),
    ("gpt-5.5-pro", "2026-04-23", ("30.00", None, "180.00")),
    ("gpt-5.6-sol", "2026-06-25", None),
    ("gpt-5.6-sol", "2026-06-26", ("5.00", "0.50", "30.00")),
    ("gpt-5.6-sol", "2026-11-01", ("5.00", "0.50", "30.00")),
    ("gpt-5.6-terra", "2026-07-29", ("2.50", "0.25", "15.00")),
    ("gpt-5.6-terra", "2026-07-30", ("2.00", "0.20", "12.00")),
    ("gpt-5.6-luna", "2026-07-29", ("1.00", "0.10", "6.00")),
    ("gpt-5.6-luna", "2026-07-30", ("0.20", "0.02", "1.20")),
]


@pytest.mark.parametrize(
    ("model", "day", "expected"), PRICES, ids=[f"{m}@{d}" for m, d, _ in PRICES]
)
def test_model_resolves_to_the_price_in_effect_that_day(
    table: PricingTable, model: str, day: str, expected: tuple[str, str | None, str] | None
) -> None:
    price = table.token_price(model, date.fromisoformat(day))
    if expected is None:
        assert price is None
        return
    assert price is not None
    cached = None if expected[1] is None else D(expected[1])
    assert (price.input, price.cached_input, price.output) == (
        D(expected[0]),
        cached,
        D(expected[2]),
    )


def test_every_shipped_model_and_alias_is_checked_above(table: PricingTable) -> None:
    assert {model for model, _, _ in PRICES} == set(table.models) | set(table.aliases)


def test_shipped_table_names_a_known_source_for_every_price(table: PricingTable) -> None:
    priced = dict(table.priced())
    sample = ["models.gpt-4o.1", "tools.code_interpreter.0", "tools.file_search_calls.responses.0"]
    sample += ["tools.containers.64g.1", "tools.calls.mcp_call.0.periods.0"]
    sample += ["service_tiers.priority.2.periods.0"]
    assert set(sample) <= set(priced)  # every kind of price is covered
    unsourced = [
        w for w, p in priced.items() if not p.sources or set(p.sources) - set(table.sources)
    ]
    assert unsourced == []


def test_unconfirmed_prices_are_marked_and_explained(table: PricingTable) -> None:
    marked = {where: p.note for where, p in table.priced() if p.unconfirmed}
    assert set(marked) == {
        "models.gpt-3.5-turbo-0125.0",
        "models.o1-mini.2",
        "models.gpt-5.3-codex.0",
        "models.gpt-5.3-chat-latest.0",
        "service_tiers.priority.0.periods.0",  # "about" 1.7x, 1.75x, 2x
        "service_tiers.priority.1.periods.0",
        "service_tiers.priority.2.periods.0",
        "tools.calls.web_search_call.1.periods.0",  # the preview tool
        "tools.calls.web_search_call.2.periods.0",
        "tools.calls.mcp_call.0.periods.0",  # no source states the zero outright
        "tools.calls.mcp_list_tools.0.periods.0",
        "tools.containers.1g.0",  # per container or per 20-minute block
        "tools.containers.4g.0",  # single source for the start date
        "tools.containers.16g.0",
        "tools.containers.64g.0",
    }
    assert all(marked.values())


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4.5-preview",  # in the Assistants enum, but no sourced price
        "ft:gpt-4o-2024-08-06:acme::abc123",
        "gpt-4o-2024-05-14",  # no prefix matching onto gpt-4o
        "gpt-4o-mini-2099-01-01",
        "GPT-4O",
        "",
    ],
)
def test_unknown_model_is_unpriced_not_free(table: PricingTable, model: str) -> None:
    assert table.token_price(model, date(2026, 1, 1)) is None
    assert token_cost(table, model, 1000, 1000, date(2026, 1, 1)) is None


@pytest.mark.parametrize(
    ("model", "prompt", "completion", "day", "expected"),
    [
        ("gpt-4o", 1_000_000, 500_000, "2025-01-01", "7.50"),
        ("gpt-4o", 1_000_000, 500_000, "2024-09-01", "12.50"),  # alias still on 05-13
        ("gpt-4o-mini", 1000, 100, "2025-01-01", "0.00021"),
        ("o3", 1_000_000, 1_000_000, "2025-06-09", "50.00"),
        ("o3", 1_000_000, 1_000_000, "2025-06-10", "10.00"),
        ("gpt-5-nano", 1, 1, "2025-09-01", "0.00000045"),
        ("gpt-4.1", 0, 0, "2025-05-01", "0"),  # priced, and nothing used: zero, not None
        ("gpt-4.1", 1_000_000, 0, "2025-04-13", None),  # before the first price
        (None, 1_000_000, 0, "2025-05-01", None),  # run with no model
    ],
)
def test_token_cost_prices_all_prompt_tokens_at_the_full_input_rate(
    table: PricingTable,
    model: str | None,
    prompt: int,
    completion: int,
    day: str,
    expected: str | None,
) -> None:
    cost = token_cost(table, model, prompt, completion, date.fromisoformat(day))
    if expected is None:
        assert cost is None
    else:
        assert isinstance(cost, Decimal)
        assert cost == D(expected)


def test_negative_token_counts_are_refused(table: PricingTable) -> None:
    with pytest.raises(ValueError, match="negative"):
        token_cost(table, "gpt-4o", -1, 0, date(2025, 1, 1))


def test_tool_prices(table: PricingTable) -> None:
    day = date(2025, 6, 1)
    assert table.code_interpreter_session(day) == D("0.03")
    assert table.tools.code_interpreter[0].session_seconds == 3600
    assert table.storage_per_gb_day(day) == D("0.10")
    assert table.free_storage_bytes(day) == GIB
    assert table.file_search_call(day) == 0
    assert table.file_search_call(day, api="assistants") == 0
    assert table.file_search_call(day, api="responses") == D("0.0025")
    assistants = table.tools.file_search_calls.assistants[0]
    assert assistants.note
    assert "Responses" in assistants.note


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t: t.code_interpreter_session(date(2024, 4, 16)), "tools.code_interpreter"),
        (lambda t: t.storage_per_gb_day(date(2024, 4, 16)), "tools.file_search_storage"),
        (lambda t: t.file_search_call(date(2025, 3, 10), "responses"), "file_search_calls"),
        (lambda t: t.file_search_call(date(2025, 6, 1), "realtime"), "api 'realtime'"),
    ],
)
def test_tool_without_a_price_is_an_error_not_zero(
    table: PricingTable, call: Callable[[PricingTable], Decimal], message: str
) -> None:
    with pytest.raises(PricingError, match=message):
        call(table)


M = 1_000_000

# (model, tier, prompt, cached, cache-write, completion, day, expected cost or None)
TOKEN_COSTS: list[tuple[str, str | None, int, int, int, int, str, str | None]] = [
    # cached tokens are part of the prompt and cost the cached rate
    ("gpt-4o", None, M, 400_000, 0, 0, "2025-01-01", "2.00"),  # 0.6M x 2.50 + 0.4M x 1.25
    ("gpt-4o", "default", M, M, 0, M, "2025-01-01", "11.25"),
    ("gpt-4o", "auto", M, M, 0, M, "2025-01-01", "11.25"),
    ("gpt-4o-mini-2024-07-18", None, M, M, 0, 0, "2025-01-01", "0.075"),  # through an alias
    # no cached price yet, or ever: cached tokens cost the full input rate
    ("gpt-4o-2024-08-06", None, M, M, 0, 0, "2024-09-30", "2.50"),
    ("gpt-4o-2024-08-06", None, M, M, 0, 0, "2024-10-01", "1.25"),
    ("gpt-4o-2024-05-13", None, M, M, 0, 0, "2025-01-01", "5.00"),
    ("gpt-5-pro", None, M, M, 0, 0, "2025-09-01", "15.00"),
    # cache writes: 1.25x input on gpt-5.6, no surcharge where the table has no price
    ("gpt-5.6-sol", None, M, 0, M, 0, "2026-07-01", "6.25"),
    ("gpt-5.6-terra", None, M, 0, M, 0, "2026-07-29", "3.125"),
    ("gpt-5.6-terra", None, M, 0, M, 0, "2026-07-30", "2.50"),
    ("gpt-4.1", None, M, 0, M, 0, "2025-05-01", "2.00"),
    ("gpt-5.6-luna", None, 3 * M, M, M, M, "2026-08-01", "1.67"),  # 0.2 + 0.02 + 0.25 + 1.2
    # flex: half of every token price, across the model's own price change
    ("o3", "flex", M, 0, 0, M, "2025-06-09", "25.00"),
    ("o3", "flex", M, 0, 0, M, "2025-06-10", "5.00"),
    ("o3-2025-04-16", "flex", M, M, 0, 0, "2025-06-10", "0.25"),
    ("gpt-5", "flex", M, 0, 0, M, "2025-08-07", "5.625"),
    ("gpt-5", "flex", M, 0, 0, M, "2025-08-06", None),  # before gpt-5
    ("gpt-5.6-luna", "flex", M, 0, 0, M, "2026-07-30", "0.70"),
    ("gpt-4o", "flex", M, 0, 0, M, "2025-06-01", None),  # not a flex model
    ("o1", "flex", M, 0, 0, M, "2025-06-01", None),
    # priority: about 1.7x (gpt-4o), 1.75x (gpt-4.1), 2x (gpt-5.x)
    ("gpt-4o", "priority", M, 0, 0, M, "2025-06-01", "21.25"),
    ("gpt-4o", "priority", M, M, 0, 0, "2025-06-01", "2.125"),  # cached, then multiplied
    ("gpt-4o", "fast", M, 0, 0, M, "2025-06-01", "21.25"),  # requested as fast, billed priority
    ("gpt-4.1-2025-04-14", "priority", M, 0, 0, M, "2025-06-01", "17.50"),
    ("gpt-5", "priority", M, M // 2, 0, M, "2025-09-01", "21.375"),
    ("gpt-5.5", "priority", M, 0, 0, M, "2026-04-22", None),  # before gpt-5.5
    ("gpt-5.5", "priority", M, 0, 0, M, "2026-04-23", "70.00"),
    ("gpt-5-nano", "priority", M, 0, 0, M, "2025-09-01", None),  # the sources disagree
    ("gpt-4o-mini", "priority", M, 0, 0, M, "2025-09-01", None),
    ("gpt-5-pro", "priority", M, 0, 0, M, "2025-09-01", None),
    # scale and unknown tiers are unpriced, not guessed at the standard price
    ("gpt-4o", "scale", M, 0, 0, M, "2025-06-01", None),
    ("gpt-5.6-sol", "ultrafast", M, 0, 0, M, "2026-07-01", None),
    ("gpt-4o", "", M, 0, 0, M, "2025-06-01", None),
    ("gpt-4o", "Default", M, 0, 0, M, "2025-06-01", None),
    # unknown model, whatever the tier
    ("gpt-9", None, M, 0, 0, M, "2026-01-01", None),
    ("gpt-9", "flex", M, 0, 0, M, "2026-01-01", None),
]


@pytest.mark.parametrize(
    ("model", "tier", "prompt", "cached", "written", "completion", "day", "expected"),
    TOKEN_COSTS,
    ids=[f"{m}-{t}-{c}c-{w}w@{d}" for m, t, _, c, w, _, d, _ in TOKEN_COSTS],
)
def test_token_cost_by_cache_use_and_service_tier(
    table: PricingTable,
    model: str,
    tier: str | None,
    prompt: int,
    cached: int,
    written: int,
    completion: int,
    day: str,
    expected: str | None,
) -> None:
    cost = token_cost(
        table,
        model,
        prompt,
        completion,
        date.fromisoformat(day),
        cached_tokens=cached,
        cache_write_tokens=written,
        tier=tier,
    )
    assert cost == (None if expected is None else D(expected))


def test_reasoning_tokens_are_priced_as_the_output_they_are_part_of(table: PricingTable) -> None:
    # Responses usage: output_tokens 1,000 of which reasoning_tokens 800; only the total counts.
    assert token_cost(table, "o3", 0, 1000, date(2025, 7, 1)) == D("0.008")


@pytest.mark.parametrize(
    ("prompt", "cached", "written", "message"),
    [
        (100, 60, 41, "at most, the prompt"),
        (100, 101, 0, "at most, the prompt"),
        (100, -1, 0, "negative"),
        (100, 0, -1, "negative"),
    ],
)
def test_cache_counts_must_fit_in_the_prompt(
    table: PricingTable, prompt: int, cached: int, written: int, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        token_cost(
            table,
            "gpt-4o",
            prompt,
            0,
            date(2025, 1, 1),
            cached_tokens=cached,
            cache_write_tokens=written,
        )


# (output item type, model, tool version, day, fee for one call or None)
TOOL_CALLS: list[tuple[str, str | None, str | None, str, str | None]] = [
    # web_search: $10 per 1,000 on every model, priced or not
    ("web_search_call", "gpt-4o", "web_search", "2025-08-25", None),
    ("web_search_call", "gpt-4o", "web_search", "2025-08-26", "0.01"),
    ("web_search_call", "gpt-5", "web_search_2025_08_26", "2025-09-01", "0.01"),
    ("web_search_call", "ft:gpt-4.1:acme::x1", "web_search", "2025-09-01", "0.01"),
    ("web_search_call", None, "web_search", "2025-09-01", "0.01"),
    # web_search_preview: $25 on non-reasoning models, $10 on reasoning ones
    ("web_search_call", "gpt-4o", "web_search_preview", "2025-03-10", None),
    ("web_search_call", "gpt-4o", "web_search_preview", "2025-03-11", "0.025"),
    (
        "web_search_call",
        "gpt-4.1-2025-04-14",
        "web_search_preview_2025_03_11",
        "2025-06-01",
        "0.025",
    ),
    ("web_search_call", "o3", "web_search_preview", "2025-06-01", "0.01"),
    ("web_search_call", "gpt-5-mini-2025-08-07", "web_search_preview", "2025-09-01", "0.01"),
    ("web_search_call", "ft:gpt-4.1:acme::x1", "web_search_preview", "2025-09-01", None),
    ("web_search_call", None, "web_search_preview", "2025-09-01", None),
    ("web_search_call", "gpt-4o", None, "2025-09-01", None),  # version unknown
    ("web_search_call", "gpt-4o", "web_search_2099_01_01", "2025-09-01", None),
    # file search on the Responses API: $2.50 per 1,000
    ("file_search_call", "gpt-4o", None, "2025-03-10", None),
    ("file_search_call", "gpt-4o", None, "2025-03-11", "0.0025"),
    ("file_search_call", "gpt-9", "file_search", "2025-09-01", "0.0025"),
    # no fee: tokens carry the cost, or the container does
    ("mcp_call", "gpt-4.1", None, "2025-05-20", None),
    ("mcp_call", "gpt-4.1", None, "2025-05-21", "0"),
    ("mcp_list_tools", "gpt-4.1", None, "2025-06-01", "0"),
    ("function_call", "gpt-4o", None, "2025-06-01", "0"),
    ("function_call", "gpt-9", None, "2025-06-01", "0"),
    ("code_interpreter_call", "o4-mini", None, "2025-06-01", "0"),
    # not in the table: unpriced
    ("image_generation_call", "gpt-4.1-mini", None, "2025-09-01", None),
    ("computer_call", "computer-use-preview", None, "2025-09-01", None),
    ("web_search", "gpt-4o", "web_search", "2025-09-01", None),  # a tool type, not an item type
    ("", "gpt-4o", None, "2025-09-01", None),
]


@pytest.mark.parametrize(
    ("kind", "model", "version", "day", "expected"),
    TOOL_CALLS,
    ids=[f"{k}-{m}-{v}@{d}" for k, m, v, d, _ in TOOL_CALLS],
)
def test_tool_call_fee_by_kind_version_and_model(
    table: PricingTable,
    kind: str,
    model: str | None,
    version: str | None,
    day: str,
    expected: str | None,
) -> None:
    fee = tool_call_cost(table, kind, model, version, date.fromisoformat(day))
    assert fee == (None if expected is None else D(expected))


# (memory limit, seconds from creation to expiry or deletion, day created, cost, sessions)
CONTAINERS: list[tuple[str | None, float, str, str | None, int | None]] = [
    # 20-minute sessions: every started block, at least one
    ("1g", 0, "2025-05-20", None, None),
    ("1g", 0, "2025-05-21", "0.03", 1),  # created and never used: still one session
    (None, 60, "2025-06-01", "0.03", 1),  # the default memory limit is 1g
    ("1g", 1200, "2026-06-01", "0.03", 1),
    ("1g", 1200.5, "2026-06-01", "0.06", 2),
    ("1g", 3600, "2026-06-01", "0.09", 3),
    ("1g", 5 * 3600, "2026-06-01", "0.45", 15),  # started the day before the switch
    ("4g", 60, "2026-03-30", None, None),
    ("4g", 60, "2026-03-31", "0.12", 1),
    ("16g", 60, "2026-06-01", "0.48", 1),
    ("64g", 2400, "2026-06-01", "3.84", 2),
    # per minute from 2026-06-02: every started minute, at least 5; one session each
    ("1g", 0, "2026-06-02", "0.0075", 1),
    (None, 60, "2026-06-02", "0.0075", 1),
    ("1g", 299, "2026-06-02", "0.0075", 1),
    ("1g", 300, "2026-06-02", "0.0075", 1),
    ("1g", 300.5, "2026-06-02", "0.009", 1),
    ("1g", 1200, "2026-06-02", "0.03", 1),  # a full session costs what it did
    ("1g", 3600, "2026-06-02", "0.09", 1),
    ("4g", 360, "2026-06-02", "0.036", 1),
    ("16g", 1500, "2026-06-02", "0.60", 1),
    ("64g", 0, "2026-06-02", "0.48", 1),
    ("64g", 360, "2026-11-01", "0.576", 1),
    # unknown memory limits are unpriced
    ("2g", 60, "2026-06-02", None, None),
    ("1G", 60, "2026-06-02", None, None),
    ("", 60, "2026-06-02", None, None),
]


@pytest.mark.parametrize(
    ("memory", "seconds", "day", "expected", "sessions"),
    CONTAINERS,
    ids=[f"{m}-{s}s@{d}" for m, s, d, _, _ in CONTAINERS],
)
def test_container_cost_by_memory_and_billing_in_effect_when_created(
    table: PricingTable,
    memory: str | None,
    seconds: float,
    day: str,
    expected: str | None,
    sessions: int | None,
) -> None:
    started = date.fromisoformat(day)
    cost = container_cost(table, memory, seconds, started)
    assert cost == (None if expected is None else D(expected))
    assert container_sessions(table, memory, seconds, started) == sessions


def test_container_time_cannot_be_negative(table: PricingTable) -> None:
    for day in (date(2026, 6, 1), date(2026, 6, 2)):
        with pytest.raises(ValueError, match="negative"):
            container_cost(table, "1g", -1, day)


# (bytes per tenant in GB, expected cost per tenant)
STORAGE: list[tuple[dict[str, float], dict[str, str]]] = [
    # 4 GB stored, 3 GB billable = $0.30; the 1 GB saving is shared 1/8, 3/8, 4/8
    ({"a": 0.5, "b": 1.5, "c": 2.0}, {"a": "0.0375", "b": "0.1125", "c": "0.15"}),
    ({"a": 0.25, "b": 0.5}, {"a": "0", "b": "0"}),  # below the free GB
    ({"a": 0.5, "b": 0.5}, {"a": "0", "b": "0"}),  # exactly the free GB
    ({"solo": 3.0}, {"solo": "0.20"}),
    ({"a": 0.0, "b": 2.0}, {"a": "0", "b": "0.10"}),
    # $0.20 in thirds: leftover 1e-10 units go to the largest remainders, ties by name
    (
        {"a": 1.0, "b": 1.0, "c": 1.0},
        {"a": "0.0666666667", "b": "0.0666666667", "c": "0.0666666666"},
    ),
    ({}, {}),
]


@pytest.mark.parametrize(("gigabytes", "expected"), STORAGE)
def test_storage_shares_the_free_gb_in_proportion_to_bytes(
    table: PricingTable, gigabytes: dict[str, float], expected: dict[str, str]
) -> None:
    stored = {tenant: gb * GIB for tenant, gb in gigabytes.items()}
    costs = storage_costs(table, stored, date(2025, 1, 1))
    assert costs == {tenant: D(value) for tenant, value in expected.items()}
    billable_gb = max(D(0), sum((D(str(gb)) for gb in gigabytes.values()), D(0)) - 1)
    assert sum(costs.values(), D(0)) == billable_gb * D("0.10")


@pytest.mark.parametrize(
    "stored",
    [
        {"a": 1_234_567_891.5, "b": 987_654_321.25, "c": 7.0},
        {f"t{i}": 3_000_000_000.0 / (i + 1) for i in range(7)},
        {"a": 1.0, "b": 5 * GIB + 1.0},
    ],
)
def test_storage_shares_add_up_exactly_to_the_organisation_total(
    table: PricingTable, stored: dict[str, float]
) -> None:
    costs = storage_costs(table, stored, date(2025, 1, 1))
    billable = (sum((D(str(b)) for b in stored.values()), D(0)) - GIB) / GIB * D("0.10")
    assert sum(costs.values()) == billable.quantize(D("1e-10"))
    assert all(cost >= 0 for cost in costs.values())


def test_negative_storage_is_refused(table: PricingTable) -> None:
    with pytest.raises(ValueError, match="negative"):
        storage_costs(table, {"a": -1.0}, date(2025, 1, 1))


T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z


@pytest.mark.parametrize(
    ("samples", "start", "end", "expected"),
    [
        ([], T0, T0 + DAY, 0.0),
        ([(T0, GIB)], T0, T0 + DAY, 1.0),
        ([(T0 - 100, GIB)], T0, T0 + DAY, 1.0),  # a sample before start holds into the window
        ([(T0 + DAY / 2, 2 * GIB)], T0, T0 + DAY, 1.0),  # nothing before the first sample
        ([(T0, GIB), (T0 + DAY / 4, 3 * GIB)], T0, T0 + DAY, 2.5),
        ([(T0 + DAY / 4, 3 * GIB), (T0, GIB)], T0, T0 + DAY, 2.5),  # any order
        ([(T0, GIB), (T0, 5 * GIB)], T0, T0 + DAY, 5.0),  # same time: the last given wins
        ([(T0, GIB), (T0 + DAY, 9 * GIB)], T0, T0 + DAY, 1.0),  # end is excluded
        ([(T0, GIB)], T0, T0 + 2 * DAY, 2.0),
        ([(T0, GIB)], T0, T0, 0.0),
    ],
)
def test_gb_days_integrates_a_step_function(
    samples: list[tuple[float, int]], start: float, end: float, expected: float
) -> None:
    assert gb_days(samples, start, end) == pytest.approx(expected)


def test_gb_days_refuses_a_backwards_window() -> None:
    with pytest.raises(ValueError, match="before start"):
        gb_days([], T0, T0 - 1)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("7.5", "$7.5000"),
        ("0.00015", "$0.0002"),
        ("0.00014", "$0.0001"),
        ("0", "$0.0000"),
        ("-0.00001", "$0.0000"),
        ("-1.5", "-$1.5000"),
        ("1234.56789", "$1234.5679"),
    ],
)
def test_usd_shows_four_decimal_places(value: str, shown: str) -> None:
    assert usd(D(value)) == shown


def test_a_user_table_replaces_the_shipped_one(tmp_path: Path) -> None:
    own = tmp_path / "prices.yaml"
    own.write_text(
        "currency: USD\n"
        "models:\n"
        "  gpt-4o: [{from: 2024-01-01, input: 1.00, output: 2.00}]\n"
        "  in-house-model: [{from: 2024-01-01, input: 0.10, output: 0.20}]\n"
        "tools:\n"
        "  code_interpreter: [{from: 2024-01-01, per_session: 0.05, session_seconds: 3600}]\n"
        "  file_search_storage:\n"
        "    - {from: 2024-01-01, per_gb_day: 0.10, free_gb: 0, gb_bytes: 1073741824}\n"
        "  file_search_calls:\n"
        "    assistants: [{from: 2024-01-01, per_1000: 2.50}]\n"
        "    responses: [{from: 2024-01-01, per_1000: 2.50}]\n"
    )
    user = load_pricing(own)
    day = date(2025, 1, 1)
    assert token_cost(user, "gpt-4o", 1_000_000, 1_000_000, day) == D("3.00")
    assert token_cost(user, "in-house-model", 1_000_000, 0, day) == D("0.10")
    assert user.token_price("gpt-4o-mini", day) is None  # replaced, not merged
    assert user.code_interpreter_session(day) == D("0.05")
    assert user.file_search_call(day) == D("0.0025")
    assert storage_costs(user, {"a": GIB}, day) == {"a": D("0.10")}
    assert load_pricing().token_price("gpt-4o", day) is not None


def test_a_user_table_without_responses_prices_leaves_them_unpriced(tmp_path: Path) -> None:
    own = tmp_path / "prices.yaml"
    own.write_text(
        "currency: USD\n"
        "models:\n"
        "  gpt-4o: [{from: 2024-01-01, input: 1.00, cached_input: 0.50, output: 2.00}]\n"
        "tools:\n"
        "  code_interpreter: [{from: 2024-01-01, per_session: 0.05, session_seconds: 3600}]\n"
        "  file_search_storage:\n"
        "    - {from: 2024-01-01, per_gb_day: 0.10, free_gb: 0, gb_bytes: 1073741824}\n"
        "  file_search_calls:\n"
        "    assistants: [{from: 2024-01-01, per_1000: 0}]\n"
        "    responses: [{from: 2024-01-01, per_1000: 2.50}]\n"
    )
    user, day = load_pricing(own), date(2025, 1, 1)
    assert token_cost(user, "gpt-4o", 2 * M, 0, day, cached_tokens=M, tier="auto") == D("1.50")
    assert token_cost(user, "gpt-4o", M, 0, day, tier="flex") is None
    assert tool_call_cost(user, "file_search_call", "gpt-4o", None, day) == D("0.0025")
    assert tool_call_cost(user, "function_call", "gpt-4o", None, day) is None
    assert container_cost(user, "1g", 60, day) is None


def test_a_user_table_can_price_what_the_shipped_one_leaves_out(tmp_path: Path) -> None:
    shipped = files("tollhouse.metering").joinpath("pricing.yaml").read_text(encoding="utf-8")
    extra = (
        "    image_generation_call:\n"
        "      - periods: [{from: 2025-05-21, per_1000: 40}]\n"
        "    web_search_call:\n"
    )
    own = tmp_path / "prices.yaml"
    own.write_text(shipped.replace("    web_search_call:\n", extra, 1))
    user, day = load_pricing(own), date(2025, 9, 1)
    assert tool_call_cost(user, "image_generation_call", "gpt-4.1", None, day) == D("0.04")
    assert tool_call_cost(user, "web_search_call", "gpt-4.1", "web_search", day) == D("0.01")


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_table_is_refused_naming_file_and_field(path: Path) -> None:
    with pytest.raises(PricingError) as caught:
        load_pricing(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected_message(path) in message


def test_missing_file_is_named() -> None:
    with pytest.raises(PricingError, match=r"nope.yaml: cannot read the pricing table"):
        load_pricing(Path("nope.yaml"))


def test_prices_are_frozen(table: PricingTable) -> None:
    price = table.token_price("gpt-4o", date(2025, 1, 1))
    assert price is not None
    with pytest.raises(ValidationError):
        price.input = D(0)  # type: ignore[misc]

"""The pricing table: what it holds, how names and dates resolve, and the cost arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from tollhouse.pricing import (
    GIB,
    Period,
    PricingError,
    PricingTable,
    gb_days,
    load_pricing,
    storage_costs,
    token_cost,
    usd,
)

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
    calls, tools = table.tools.file_search_calls, table.tools
    periods: list[Period] = [p for ps in table.models.values() for p in ps]
    periods += [*tools.code_interpreter, *tools.file_search_storage]
    periods += [*calls.assistants, *calls.responses]
    assert all(p.sources and set(p.sources) <= set(table.sources) for p in periods)


def test_unconfirmed_prices_are_marked(table: PricingTable) -> None:
    marked = {
        (name, str(p.effective)) for name, ps in table.models.items() for p in ps if p.unconfirmed
    }
    assert marked == {
        ("gpt-3.5-turbo-0125", "2024-01-25"),
        ("o1-mini", "2025-01-31"),
        ("gpt-5.3-codex", "2025-12-11"),
        ("gpt-5.3-chat-latest", "2025-12-11"),
    }
    notes = [p.note for ps in table.models.values() for p in ps if p.unconfirmed]
    assert all(notes)


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

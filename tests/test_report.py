"""tollhouse report on real SQLite and real PostgreSQL: ledgers built with ``ledger.apply``."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, update
from sqlmodel import col

from tests.services import free_port
from tollhouse.api.classify import Kind
from tollhouse.cli.report import report_command
from tollhouse.ledger import store as ledger
from tollhouse.ledger.models import OwnedObject
from tollhouse.ledger.store import Batch, Owned, Sample, Seen
from tollhouse.metering.costs import GIB, usd
from tollhouse.metering.meter import ObjectSeen, RunSeen, StepSeen, ToolCallSeen, Usage
from tollhouse.metering.pricing import PricingTable, load_pricing, parse_pricing
from tollhouse.report.build import (
    GROUP_BYS,
    TOOLS_AND_STORAGE,
    UNKNOWN,
    GroupBy,
    Report,
    Row,
    build_report,
    price_usage,
    storage_by_day,
)
from tollhouse.report.query import LedgerUsage, StoreHistory, ToolUsage
from tollhouse.report.render import (
    NOTES,
    render_csv,
    render_json,
    render_table,
    row_fields,
)

DAY = 86_400
HOUR = 3_600
JAN1 = 1_735_689_600  # 2025-01-01T00:00:00Z
MONEY = ("token_cost", "code_interpreter_cost", "file_search_cost", "storage_cost", "total_cost")
COUNTS = (
    "runs",
    "input_tokens",
    "output_tokens",
    "code_interpreter_sessions",
    "file_search_calls",
)


@pytest.fixture(scope="module")
def pricing() -> PricingTable:
    return load_pricing()


# -- building ledgers ------------------------------------------------------------------------


def run(
    run_id: str,
    at: int,
    prompt: int = 1000,
    completion: int = 100,
    tenant: str = "acme",
    **extra: object,
) -> Seen:
    fields: dict[str, object] = {
        "id": run_id,
        "thread_id": f"thread_{run_id}",
        "assistant_id": "asst_1",
        "model": "gpt-4o",
        "status": "completed",
        "created_at": at - 30,
        "finished_at": at,
        "usage": Usage(prompt, completion, prompt + completion),
        "code_interpreter": True,
        "file_search": True,
    }
    fields.update(extra)
    return Seen(tenant, RunSeen(**fields))  # type: ignore[arg-type]


def call(
    call_id: str, kind: str, at: int, run_id: str = "run_1", thread: str = "", tenant: str = "acme"
) -> Seen:
    thread = thread or f"thread_{run_id}"
    tool = ToolCallSeen(call_id, kind, f"step_{call_id}", run_id, thread, at)
    return Seen(tenant, StepSeen(f"step_{call_id}", run_id, thread, "completed", at, (tool,), None))


def gb(store: str, tenant: str, at: int, size: float) -> Sample:
    return Sample(store, tenant, at, int(size * GIB))


def record(engine: Engine, *items: Seen | Sample) -> None:
    seen = [i for i in items if isinstance(i, Seen)]
    samples = [i for i in items if isinstance(i, Sample)]
    ledger.apply(engine, Batch(seen=seen, samples=samples), JAN1)


def moment(at: int) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def report(
    engine: Engine,
    pricing: PricingTable,
    since: int = JAN1,
    until: int = JAN1 + DAY,
    now: int | None = None,
    **options: object,
) -> Report:
    return build_report(
        engine,
        pricing,
        moment(since),
        moment(until),
        moment(until if now is None else now),
        **options,  # type: ignore[arg-type]
    )


def by_key(result: Report) -> dict[tuple[str, str | None], Row]:
    return {(row.tenant, row.group): row for row in result.rows}


def assert_totals_add_up(result: Report) -> None:
    for name in (*MONEY, *COUNTS, "storage_gb_days"):
        assert getattr(result.totals, name) == sum(
            (getattr(row, name) for row in result.rows), start=type(getattr(result.totals, name))()
        ), name
    for row in (*result.rows, result.totals):
        parts = row.token_cost + row.code_interpreter_cost + row.file_search_cost
        assert row.total_cost == parts + row.storage_cost


# -- what is counted and what it costs ---------------------------------------------------------


def test_an_empty_ledger_gives_an_empty_report(engine: Engine, pricing: PricingTable) -> None:
    result = report(engine, pricing)
    assert result.rows == ()
    assert result.unpriced == ()
    assert result.totals == Row("TOTAL")
    assert "TOTAL" in render_table(result)
    assert json.loads(render_json(result))["totals"]["total_cost"] == "0"


def test_tokens_are_priced_per_model(engine: Engine, pricing: PricingTable) -> None:
    record(engine, run("run_1", JAN1 + HOUR, 1_000_000, 500_000))
    [row] = report(engine, pricing).rows
    assert (row.tenant, row.runs, row.input_tokens, row.output_tokens) == (
        "acme",
        1,
        1_000_000,
        500_000,
    )
    assert row.token_cost == Decimal("7.50")  # 1M x $2.50 + 0.5M x $10.00 per million
    assert row.total_cost == Decimal("7.50")


def test_a_run_is_priced_on_the_day_it_finished(engine: Engine, pricing: PricingTable) -> None:
    oct2 = 1_727_827_200  # 2024-10-02T00:00:00Z: gpt-4o went from $5/$15 to $2.50/$10
    record(
        engine,
        run("run_before", oct2 - 1, 1_000_000, 0),
        run("run_after", oct2 + 60, 1_000_000, 0, created_at=oct2 - 60),
    )
    result = report(engine, pricing, oct2 - DAY, oct2 + DAY, group_by="day")
    costs = {row.group: row.token_cost for row in result.rows}
    assert costs == {"2024-10-01": Decimal(5), "2024-10-02": Decimal("2.5")}


def test_code_interpreter_sessions_and_file_search_calls(
    engine: Engine, pricing: PricingTable
) -> None:
    record(
        engine,
        run("run_1", JAN1 + HOUR),
        call("ci_1", "code_interpreter", JAN1 + 60, thread="thread_a"),
        call("ci_2", "code_interpreter", JAN1 + 120, thread="thread_a"),  # the same session
        call("ci_3", "code_interpreter", JAN1 + 180, thread="thread_b"),  # another thread
        *(call(f"fs_{i}", "file_search", JAN1 + i) for i in range(3)),
    )
    [row] = report(engine, pricing).rows
    assert (row.code_interpreter_sessions, row.code_interpreter_cost) == (2, Decimal("0.06"))
    assert (row.file_search_calls, row.file_search_cost) == (3, Decimal(0))  # none on Assistants
    charged = parse_pricing(
        Path(str(pricing_path())).read_text().replace("per_1000: 0.00", "per_1000: 2.50"), "mine"
    )
    [row] = report(engine, charged).rows
    assert row.file_search_cost == Decimal("0.0075")


def pricing_path() -> Path:
    from importlib.resources import files

    return Path(str(files("tollhouse.metering") / "pricing.yaml"))


def test_storage_shares_the_free_gb_in_proportion_to_bytes(
    engine: Engine, pricing: PricingTable
) -> None:
    record(
        engine,
        gb("vs_a", "acme", JAN1, 0.5),
        gb("vs_b", "globex", JAN1, 1.5),
        gb("vs_c", "initech", JAN1, 2),
    )
    rows = by_key(report(engine, pricing))
    # 4 GB in all, 3 GB billable: $0.30 for the day, shared 0.5 : 1.5 : 2
    assert {t: r.storage_cost for (t, _), r in rows.items()} == {
        "acme": Decimal("0.0375"),
        "globex": Decimal("0.1125"),
        "initech": Decimal("0.15"),
    }
    assert [r.storage_gb_days for r in rows.values()] == [Decimal("0.5"), Decimal("1.5"), 2]
    acme_only = report(engine, pricing, tenant="acme")
    assert [r.storage_cost for r in acme_only.rows] == [Decimal("0.0375")]  # still shared


def test_a_store_level_carries_into_the_period(engine: Engine, pricing: PricingTable) -> None:
    record(engine, gb("vs_a", "acme", JAN1 - 10 * DAY, 2), gb("vs_a", "acme", JAN1 - 5, 2))
    [row] = report(engine, pricing).rows
    assert (row.storage_gb_days, row.storage_cost) == (Decimal(2), Decimal("0.1"))


def test_a_store_ends_when_a_sampling_round_no_longer_lists_it(
    engine: Engine, pricing: PricingTable
) -> None:
    record(
        engine,
        gb("vs_gone_before", "acme", JAN1 - 2 * HOUR, 5),
        gb("vs_a", "acme", JAN1 - HOUR, 2),
        gb("vs_b", "globex", JAN1 - HOUR, 1),
        gb("vs_b", "globex", JAN1 + 12 * HOUR, 1),  # vs_a is no longer listed
        gb("vs_b", "globex", JAN1 + 13 * HOUR, 1),
    )
    rows = by_key(report(engine, pricing))
    assert rows["acme", None].storage_gb_days == 1  # 2 GB for half a day; vs_gone_before: none
    assert rows["globex", None].storage_gb_days == 1


def test_a_store_ends_at_its_recorded_deletion(engine: Engine, pricing: PricingTable) -> None:
    store = ObjectSeen("vs_a", Kind.VECTOR_STORE, None, JAN1 - DAY, False, None, 0)
    ledger.apply(engine, Batch(owned=[Owned("acme", store)]), JAN1)
    record(engine, gb("vs_a", "acme", JAN1, 2))
    with engine.begin() as connection:
        connection.execute(
            update(OwnedObject)
            .where(col(OwnedObject.id) == "vs_a")
            .values(deleted_at=JAN1 + 6 * HOUR)
        )
    [row] = report(engine, pricing).rows
    assert row.storage_gb_days == Decimal("0.5")


def test_a_part_of_a_day_is_charged_pro_rata(engine: Engine, pricing: PricingTable) -> None:
    record(engine, gb("vs_a", "acme", JAN1 - HOUR, 2))
    [half] = report(engine, pricing, JAN1, JAN1 + 12 * HOUR).rows
    assert (half.storage_gb_days, half.storage_cost) == (Decimal(1), Decimal("0.05"))
    [so_far] = report(engine, pricing, JAN1, JAN1 + DAY, now=JAN1 + 6 * HOUR).rows
    assert (so_far.storage_gb_days, so_far.storage_cost) == (Decimal("0.5"), Decimal("0.025"))
    [two_days] = report(engine, pricing, JAN1, JAN1 + 2 * DAY).rows
    assert (two_days.storage_gb_days, two_days.storage_cost) == (Decimal(4), Decimal("0.2"))


def test_period_boundaries(engine: Engine, pricing: PricingTable) -> None:
    since, until = JAN1, JAN1 + DAY
    record(
        engine,
        run("at_since", since),
        run("last_second", until - 1),
        run("at_until", until),
        run("before", since - 1),
        run("expired", 0, status="expired", finished_at=None, created_at=since + 5),
        run("started_before", since + 10, created_at=since - HOUR),
        run("live", since + 10, status="in_progress", finished_at=None, usage=None),
        call("ci_at_until", "code_interpreter", until, thread="t1"),
        call("ci_at_since", "code_interpreter", since, thread="t2"),
        call("fs_at_until", "file_search", until),
        call("fs_at_since", "file_search", since),
    )
    [row] = report(engine, pricing, since, until).rows
    assert row.runs == 4  # at_since, last_second, expired (by creation), started_before
    assert (row.code_interpreter_sessions, row.file_search_calls) == (1, 1)


def test_tenant_filter(engine: Engine, pricing: PricingTable) -> None:
    record(
        engine,
        run("run_1", JAN1 + 1, tenant="acme"),
        run("run_2", JAN1 + 2, tenant="globex"),
        call("fs_1", "file_search", JAN1 + 3, run_id="run_2", tenant="globex"),
    )
    everyone = report(engine, pricing)
    assert [r.tenant for r in everyone.rows] == ["acme", "globex"]
    globex = report(engine, pricing, tenant="globex")
    assert [r.tenant for r in globex.rows] == ["globex"]
    assert globex.rows[0] == by_key(everyone)["globex", None]
    assert report(engine, pricing, tenant="nobody").totals == Row("TOTAL")


def rich_ledger(engine: Engine) -> None:
    """Two tenants, two models (one unpriced), two assistants, two days, tools and storage."""
    record(
        engine,
        run("run_1", JAN1 + HOUR, 1_000_000, 500_000),
        run("run_2", JAN1 + DAY + HOUR, 333_333, 77_777, model="gpt-4o-mini", assistant_id="a2"),
        run("run_3", JAN1 + 2 * HOUR, 1234, 567, model="my-fine-tune", tenant="globex"),
        run("run_4", JAN1 + 3 * HOUR, 999, 1, tenant="globex", assistant_id=None),
        call("ci_1", "code_interpreter", JAN1 + 60, run_id="run_1"),
        call("ci_2", "code_interpreter", JAN1 + DAY + 60, run_id="run_2"),
        call("ci_3", "code_interpreter", JAN1 + 90, run_id="run_unseen", tenant="globex"),
        call("fs_1", "file_search", JAN1 + 70, run_id="run_2"),
        call("fs_2", "file_search", JAN1 + DAY + 70, run_id="run_2"),
        gb("vs_a", "acme", JAN1 - HOUR, 0.75),
        gb("vs_b", "globex", JAN1 - HOUR, 1.25),
        gb("vs_u", "_unowned", JAN1 - HOUR, 0.25),
        gb("vs_a", "acme", JAN1 + DAY + 7 * HOUR, 1.25),
        gb("vs_b", "globex", JAN1 + DAY + 7 * HOUR, 0.25),
        gb("vs_u", "_unowned", JAN1 + DAY + 7 * HOUR, 0.25),
    )


def test_group_by_model(engine: Engine, pricing: PricingTable) -> None:
    rich_ledger(engine)
    result = report(engine, pricing, JAN1, JAN1 + 2 * DAY, group_by="model")
    assert list(by_key(result)) == [
        ("_unowned", TOOLS_AND_STORAGE),
        ("acme", "gpt-4o"),
        ("acme", "gpt-4o-mini"),
        ("acme", TOOLS_AND_STORAGE),
        ("globex", "gpt-4o"),
        ("globex", "my-fine-tune"),
        ("globex", TOOLS_AND_STORAGE),
    ]
    rows = by_key(result)
    assert rows["acme", "gpt-4o"].token_cost == Decimal("7.5")
    # 333,333 x $0.15 + 77,777 x $0.60 per million
    assert rows["acme", "gpt-4o-mini"].token_cost == Decimal("0.09666615")
    tools = rows["acme", TOOLS_AND_STORAGE]
    assert (tools.code_interpreter_sessions, tools.file_search_calls, tools.runs) == (2, 2, 0)
    assert rows["globex", "my-fine-tune"].token_cost == 0
    assert rows["globex", "my-fine-tune"].has_unpriced_usage


def test_group_by_assistant(engine: Engine, pricing: PricingTable) -> None:
    rich_ledger(engine)
    rows = by_key(report(engine, pricing, JAN1, JAN1 + 2 * DAY, group_by="assistant"))
    assert (rows["acme", "asst_1"].runs, rows["acme", "asst_1"].code_interpreter_sessions) == (1, 1)
    a2 = rows["acme", "a2"]
    assert (a2.runs, a2.code_interpreter_sessions, a2.file_search_calls) == (1, 1, 2)
    assert rows["globex", UNKNOWN].runs == 1  # run_4 has no assistant
    assert rows["globex", UNKNOWN].code_interpreter_sessions == 1  # its run was never seen
    assert rows["acme", "(storage)"].storage_gb_days > 0
    assert rows["acme", "(storage)"].runs == 0


def test_group_by_day(engine: Engine, pricing: PricingTable) -> None:
    rich_ledger(engine)
    rows = by_key(report(engine, pricing, JAN1, JAN1 + 2 * DAY, group_by="day"))
    assert rows["acme", "2025-01-01"].runs == rows["acme", "2025-01-02"].runs == 1
    day1, day2 = rows["acme", "2025-01-01"], rows["acme", "2025-01-02"]
    assert day1.storage_gb_days == Decimal("0.75")
    # 2.25 GB in all, 1.25 GB billable: $0.125, of which acme's 0.75 / 2.25
    assert day1.storage_cost == Decimal("0.0416666667")
    assert day2.storage_gb_days == Decimal("1.104166667")  # 0.75 GB for 7 hours, then 1.25 GB
    assert rows["_unowned", "2025-01-02"].storage_gb_days == Decimal("0.25")


@pytest.mark.parametrize("group_by", [None, *GROUP_BYS])
def test_totals_are_the_exact_sum_of_the_rows(
    engine: Engine, pricing: PricingTable, group_by: GroupBy | None
) -> None:
    rich_ledger(engine)
    result = report(engine, pricing, JAN1 - HOUR, JAN1 + 2 * DAY - 7, group_by=group_by)
    assert_totals_add_up(result)
    ungrouped = report(engine, pricing, JAN1 - HOUR, JAN1 + 2 * DAY - 7)
    assert result.totals == ungrouped.totals


def test_unpriced_models_are_listed_apart(engine: Engine, pricing: PricingTable) -> None:
    jul1 = 1_719_792_000  # 2024-07-01: before gpt-4o-mini's first price
    record(
        engine,
        run("run_1", JAN1 + 1, 1_000_000, 0),
        run("run_2", JAN1 + 2, 5000, 60, model="my-fine-tune"),
        run("run_3", JAN1 + 3, 7000, 80, model="my-fine-tune"),
        run("run_4", jul1 + 4, 100, 10, model="gpt-4o-mini"),
    )
    result = report(engine, pricing, jul1, JAN1 + DAY)
    [row] = result.rows
    assert (row.runs, row.input_tokens, row.token_cost) == (4, 1_012_100, Decimal("2.5"))
    assert row.has_unpriced_usage
    assert [(u.name, u.runs, u.input_tokens, u.output_tokens) for u in result.unpriced] == [
        ("gpt-4o-mini", 1, 100, 10),
        ("my-fine-tune", 2, 12_000, 140),
    ]
    table = render_table(result)
    assert "Unpriced usage" in table
    assert "acme: model my-fine-tune: runs 2, input tokens 12,000, output tokens 140" in table


def test_unpriced_tools_are_listed_apart(pricing: PricingTable) -> None:
    before_tools = 1_704_067_200  # 2024-01-01: before the table's first tool prices
    day = datetime.fromtimestamp(before_tools, UTC).date()
    usage = LedgerUsage(
        sessions=[ToolUsage("acme", None, day, 2)],
        stores=[StoreHistory("vs_a", ((before_tools, "acme", 3 * GIB),))],
    )
    rows, unpriced = price_usage(usage, pricing, before_tools, before_tools + DAY)
    assert rows[0].total_cost == 0
    assert rows[0].has_unpriced_usage
    assert [(u.name, u.quantity, u.unit) for u in unpriced] == [
        ("code_interpreter", Decimal(2), "sessions"),
        ("file_search_storage", Decimal(3), "GB-days"),
    ]


def test_storage_by_day_splits_a_store_that_changed_hands() -> None:
    store = StoreHistory("vs_a", ((JAN1, "_unowned", GIB), (JAN1 + 12 * HOUR, "acme", GIB)))
    [(day, covered, by_tenant)] = storage_by_day([store], JAN1, JAN1 + DAY)
    assert (day.isoformat(), covered, by_tenant) == (
        "2025-01-01",
        DAY,
        {"_unowned": 0.5, "acme": 0.5},
    )


# -- rendering ---------------------------------------------------------------------------


def test_csv_parses_back_and_sums_to_the_total(engine: Engine, pricing: PricingTable) -> None:
    rich_ledger(engine)
    result = report(engine, pricing, JAN1, JAN1 + 2 * DAY, group_by="assistant")
    *rows, total = csv.DictReader(io.StringIO(render_csv(result)))
    assert total["tenant"] == "TOTAL"
    assert len(rows) == len(result.rows)
    for name in (*MONEY, "storage_gb_days"):
        assert sum(Decimal(r[name]) for r in rows) == Decimal(total[name]), name
    for name in COUNTS:
        assert sum(int(r[name]) for r in rows) == int(total[name]), name
    assert "," not in total["input_tokens"]
    assert total["has_unpriced_usage"] == "true"


def test_json_round_trips(engine: Engine, pricing: PricingTable) -> None:
    rich_ledger(engine)
    result = report(engine, pricing, JAN1, JAN1 + 2 * DAY, group_by="model")
    document = json.loads(render_json(result))
    assert document["period"] == {
        "since": "2025-01-01T00:00:00+00:00",
        "until": "2025-01-03T00:00:00+00:00",
        "generated_at": "2025-01-03T00:00:00+00:00",
    }
    assert document["group_by"] == "model"
    assert document["rows"] == [row_fields(row) for row in result.rows]
    assert Decimal(document["totals"]["total_cost"]) == result.totals.total_cost
    assert document["totals"]["has_unpriced_usage"] is True
    assert document["unpriced"] == [
        {
            "tenant": "globex",
            "kind": "model",
            "name": "my-fine-tune",
            "runs": 1,
            "input_tokens": 1234,
            "output_tokens": 567,
        }
    ]
    assert document["notes"] == list(NOTES)


def test_the_table_is_aligned_and_rounded(engine: Engine, pricing: PricingTable) -> None:
    rich_ledger(engine)
    result = report(engine, pricing, JAN1, JAN1 + 2 * DAY)
    lines = render_table(result).splitlines()
    assert lines[0] == (
        "tollhouse report: 2025-01-01 00:00:00 UTC to 2025-01-03 00:00:00 UTC (excluded)"
    )
    header, rule = lines[3], lines[4]
    assert header.split()[:4] == ["tenant", "runs", "input", "tokens"]
    acme = next(line for line in lines if line.startswith("acme "))
    assert len(acme) <= len(rule)
    assert "1,333,333" in acme
    assert usd(by_key(result)["acme", None].total_cost) in acme
    assert lines[lines.index(rule, 5) + 1].startswith("TOTAL ")
    assert any(line.startswith("globex ") and line.endswith("*") for line in lines)
    assert "Notes:" in lines


# -- the command ---------------------------------------------------------------------------


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(report_command, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def sqlite_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


PERIOD = ("--since", "2025-01-01", "--until", "2025-01-03T00:00:00Z", "--now", "2025-01-10")


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_the_command_in_each_format(engine: Engine) -> None:
    rich_ledger(engine)
    url = ("--database-url", sqlite_url(engine))
    code, table, _ = invoke(*url, *PERIOD)
    assert code == 0
    assert "TOTAL" in table
    assert "$7.5967" in table  # acme: gpt-4o $7.50 + gpt-4o-mini $0.09666615
    code, text, _ = invoke(*url, *PERIOD, "--format", "csv", "--group-by", "day")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0
    assert rows[-1]["tenant"] == "TOTAL"
    assert {r["group"] for r in rows[:-1]} == {"2025-01-01", "2025-01-02"}
    code, text, _ = invoke(*url, *PERIOD, "--format", "json", "--tenant", "acme")
    document = json.loads(text)
    assert code == 0
    assert [r["tenant"] for r in document["rows"]] == ["acme"]
    assert document["tenant"] == "acme"


@pytest.mark.parametrize("engine", ["sqlite"], indirect=True)
def test_the_command_reads_settings_and_defaults_to_this_month(
    engine: Engine, tmp_path: Path
) -> None:
    record(engine, run("run_1", JAN1 + HOUR, 1_000_000, 500_000))
    mine = tmp_path / "prices.yaml"
    mine.write_text(
        pricing_path().read_text().replace("input: 2.50, cached_input: 1.25", "input: 3")
    )
    env = {"TOLLHOUSE_DATABASE_URL": sqlite_url(engine), "TOLLHOUSE_PRICING_FILE": str(mine)}
    code, text, _ = invoke("--format", "json", "--now", "2025-01-15T10:00:00", env=env)
    document = json.loads(text)
    assert code == 0
    assert document["period"]["since"] == "2025-01-01T00:00:00+00:00"
    assert document["period"]["until"] == "2025-01-15T10:00:00+00:00"
    assert document["pricing"] == str(mine)
    assert document["totals"]["token_cost"] == "8"  # 1M x $3 + 0.5M x $10 per million
    code, text, _ = invoke("--format", "json", "--now", "2025-02-15", env=env)
    assert json.loads(text)["rows"] == []  # January is not this month


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "2025-13-01"), "'2025-13-01' is not an ISO date or datetime"),
        (("--until", "yesterday"), "'yesterday' is not an ISO date or datetime"),
        (("--since", "2025-01-02", "--until", "2025-01-02"), "is not before --until"),
        (("--since", "2025-01-03", "--until", "2025-01-02T23:59:59"), "is not before --until"),
        (("--group-by", "tenant"), "'tenant' is not one of"),
        (("--format", "xml"), "'xml' is not one of"),
    ],
)
def test_bad_options_are_usage_errors(args: tuple[str, ...], message: str, tmp_path: Path) -> None:
    code, _, err = invoke("--database-url", f"sqlite:///{tmp_path}/none.db", *args)
    assert code == 2
    assert message in err


def test_an_unreachable_database_is_a_one_line_error() -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, out, err = invoke("--database-url", url)
    assert (code, out) == (1, "")
    assert err.startswith(f"Error: cannot read the ledger at {url}: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_a_missing_sqlite_ledger_is_not_created(tmp_path: Path) -> None:
    code, _, err = invoke("--database-url", f"sqlite:///{tmp_path}/missing.db")
    assert code == 1
    assert "no ledger at" in err
    assert not (tmp_path / "missing.db").exists()


def test_a_bad_pricing_table_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "prices.yaml").write_text("currency: EUR\n")
    code, _, err = invoke("--pricing", str(tmp_path / "prices.yaml"))
    assert code == 1
    assert "prices.yaml" in err

"""Cost truth: the simulator's bill against the ledger, through the real openai client."""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, inspect, text

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tests.upstreams import Clock
from tollhouse.cli.main import main
from tollhouse.config.policy import parse_policy
from tollhouse.jobs.collector import Collector, CollectorSettings
from tollhouse.report.build import TOTAL, Report, Row
from tollhouse.report.drift import ALL, Bill, Line, bill_from_pages, compare
from tollhouse.report.query import StoreHistory
from tollhouse_simulator import SimulatorConfig, create_app

NOON = 1_796_040_000.0  # 2026-11-30 12:00 UTC
DAY = "2026-11-30"
ADMIN = "sk-admin-simulator"
HEADER = "X-Tollhouse-Tenant"
POLICY = parse_policy({"identify": {"mode": "header"}, "tenants": {"acme": {}, "globex": {}}}, "t")


@dataclass
class Stack:
    clock: Clock
    upstream: ServerThread
    proxy: RunningProxy
    database: Path

    def tenant(self, name: str) -> openai.OpenAI:
        return self.proxy.client(default_headers={HEADER: name})

    def direct(self) -> openai.OpenAI:
        """A client that bypasses tollhouse: the upstream bills it, the ledger never sees it."""
        return openai.OpenAI(api_key="sk-test", base_url=self.upstream.url + "/v1", max_retries=0)

    def env(self, admin_key: str | None = ADMIN) -> dict[str, str]:
        found = {
            "TOLLHOUSE_DATABASE_URL": f"sqlite:///{self.database}",
            "TOLLHOUSE_UPSTREAM_URL": self.upstream.url + "/v1",
        }
        if admin_key is not None:
            found["TOLLHOUSE_ADMIN_API_KEY"] = admin_key
        return found

    def reconcile(self, *args: str, admin_key: str | None = ADMIN) -> Result:
        now = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        command = ["reconcile", "--day", DAY, "--now", now, *args]
        return CliRunner().invoke(main, command, env=self.env(admin_key))


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    clock = Clock(NOON)
    database = tmp_path / "ledger.db"
    upstream_app = create_app(SimulatorConfig(clock=clock))
    with (
        serve(upstream_app) as upstream,
        running_proxy(
            upstream.url + "/v1",
            policy=POLICY,
            clock=clock,
            upstream_api_key="sk-test",
            admin_api_key=ADMIN,
            reconcile_after=0,
            database_url=f"sqlite:///{database}",
        ) as proxy,
    ):
        yield Stack(clock, upstream, proxy, database)


def assistant_traffic(stack: Stack, client: openai.OpenAI, threads: int) -> list[Any]:
    """Runs with Code Interpreter and File Search in ``threads`` threads, polled to the end
    and their steps listed (what a tollhouse-metered app does)."""
    upload = client.files.create(file=("a.txt", io.BytesIO(b"w" * 3000)), purpose="assistants")
    store = client.vector_stores.create(name="docs", file_ids=[upload.id])
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "code_interpreter"}, {"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    stack.clock.advance(10)  # the file is processed
    started = [
        client.beta.threads.create_and_run(assistant_id=assistant.id) for _ in range(threads)
    ]
    stack.clock.advance(60)
    finished = []
    for run in started:
        finished.append(client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id))
        client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id)
    return finished


def settle(stack: Stack) -> None:
    """The ledger has what the proxy saw, and a storage sample of every store."""
    tollhouse = stack.proxy.tollhouse
    collector = Collector(
        tollhouse.engine,
        tollhouse.writer,
        tollhouse.forwarder,
        tollhouse.quota,
        tollhouse.metrics,
        CollectorSettings("sk-test"),
        tollhouse.current.label,
        clock=stack.clock,
    )
    stack.proxy.run(collector.sample_storage())
    stack.proxy.flush()


def lines(result: Result) -> dict[tuple[str, str], dict[str, Any]]:
    document = json.loads(result.stdout)
    return {(line["measure"], line["scope"]): line for line in document["lines"]}


def test_traffic_through_tollhouse_agrees_with_the_bill(stack: Stack) -> None:
    runs = assistant_traffic(stack, stack.tenant("acme"), threads=2)
    assistant_traffic(stack, stack.tenant("globex"), threads=1)
    settle(stack)
    result = stack.reconcile("--format", "json")
    assert result.exit_code == 0, result.output
    found = lines(result)
    for measure in ("input_tokens", "output_tokens", "code_interpreter_sessions"):
        assert found[(measure, ALL)]["ratio"] == 0, measure
    assert found[("input_tokens", "gpt-4o")]["bill"] >= sum(r.usage.prompt_tokens for r in runs)
    assert found[("code_interpreter_sessions", ALL)]["tollhouse"] == 3
    assert found[("file_search_calls", ALL)]["tollhouse"] == 3
    assert found[("file_search_calls", ALL)]["difference"] == 0
    assert found[("vector_store_bytes", ALL)]["bill"] == 6000
    assert found[("vector_store_bytes", ALL)]["difference"] == 0
    dollars = found[("cost_usd", ALL)]
    assert dollars["bill"] > 0.09  # three sessions and the tokens
    assert dollars["ratio"] <= 0.02
    assert not any(line["drifts"] for line in found.values())
    # What the ledger has no figure for yet is shown so, not as 0.
    assert found[("input_cached_tokens", ALL)]["tollhouse"] is None
    assert found[("input_cached_tokens", ALL)]["metered"] is False
    assert set(json.loads(result.stdout)["tenants"]) == {"acme", "globex"}


def test_traffic_that_bypassed_tollhouse_is_the_difference(stack: Stack, tmp_path: Path) -> None:
    assistant_traffic(stack, stack.tenant("acme"), threads=1)
    direct = stack.direct()
    bypassed = assistant_traffic(stack, direct, threads=2)
    chat = direct.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "not metered"}]
    )
    direct.close()
    settle(stack)
    textfile = tmp_path / "bill.prom"
    result = stack.reconcile("--format", "json", "--textfile", str(textfile))
    assert result.exit_code == 3, result.output
    found = lines(result)
    run_input = sum(run.usage.prompt_tokens for run in bypassed)
    run_output = sum(run.usage.completion_tokens for run in bypassed)
    assert found[("input_tokens", "gpt-4o")]["difference"] == run_input
    assert found[("output_tokens", "gpt-4o")]["difference"] == run_output
    assert found[("input_tokens", "gpt-4o-mini")] == {
        "measure": "input_tokens",
        "scope": "gpt-4o-mini",
        "bill": chat.usage.prompt_tokens,
        "tollhouse": 0,
        "metered": True,
        "difference": chat.usage.prompt_tokens,
        "ratio": 1.0,
        "drifts": True,
    }
    assert found[("input_tokens", ALL)]["difference"] == run_input + chat.usage.prompt_tokens
    assert found[("code_interpreter_sessions", ALL)]["difference"] == 2
    assert found[("file_search_calls", ALL)]["difference"] == 2
    # The bypassing stores were sampled (the sampler lists them all), but have no owner.
    assert found[("vector_store_bytes", ALL)]["difference"] == 0
    sessions = found[("cost_usd", "Code Interpreter sessions")]
    assert sessions["difference"] == pytest.approx(0.06)
    assert set(json.loads(result.stdout)["tenants"]) == {"acme"}  # the difference has none
    exported = textfile.read_text()
    assert 'tollhouse_bill_drift_ratio{measure="code_interpreter_sessions"} 0.6666' in exported
    assert "tollhouse_bill_drift_tolerance_ratio 0.02" in exported


def test_the_table_names_each_measure_and_what_is_not_metered(stack: Stack) -> None:
    assistant_traffic(stack, stack.tenant("acme"), threads=1)
    settle(stack)
    result = stack.reconcile()
    assert result.exit_code == 0, result.output
    rows = {tuple(line.split()[:2]): line for line in result.stdout.splitlines()[3:] if line}
    assert rows[("input_cached_tokens", ALL)].split()[3:5] == ["not", "metered"]
    assert rows[("input_tokens", ALL)].split()[-1] == "ok"
    assert rows[("cost_usd", ALL)].split()[-1] == "ok"


def test_a_wider_tolerance_lets_a_marked_up_bill_pass(tmp_path: Path) -> None:
    clock = Clock(NOON)
    upstream_app = create_app(SimulatorConfig(clock=clock, bill_markup=1.1))
    database = tmp_path / "ledger.db"
    with (
        serve(upstream_app) as upstream,
        running_proxy(
            upstream.url + "/v1",
            policy=POLICY,
            clock=clock,
            upstream_api_key="sk-test",
            database_url=f"sqlite:///{database}",
        ) as proxy,
    ):
        stack = Stack(clock, upstream, proxy, database)
        assistant_traffic(stack, stack.tenant("acme"), threads=1)
        settle(stack)
        strict = stack.reconcile("--format", "json")
        assert strict.exit_code == 3, strict.output
        drifting = {key for key, line in lines(strict).items() if line["drifts"]}
        assert ("cost_usd", ALL) in drifting
        assert ("input_tokens", ALL) not in drifting  # tokens agree; only dollars are off
        assert lines(strict)[("cost_usd", ALL)]["ratio"] == pytest.approx(0.1 / 1.1)
        assert stack.reconcile("--tolerance", "0.1").exit_code == 0


def test_the_admin_key_appears_in_no_log_output_or_ledger(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    assistant_traffic(stack, stack.direct(), threads=1)  # a drift, so the check logs it
    settle(stack)
    check = stack.proxy.tollhouse.bill_check
    assert check is not None
    with caplog.at_level(logging.DEBUG):
        found = stack.proxy.run(check.check(date.fromisoformat(DAY)))
        result = stack.reconcile("--format", "json")
        refused = stack.reconcile(admin_key="sk-admin-not-the-right-one")
    assert found.drifting(0.02)
    assert "bill check" in caplog.text
    assert result.exit_code == 3
    for text_seen in (caplog.text, result.output, refused.output):
        assert ADMIN not in text_seen
        assert "sk-admin-not-the-right-one" not in text_seen
        assert "right-one" not in text_seen
    engine = create_engine(f"sqlite:///{stack.database}")
    with engine.connect() as connection:
        for table in inspect(engine).get_table_names():
            dump = repr(connection.execute(text(f'SELECT * FROM "{table}"')).all())
            assert ADMIN not in dump, table
    engine.dispose()
    assert ADMIN not in stack.database.read_bytes().decode("latin-1")


def test_the_scheduled_check_sets_the_drift_metrics(stack: Stack) -> None:
    tollhouse = stack.proxy.tollhouse
    assistant_traffic(stack, stack.tenant("acme"), threads=1)  # answered: started up
    assistant_traffic(stack, stack.direct(), threads=1)
    settle(stack)
    assert tollhouse.scheduler is not None
    assert tollhouse.scheduler.get_job("bill_check") is not None
    assert stack.proxy.sample("tollhouse_bill_last_success_timestamp_seconds") == NOON
    stack.clock.advance(86_400)  # tomorrow: the check reads yesterday
    check = tollhouse.bill_check
    assert check is not None
    assert stack.proxy.run(check.yesterday()) >= 1
    ratio = stack.proxy.sample("tollhouse_bill_drift_ratio", measure="code_interpreter_sessions")
    assert ratio == 0.5
    assert stack.proxy.sample("tollhouse_bill_drift_ratio", measure="vector_store_bytes") == 0
    no_figure = tollhouse.registry.get_sample_value(
        "tollhouse_bill_drift_ratio", {"measure": "input_cached_tokens"}
    )
    assert no_figure is None  # not metered: no ratio at all
    assert stack.proxy.sample("tollhouse_bill_last_success_timestamp_seconds") == stack.clock()


def test_a_bad_admin_key_is_a_clear_error(stack: Stack) -> None:
    result = stack.reconcile(admin_key="sk-admin-not-the-right-one")
    assert result.exit_code == 1
    assert "the upstream refused TOLLHOUSE_ADMIN_API_KEY" in result.output
    assert "(401, invalid_api_key)" in result.output
    project_key = stack.reconcile(admin_key="sk-test")
    assert project_key.exit_code == 1
    assert "(403," in project_key.output


def test_a_missing_admin_key_is_a_clear_error(stack: Stack) -> None:
    result = stack.reconcile(admin_key=None)
    assert result.exit_code == 1
    assert "TOLLHOUSE_ADMIN_API_KEY is not set" in result.output


@pytest.mark.parametrize(
    ("bill", "tollhouse", "ratio", "drifts"),
    [
        (100.0, 100.0, 0.0, False),
        (100.0, 98.0, 0.02, False),
        (100.0, 97.0, 0.03, True),
        (100.0, 103.0, 0.03, True),
        (0.0, 0.0, 0.0, False),
        (0.0, 5.0, math.inf, True),
        (5.0, None, None, False),
    ],
)
def test_the_drift_ratio(
    bill: float, tollhouse: float | None, ratio: float | None, drifts: bool
) -> None:
    line = Line("input_tokens", ALL, bill, tollhouse)
    assert line.ratio == (pytest.approx(ratio) if ratio is not None else None)
    assert line.drifts(0.02) is drifts


def test_stores_gone_before_the_moment_hold_nothing() -> None:
    stores = [
        StoreHistory("vs_a", ((100, "acme", 10), (200, "acme", 30))),
        StoreHistory("vs_b", ((100, "globex", 5),), gone_at=150),
    ]
    bill = Bill(date(2026, 11, 30), totals={"vector_store_bytes": 30.0})
    empty = Report(
        since=datetime(2026, 11, 30, tzinfo=UTC),
        until=datetime(2026, 12, 1, tzinfo=UTC),
        generated_at=datetime(2026, 12, 1, tzinfo=UTC),
        group_by="model",
        tenant=None,
        pricing_source="",
        rows=(),
        totals=Row(TOTAL),
        unpriced=(),
    )
    [line] = compare(bill, empty, stores, 250).lines
    assert (line.bill, line.tollhouse) == (30.0, 30.0)
    [early] = compare(bill, empty, stores, 120).lines
    assert early.tollhouse == 15.0


def test_the_daily_check_needs_only_the_admin_key() -> None:
    with (
        serve(create_app(SimulatorConfig())) as upstream,
        running_proxy(upstream.url + "/v1", admin_api_key=ADMIN) as proxy,
    ):
        proxy.client().files.list()  # answered: started up
        tollhouse = proxy.tollhouse
        assert tollhouse.collector is None  # no upstream key: no collector jobs
        assert tollhouse.scheduler is not None
        assert [job.id for job in tollhouse.scheduler.get_jobs()] == ["bill_check"]
    with serve(create_app(SimulatorConfig())) as upstream, running_proxy(upstream.url) as proxy:
        proxy.client().files.list()
        assert proxy.tollhouse.scheduler is None  # neither key: nothing scheduled


def _page(*results: dict[str, Any], more: bool = False) -> dict[str, Any]:
    bucket = {"object": "bucket", "start_time": 0, "end_time": 86_400, "results": list(results)}
    return {
        "object": "page",
        "data": [bucket],
        "has_more": more,
        "next_page": "p" if more else None,
    }


def test_the_bill_sums_every_page_and_leaves_out_what_is_not_served() -> None:
    completions = [
        _page({"model": "gpt-4o", "input_tokens": 10, "output_tokens": 1}, more=True),
        _page(
            {"model": "gpt-4o", "input_tokens": 5, "input_cached_tokens": 2, "output_tokens": 1},
            {"model": "o3", "input_tokens": 7, "output_tokens": 3, "num_model_requests": 1},
        ),
    ]
    costs = [_page({"amount": {"value": 0.5, "currency": "usd"}, "line_item": "o3, input"})]
    bill = bill_from_pages(date(2026, 11, 30), {"completions": completions}, costs)
    assert bill.totals == {
        "input_tokens": 22,
        "input_cached_tokens": 2,
        "output_tokens": 5,
        "model_requests": 1,
        "cost_usd": 0.5,
    }  # no usage endpoint for tools was served: no figures for them, not zeros
    assert bill.by_model["input_tokens"] == {"gpt-4o": 15, "o3": 7}
    assert bill.costs == {"o3, input": 0.5}

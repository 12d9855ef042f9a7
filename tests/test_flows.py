"""Flows side by side: one flow run on both APIs through the real client, each side's row
with its requests, latency, tokens, tool calls and cost per completed run or response."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tollhouse.cli.main import main
from tollhouse.ledger import store as ledger
from tollhouse.ledger.follow import Exchanged
from tollhouse.ledger.models import Assistant, FlowRequest, FlowUnit, Run, ThreadMessages
from tollhouse.ledger.store import Batch, Seen
from tollhouse.metering.assistants import AssistantSeen
from tollhouse.metering.flows import OTHER_FLOW, BadFlowName, FlowNames, api_of, flow_name
from tollhouse.metering.meter import RunSeen
from tollhouse.metering.pricing import load_pricing
from tollhouse.proxy.flows import body_flow, take_flow
from tollhouse.report.flows import build_flows, percentile
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.state import Simulator

GPT_4O = (Decimal("2.50"), Decimal("1.25"), Decimal("10.00"))  # input, cached, output per 1M
WEB_SEARCH = Decimal("0.01")  # per call


@pytest.fixture
def upstream() -> Iterator[tuple[ServerThread, Simulator]]:
    app = create_app(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05))
    with serve(app) as server:
        yield server, app.state.simulator


def flows(proxy: RunningProxy, *args: str) -> dict[tuple[str, str], dict[str, Any]]:
    proxy.flush()
    until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    url = proxy.tollhouse.settings.database_url
    done = CliRunner().invoke(
        main,
        ["migration", "--flows", "--database-url", url, "--since", "2020-01-01",
         "--until", until, "--format", "json", *args],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    return {(r["flow"], r["api"]): r for r in json.loads(done.output)["flows"]}


def tokens_cost(input_tokens: int, cached: int, output: int) -> Decimal:
    rate_in, rate_cached, rate_out = GPT_4O
    fresh = input_tokens - cached
    return (fresh * rate_in + cached * rate_cached + output * rate_out) / 1_000_000


@pytest.mark.timeout(60)
def test_one_flow_on_both_apis_shows_both_rows_with_their_counts_and_costs(
    upstream: tuple[ServerThread, Simulator],
) -> None:
    server, sim = upstream
    with running_proxy(server.url + "/v1") as proxy:
        tagged = proxy.client(default_headers={"X-Tollhouse-Flow": "checkout"})
        before = len(sim.requests)
        assistant = tagged.beta.assistants.create(
            model="gpt-4o", tools=[{"type": "code_interpreter"}]
        )
        polled = tagged.beta.threads.create_and_run_poll(
            assistant_id=assistant.id,
            thread={"messages": [{"role": "user", "content": "Plot the basket totals."}]},
            poll_interval_ms=20,
        )
        with tagged.beta.threads.runs.stream(
            thread_id=polled.thread_id, assistant_id=assistant.id
        ) as stream:
            stream.until_done()
            streamed = stream.get_final_run()
        steps = [
            step
            for run in (polled, streamed)
            for step in tagged.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id)
        ]
        interpreter_calls = sum(
            call.type == "code_interpreter"
            for step in steps
            if step.step_details.type == "tool_calls"
            for call in step.step_details.tool_calls
        )
        assistants_requests = len(sim.requests) - before  # all of them tagged

        # The same flow on Responses: tagged by its header, then by a create's metadata.
        first = tagged.responses.create(
            model="gpt-4o",
            input="Find the basket's shipping rates.",
            tools=[{"type": "web_search"}],
        )
        untagged = proxy.client()
        second = untagged.responses.create(
            model="gpt-4o",
            input="And the cheapest one?",
            previous_response_id=first.id,
            metadata={"tollhouse_flow": "checkout"},
        )
        untagged.responses.create(model="gpt-4o", input="Not part of any flow.")
        rows = flows(proxy)

    assert all("x-tollhouse-flow" not in r.headers for r in sim.requests)  # never forwarded
    assert second.metadata == {"tollhouse_flow": "checkout"}  # left in place
    assert set(rows) == {("checkout", "assistants"), ("checkout", "responses")}

    side = rows[("checkout", "assistants")]
    runs = (polled, streamed)
    assert all(run.status == "completed" and run.usage for run in runs)
    prompt = sum(run.usage.prompt_tokens for run in runs if run.usage)
    completion = sum(run.usage.completion_tokens for run in runs if run.usage)
    assert (side["requests"], side["errors"]) == (assistants_requests, 0)
    assert (side["units"], side["completed"]) == (2, 2)
    assert (side["input_tokens"], side["output_tokens"]) == (prompt, completion)
    assert side["tool_calls"] == interpreter_calls > 0
    assert Decimal(side["cost_per_completed_usd"]) == tokens_cost(prompt, 0, completion) / 2

    other = rows[("checkout", "responses")]
    answers = (first, second)
    assert all(answer.usage for answer in answers)
    used = [a.usage for a in answers if a.usage]
    searches = sum(item.type == "web_search_call" for item in first.output)
    assert (other["requests"], other["units"], other["completed"]) == (2, 2, 2)
    assert other["input_tokens"] == sum(u.input_tokens for u in used)
    assert other["output_tokens"] == sum(u.output_tokens for u in used)
    assert other["tool_calls"] == searches > 0
    by_hand = sum(
        (tokens_cost(u.input_tokens, u.input_tokens_details.cached_tokens, u.output_tokens)
         for u in used),
        start=Decimal(0),
    ) + searches * WEB_SEARCH  # fmt: skip
    assert Decimal(other["cost_usd"]) == by_hand
    assert Decimal(other["cost_per_completed_usd"]) == by_hand / 2

    for row in rows.values():  # tollhouse's view of latency: first byte before the last
        assert row["first_byte_p50_ms"] <= row["first_byte_p95_ms"]
        assert row["last_byte_p50_ms"] <= row["last_byte_p95_ms"]
        assert row["first_byte_p50_ms"] <= row["last_byte_p95_ms"]


@pytest.mark.timeout(60)
def test_a_bad_flow_name_is_ignored_and_still_not_forwarded(
    upstream: tuple[ServerThread, Simulator], caplog: pytest.LogCaptureFixture
) -> None:
    server, sim = upstream
    caplog.set_level(logging.INFO, logger="tollhouse.proxy.flows")
    with running_proxy(server.url + "/v1") as proxy:
        bad = proxy.client(default_headers={"X-Tollhouse-Flow": "no spaces please"})
        bad.responses.create(model="gpt-4o", input="Hello")
        assert flows(proxy) == {}
    assert "X-Tollhouse-Flow ignored" in caplog.text
    assert all("x-tollhouse-flow" not in r.headers for r in sim.requests)


@pytest.mark.timeout(60)
def test_a_tenants_flows_beyond_the_cap_are_counted_as_other(
    upstream: tuple[ServerThread, Simulator],
) -> None:
    server, _ = upstream
    with running_proxy(server.url + "/v1") as proxy:
        client = proxy.client()
        for n in range(22):
            client.responses.create(
                model="gpt-4o", input="Hi", extra_headers={"X-Tollhouse-Flow": f"flow-{n:02d}"}
            )
        rows = flows(proxy)
    assert sorted(flow for flow, _ in rows) == sorted(
        [f"flow-{n:02d}" for n in range(20)] + [OTHER_FLOW]
    )
    assert rows[(OTHER_FLOW, "responses")]["requests"] == 2


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("checkout", "checkout"),
        (b"  checkout-v2  ", "checkout-v2"),
        ("team/a:b.c_d", "team/a:b.c_d"),
        ("x" * 64, "x" * 64),
        ("x" * 65, None),
        ("", None),
        ("-leading", None),
        ("has space", None),
        ("caf\u00e9", None),
    ],
)
def test_flow_names(raw: str | bytes, name: str | None) -> None:
    if name is None:
        with pytest.raises(BadFlowName):
            flow_name(raw)
    else:
        assert flow_name(raw) == name


def test_the_header_is_taken_out_and_the_body_metadata_read() -> None:
    headers = [(b"authorization", b"Bearer k"), (b"X-Tollhouse-Flow", b"checkout")]
    assert take_flow(headers) == ("checkout", [(b"authorization", b"Bearer k")])
    assert take_flow([(b"x-tollhouse-flow", b"bad name")]) == (None, [])
    assert body_flow(b'{"metadata": {"tollhouse_flow": "search"}}') == "search"
    assert body_flow(b'{"metadata": {"tollhouse_flow": 7}}') is None
    assert body_flow(b'{"metadata": {"other": "tollhouse_flow"}}') is None
    assert body_flow(None) is None


def test_flow_names_per_tenant_are_capped() -> None:
    names = FlowNames(cap=2)
    assert [names.admit("t", f) for f in ("a", "b", "c", "a")] == ["a", "b", OTHER_FLOW, "a"]
    assert names.admit("u", "c") == "c"  # another tenant's own allowance


@pytest.mark.parametrize(
    ("operation", "api"),
    [
        ("threads.runs.create", "assistants"),
        ("assistants.create", "assistants"),
        ("responses.create", "responses"),
        ("conversations.items.list", "responses"),
        ("chat.completions.create", "chat"),
        ("files.create", "other"),
    ],
)
def test_api_of(operation: str, api: str) -> None:
    assert api_of(operation) == api


def test_percentiles_by_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5], 0.95) == 5
    values = list(range(1, 101))
    assert (percentile(values, 0.5), percentile(values, 0.95)) == (50, 95)


def test_the_ledger_adds_polls_rounds_streams_messages_and_flow_rows_once(engine: Engine) -> None:
    """On SQLite and PostgreSQL: a batch's follow-up counts are added once, replay or not."""
    run = RunSeen("run_1", "thread_1", "asst_1", "gpt-4o", "completed", 10, 12, None, False, False)
    exchanges = [
        Exchanged("t", "threads.runs.create", "assistants", 200, True, ("run_1",), (), "f",
                  thread="thread_1", messages=2, first_byte_ms=3, last_byte_ms=40, at=11),
        Exchanged("t", "threads.runs.retrieve", "assistants", 200, runs=("run_1",), at=12),
        Exchanged("t", "threads.runs.retrieve", "assistants", 200, runs=("run_1",), at=12),
        Exchanged("t", "threads.runs.submit_tool_outputs", "assistants", 200, runs=("run_1",)),
        Exchanged("t", "threads.runs.retrieve", "assistants", 200, runs=("run_1",), count=3),
        Exchanged("t", "threads.runs.retrieve", "assistants", 404, runs=("run_1",)),
        Exchanged("t", "responses.create", "responses", 200, False, (), ("resp_1",), "f", at=13),
    ]  # fmt: skip
    batch = Batch(
        seen=[
            Seen("t", run),
            Seen("t", AssistantSeen("asst_1", "gpt-4o", 12, ("file_search",), ("vs_1",), 5)),
        ],
        exchanges=exchanges,
    )
    ledger.apply(engine, batch, 20)
    ledger.apply(engine, batch, 21)  # a replay of the same batch changes nothing
    with Session(engine) as session:
        stored = session.get(Run, "run_1")
        assert stored is not None
        assert (stored.polls, stored.tool_rounds, stored.streamed) == (5, 1, True)
        messages = session.get(ThreadMessages, "thread_1")
        assert messages is not None
        assert messages.messages == 2
        assistant = session.get(Assistant, "asst_1")
        assert assistant is not None
        assert (assistant.tools, assistant.vector_store_ids) == ("file_search", "vs_1")
        requests = session.exec(select(FlowRequest)).all()
        assert sorted((r.api, r.first_byte_ms, r.last_byte_ms) for r in requests) == [
            ("assistants", 3, 40),
            ("responses", None, None),
        ]
        units = {u.unit_id: u.api for u in session.exec(select(FlowUnit)).all()}
        assert units == {"run_1": "assistants", "resp_1": "responses"}
    rows = build_flows(engine, load_pricing(), 0, 100)
    assert [(r.flow, r.api, r.requests, r.units, r.completed) for r in rows] == [
        ("f", "assistants", 1, 1, 1),
        ("f", "responses", 1, 0, 0),  # the response itself is not in this ledger
    ]

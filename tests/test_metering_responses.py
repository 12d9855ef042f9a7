"""The Responses era metered through the real openai client, the proxy, the simulator upstream
and a real ledger: each response, tool call, container and chat completion counted once, and
priced as the table says (the expected costs are worked out here by hand from the prices)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from math import ceil
from typing import Any

import openai
import pytest
from openai.types import CompletionUsage
from openai.types.responses import ResponseUsage
from sqlalchemy import delete
from sqlmodel import Session

from tests.conftest import RunningProxy, running_proxy
from tests.servers import serve
from tests.services import postgres_cluster
from tollhouse.config.policy import parse_policy
from tollhouse.ledger.models import Container, Response
from tollhouse.metering.pricing import load_pricing
from tollhouse.metering.sse import SSEParser
from tollhouse.report.build import Report, Row, build_report
from tollhouse_simulator import SimulatorConfig, create_app

HEADER = "X-Tollhouse-Tenant"
POLICY = parse_policy({"identify": {"mode": "header"}, "tenants": {"acme": {}, "globex": {}}}, "t")
START = 1_782_000_000  # 2026-06-21: containers are billed per minute
SINCE, UNTIL = datetime(2026, 6, 1, tzinfo=UTC), datetime(2026, 7, 1, tzinfo=UTC)
TWO_SEARCHES = "Search for tollhouse history, then search turnpike prices"
WEB: Any = {"type": "web_search"}
CODE_AUTO_4G: Any = {
    "type": "code_interpreter",
    "container": {"type": "auto", "memory_limit": "4g"},
}
IMAGES: Any = {"type": "image_generation", "size": "1024x1024", "quality": "low"}
MCP: Any = {
    "type": "mcp",
    "server_label": "wiki",
    "server_url": "https://mcp.example.com",
    "require_approval": "never",
}
FUNCTION: Any = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
HELLO: Any = [{"role": "user", "content": "Hello there"}]

# The shipped table's prices, written out (USD per 1M tokens; per call; per minute).
GPT_4O = (Decimal("2.50"), Decimal("1.25"), Decimal("10.00"))  # input, cached input, output
O4_MINI = (Decimal("1.10"), Decimal("0.275"), Decimal("4.40"))
FLEX = Decimal("0.5")
WEB_SEARCH_CALL = Decimal("10.00") / 1000
CONTAINER_4G_MINUTE, CONTAINER_1G_MINUTE, MINIMUM_MINUTES = Decimal("0.006"), Decimal("0.0015"), 5


class Clock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


@dataclass
class World:
    clock: Clock
    proxy: RunningProxy

    def tenant(self, name: str) -> openai.OpenAI:
        return self.proxy.client(default_headers={HEADER: name})

    def sample(self, name: str, **labels: str) -> float:
        return self.proxy.sample(name, **labels)

    def report(self) -> Report:
        self.proxy.flush()
        engine = self.proxy.tollhouse.engine
        return build_report(engine, load_pricing(), SINCE, UNTIL, UNTIL)

    def row(self, tenant: str) -> Row:
        [row] = [row for row in self.report().rows if row.tenant == tenant]
        return row

    def reconcile(self) -> int:
        collector = self.proxy.tollhouse.collector
        assert collector is not None
        return self.proxy.run(collector.reconcile())


@pytest.fixture
def world() -> Iterator[World]:
    """The simulator on a clock the test moves: background responses queue 1 s, work 3 s."""
    clock = Clock()
    config = SimulatorConfig(clock=clock, queued_seconds=1.0, in_progress_seconds=3.0)
    with (
        serve(create_app(config)) as simulator,
        running_proxy(
            simulator.url + "/v1", policy=POLICY, upstream_api_key="sk-test", reconcile_after=0
        ) as proxy,
    ):
        yield World(clock, proxy)


def dollars(
    usage: ResponseUsage | None,
    prices: tuple[Decimal, Decimal, Decimal],
    tier: Decimal = Decimal(1),
) -> Decimal:
    """Hand-priced tokens: uncached input, cached input, output (reasoning included)."""
    assert usage is not None
    fresh_price, cached_price, output_price = prices
    cached = usage.input_tokens_details.cached_tokens
    fresh = usage.input_tokens - cached
    per_million = fresh * fresh_price + cached * cached_price + usage.output_tokens * output_price
    return per_million * tier / Decimal(1_000_000)


def chat_dollars(
    usage: CompletionUsage | None, prices: tuple[Decimal, Decimal, Decimal]
) -> Decimal:
    assert usage is not None
    fresh_price, cached_price, output_price = prices
    details = usage.prompt_tokens_details
    cached = details.cached_tokens if details and details.cached_tokens else 0
    fresh = usage.prompt_tokens - cached
    return (
        fresh * fresh_price + cached * cached_price + usage.completion_tokens * output_price
    ) / Decimal(1_000_000)


def container_dollars(created: float, last_active: float, per_minute: Decimal) -> Decimal:
    """A container lives until 20 minutes after its last activity, billed per started minute."""
    minutes = max(MINIMUM_MINUTES, ceil((int(last_active) + 20 * 60 - int(created)) / 60))
    return minutes * per_minute


def settled(proxy: RunningProxy, attempts: int = 500) -> bool:
    """Whether the proxy has finished with every request, the ones a client cut included (their
    observations then reach the next flush). Polls a condition another thread makes true."""
    pause = threading.Event()
    for _ in range(attempts):
        if proxy.sample("tollhouse_in_flight_requests") == 0:
            return True
        pause.wait(0.01)
    return False


def events(chunks: list[bytes]) -> list[str]:
    return [event.event for event in SSEParser().feed(b"".join(chunks))]


def test_a_background_response_polled_500_times_is_metered_once(world: World) -> None:
    acme = world.tenant("acme")
    started = acme.responses.create(model="gpt-4o", input="Tell me a story", background=True)
    assert started.status == "queued"
    for poll in range(500):
        if poll == 100:
            world.clock.now += 5  # it finishes upstream while the client polls
        if poll % 100 == 0:
            world.proxy.flush()  # across flushes, not only within one
        final = acme.responses.retrieve(started.id)
    assert final.status == "completed"
    assert final.usage is not None
    row = world.row("acme")
    assert (row.responses, row.input_tokens, row.output_tokens) == (
        1,
        final.usage.input_tokens,
        final.usage.output_tokens,
    )
    assert row.token_cost == dollars(final.usage, GPT_4O)
    assert world.sample("tollhouse_responses_total", tenant="acme", status="completed") == 1
    input_tokens = world.sample(
        "tollhouse_tokens_total", tenant="acme", model="gpt-4o", direction="input"
    )
    assert input_tokens == final.usage.input_tokens
    with Session(world.proxy.tollhouse.engine) as session:
        stored = session.get(Response, started.id)
    assert stored is not None
    assert (stored.tenant, stored.status, stored.background) == ("acme", "completed", True)


def test_a_stream_cut_midway_and_resumed_is_metered_once(world: World) -> None:
    acme = world.tenant("acme")
    streaming = acme.responses.with_streaming_response
    with streaming.create(
        model="gpt-4o", input=TWO_SEARCHES, tools=[WEB], background=True, stream=True
    ) as response:
        parser, head = SSEParser(), []
        for chunk in response.iter_bytes():  # created and queued; then the connection drops
            head.extend(parser.feed(chunk))
            if len(head) >= 2:
                break
    response_id = json.loads(head[0].data)["response"]["id"]
    assert settled(world.proxy)
    world.proxy.flush()
    world.clock.now += 10
    with streaming.retrieve(response_id, stream=True, starting_after=1) as resumed:
        chunks = list(resumed.iter_bytes())
    assert events(chunks)[-1] == "response.completed"
    final = acme.responses.retrieve(response_id)  # and read once more, whole
    assert final.usage is not None
    row = world.row("acme")
    assert (row.responses, row.input_tokens, row.web_search_calls) == (
        1,
        final.usage.input_tokens,
        2,
    )
    assert row.token_cost == dollars(final.usage, GPT_4O)
    assert row.web_search_cost == 2 * WEB_SEARCH_CALL
    assert world.sample("tollhouse_responses_total", tenant="acme", status="completed") == 1
    calls = world.sample(
        "tollhouse_response_tool_calls_total", tenant="acme", kind="web_search_call"
    )
    assert calls == 2


def test_two_web_searches_in_one_response_cost_two(world: World) -> None:
    globex = world.tenant("globex")
    response = globex.responses.create(model="gpt-4o", input=TWO_SEARCHES, tools=[WEB])
    searches = [item for item in response.output if item.type == "web_search_call"]
    assert len(searches) == 2
    assert response.usage is not None
    row = world.row("globex")
    assert (row.web_search_calls, row.web_search_cost) == (2, 2 * WEB_SEARCH_CALL)
    assert row.total_cost == dollars(response.usage, GPT_4O) + 2 * WEB_SEARCH_CALL
    fees = world.sample("tollhouse_cost_usd_total", tenant="globex", component="tool_calls")
    tokens = world.sample("tollhouse_cost_usd_total", tenant="globex", component="tokens")
    assert fees == pytest.approx(float(2 * WEB_SEARCH_CALL))
    assert tokens == pytest.approx(float(dollars(response.usage, GPT_4O)))


def test_a_streamed_responses_tool_calls_are_counted(world: World) -> None:
    acme = world.tenant("acme")
    tools: Any = [WEB, CODE_AUTO_4G, IMAGES, MCP, FUNCTION]
    with acme.responses.with_streaming_response.create(
        model="gpt-4o", input=TWO_SEARCHES, tools=tools, stream=True
    ) as response:
        world.clock.now += 10  # the stream follows the clock: let it run to its end
        chunks = list(response.iter_bytes())
    [completed] = [
        json.loads(event.data)["response"]
        for event in SSEParser().feed(b"".join(chunks))
        if event.event == "response.completed"
    ]
    kinds = sorted(item["type"] for item in completed["output"] if item["type"].endswith("_call"))
    assert kinds == [
        "code_interpreter_call",
        "function_call",
        "image_generation_call",
        "mcp_call",
        "web_search_call",
        "web_search_call",
    ]
    report = world.report()
    [row] = report.rows
    assert (row.web_search_calls, row.image_generation_calls, row.other_tool_calls) == (2, 1, 3)
    # image generation has no price in the table: listed, never priced at zero
    [unpriced] = [line for line in report.unpriced if line.name.startswith("image_generation")]
    assert (unpriced.quantity, unpriced.unit) == (Decimal(1), "calls")
    assert row.has_unpriced_usage
    for kind, count in (("web_search_call", 2), ("code_interpreter_call", 1), ("mcp_call", 1)):
        assert (
            world.sample("tollhouse_response_tool_calls_total", tenant="acme", kind=kind) == count
        )
    # the auto container it ran on is one 4g container
    [call] = [item for item in completed["output"] if item["type"] == "code_interpreter_call"]
    with Session(world.proxy.tollhouse.engine) as session:
        container = session.get(Container, call["container_id"])
    assert container is not None
    assert (container.auto, container.memory_limit, container.tenant) == (True, "4g", "acme")
    assert row.container_sessions_4g == 1


def test_an_auto_container_is_billed_when_no_call_ran(world: World) -> None:
    acme = world.tenant("acme")
    response = acme.responses.create(
        model="gpt-4o", input="Run nothing", tools=[CODE_AUTO_4G], tool_choice="none"
    )
    assert not [item for item in response.output if item.type == "code_interpreter_call"]
    assert response.completed_at is not None
    acme.responses.retrieve(response.id)  # seen again: still one container
    row = world.row("acme")
    expected = container_dollars(
        response.created_at, int(response.completed_at), CONTAINER_4G_MINUTE
    )
    assert (row.container_sessions, row.container_sessions_4g) == (1, 1)
    assert row.container_cost == expected
    sessions = world.sample("tollhouse_container_sessions_total", tenant="acme", memory_limit="4g")
    assert sessions == 1


def test_cached_input_tokens_cost_the_cached_rate(world: World) -> None:
    acme = world.tenant("acme")
    first = acme.responses.create(model="gpt-4o", input="Tell me about toll roads in France")
    second = acme.responses.create(
        model="gpt-4o", input="And in Italy?", previous_response_id=first.id
    )
    assert first.usage is not None
    assert second.usage is not None
    cached = second.usage.input_tokens_details.cached_tokens
    assert cached > 0  # the first response's conversation is read from the cache
    row = world.row("acme")
    assert row.cached_tokens == cached
    assert row.token_cost == dollars(first.usage, GPT_4O) + dollars(second.usage, GPT_4O)
    # dearer had the cached part cost the full input rate
    full = (second.usage.input_tokens * GPT_4O[0] + second.usage.output_tokens * GPT_4O[2]) / (
        1_000_000
    )
    assert dollars(second.usage, GPT_4O) < full
    cached_metric = world.sample(
        "tollhouse_tokens_total", tenant="acme", model="gpt-4o", direction="cached_input"
    )
    assert cached_metric == cached


def test_each_tenant_costs_what_its_usage_costs_by_hand(world: World) -> None:
    acme, globex = world.tenant("acme"), world.tenant("globex")
    searched = acme.responses.create(model="gpt-4o", input=TWO_SEARCHES, tools=[WEB])
    contained = acme.responses.create(
        model="gpt-4o", input="Nothing to run", tools=[CODE_AUTO_4G], tool_choice="none"
    )
    flex = globex.responses.create(model="o4-mini", input="Why tolls?", service_tier="flex")
    container = globex.containers.create(name="scratch")  # 1g, 20 minutes after last use
    usages = [r.usage for r in (searched, contained, flex)]
    assert all(usage is not None for usage in usages)
    assert flex.service_tier == "flex"
    assert contained.completed_at is not None
    acme_cost = (
        dollars(searched.usage, GPT_4O)
        + 2 * WEB_SEARCH_CALL
        + dollars(contained.usage, GPT_4O)
        + container_dollars(contained.created_at, int(contained.completed_at), CONTAINER_4G_MINUTE)
    )
    globex_cost = dollars(flex.usage, O4_MINI, FLEX) + container_dollars(
        container.created_at, container.last_active_at or container.created_at, CONTAINER_1G_MINUTE
    )
    report = world.report()
    by_tenant = {row.tenant: row for row in report.rows}
    assert by_tenant["acme"].total_cost == acme_cost
    assert by_tenant["globex"].total_cost == globex_cost
    assert by_tenant["globex"].reasoning_tokens == flex.usage.output_tokens_details.reasoning_tokens  # type: ignore[union-attr]
    assert report.totals.total_cost == acme_cost + globex_cost
    assert not report.unpriced


def test_chat_completions_json_and_streamed(world: World) -> None:
    acme = world.tenant("acme")
    answered = acme.chat.completions.create(model="gpt-4o", messages=HELLO)
    usages = [answered.usage]
    with acme.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    ) as stream:
        usages += [chunk.usage for chunk in stream if chunk.usage is not None]
    with acme.chat.completions.create(model="gpt-4o", messages=HELLO, stream=True) as bare:
        assert all(chunk.usage is None for chunk in bare)  # counted, its tokens unknown
    assert len(usages) == 2
    row = world.row("acme")
    assert row.chat_completions == 3
    assert row.input_tokens == sum(u.prompt_tokens for u in usages if u is not None)
    assert row.token_cost == sum(chat_dollars(u, GPT_4O) for u in usages)
    assert world.sample("tollhouse_chat_completions_total", tenant="acme") == 3
    output = world.sample(
        "tollhouse_tokens_total", tenant="acme", model="gpt-4o", direction="output"
    )
    assert output == sum(u.completion_tokens for u in usages if u is not None)


def test_the_reconciler_finishes_responses_nobody_saw_finish(world: World) -> None:
    acme = world.tenant("acme")
    never_polled = acme.responses.create(model="gpt-4o", input="Go", background=True)
    with acme.responses.with_streaming_response.create(
        model="gpt-4o", input="Go on", background=True, stream=True
    ) as response:
        parser, head = SSEParser(), []
        for chunk in response.iter_bytes():
            head.extend(parser.feed(chunk))
            if len(head) >= 2:
                break  # cut, and never resumed
    cut = json.loads(head[0].data)["response"]["id"]
    assert settled(world.proxy)
    world.proxy.flush()
    assert world.reconcile() == 2  # both fetched: still queued upstream
    world.proxy.flush()
    assert world.sample("tollhouse_responses_total", tenant="acme", status="completed") == 0
    world.clock.now += 10  # both finished upstream; nobody asked again
    assert world.reconcile() == 2
    world.proxy.flush()
    assert world.reconcile() == 0  # nothing left to ask
    assert world.sample("tollhouse_responses_total", tenant="acme", status="completed") == 2
    with Session(world.proxy.tollhouse.engine) as session:
        stored = [session.get(Response, rid) for rid in (never_polled.id, cut)]
    assert [(s.status, s.input_tokens is not None) for s in stored if s] == [
        ("completed", True),
        ("completed", True),
    ]
    # what the reconciler recorded is what the upstream says
    finished = acme.responses.retrieve(never_polled.id)
    assert finished.usage is not None
    assert stored[0] is not None
    assert stored[0].input_tokens == finished.usage.input_tokens
    assert world.row("acme").responses == 2


def test_the_reconciler_finds_responses_whose_state_the_ledger_lost() -> None:
    clock = Clock()  # on the proxy's and the collector's clock: the response is a new one
    clock.now = float(int(time.time()))
    config = SimulatorConfig(clock=clock, queued_seconds=1.0, in_progress_seconds=3.0)
    with (
        serve(create_app(config)) as simulator,
        running_proxy(
            simulator.url + "/v1",
            policy=POLICY,
            upstream_api_key="sk-test",
            reconcile_after=0,
            clock=clock,
        ) as proxy,
    ):
        world = World(clock, proxy)
        acme = world.tenant("acme")
        lost = acme.responses.create(model="gpt-4o", input="Go", background=True)
        proxy.flush()
        with proxy.tollhouse.engine.begin() as connection:
            # the batch with its sighting never reached the ledger (a crash): only its
            # owner, written before the create answer went out, is there
            connection.execute(delete(Response))
        clock.now += 10
        assert world.reconcile() == 1
        proxy.flush()
        assert world.reconcile() == 0
        finished = acme.responses.retrieve(lost.id)
        assert finished.usage is not None
        engine = proxy.tollhouse.engine
        day = datetime.fromtimestamp(clock.now, UTC).replace(hour=0, minute=0, second=0)
        [row] = build_report(engine, load_pricing(), day, day + timedelta(days=2), day).rows
        assert (row.responses, row.input_tokens) == (1, finished.usage.input_tokens)
        assert world.sample("tollhouse_responses_total", tenant="acme", status="completed") == 1


def test_usage_seen_while_postgresql_is_down_is_replayed_once() -> None:
    clock = Clock()
    config = SimulatorConfig(clock=clock, queued_seconds=1.0, in_progress_seconds=3.0)
    with (
        serve(create_app(config)) as simulator,
        postgres_cluster() as database,
        running_proxy(
            simulator.url + "/v1",
            policy=POLICY,
            database_url=database.url,
            database_connect_timeout=2,
            database_statement_timeout=2,
            owner_write_timeout=0.5,
        ) as proxy,
    ):
        world = World(clock, proxy)
        acme = world.tenant("acme")
        started = acme.responses.create(
            model="gpt-4o", input=TWO_SEARCHES, tools=[WEB], background=True
        )
        proxy.flush()
        database.stop()
        clock.now += 10
        for _ in range(3):  # each poll's sighting is spooled, the terminal one three times
            final = acme.responses.retrieve(started.id)
            proxy.flush()
        assert proxy.tollhouse.writer.spooled()
        database.start()
        for _ in range(100):  # flush until the spool is empty
            proxy.flush()
            if not proxy.tollhouse.writer.spooled():
                break
        assert not proxy.tollhouse.writer.spooled()
        assert final.usage is not None
        row = world.row("acme")
        assert (row.responses, row.input_tokens, row.web_search_calls) == (
            1,
            final.usage.input_tokens,
            2,
        )
        assert row.token_cost == dollars(final.usage, GPT_4O)
        assert world.sample("tollhouse_responses_total", tenant="acme", status="completed") == 1
        calls = world.sample(
            "tollhouse_response_tool_calls_total", tenant="acme", kind="web_search_call"
        )
        assert calls == 2

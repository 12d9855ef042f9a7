"""``tollhouse migration``: the demo's tenants through tollhouse, counted against what the
simulator did, and the Responses estimate against a computation by hand."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tollhouse.api.classify import Kind
from tollhouse.cli.main import main
from tollhouse.config.policy import Cleanup
from tollhouse.demo import demo_policy, scenario
from tollhouse.demo.traffic import client_for
from tollhouse.ledger import store as ledger
from tollhouse.ledger.follow import Exchanged
from tollhouse.ledger.spool import dumps, loads
from tollhouse.ledger.store import Batch, Owned, Seen
from tollhouse.metering.assistants import AssistantSeen, assistant_seen, messages_added
from tollhouse.metering.meter import ObjectSeen, RunSeen, Usage
from tollhouse.metering.pricing import load_pricing
from tollhouse.report.migration import (
    build_migration,
    cached_share,
    container_seconds,
    equivalent,
)
from tollhouse.report.migration_query import fetch_migration_usage
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.state import Simulator

TENANT_OF_ASSISTANT = {"acme analyst": "acme", "globex support": "globex", "initech bot": "initech"}
# gpt-4o and gpt-4o-mini per 1M tokens (input, cached input, output) in the shipped table.
PRICES = {
    "gpt-4o": (Decimal("2.50"), Decimal("1.25"), Decimal("10.00")),
    "gpt-4o-mini": (Decimal("0.15"), Decimal("0.075"), Decimal("0.60")),
}


@pytest.fixture
def upstream() -> Iterator[tuple[ServerThread, Simulator]]:
    app = create_app(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05))
    with serve(app) as server:
        yield server, app.state.simulator


def migration(proxy: RunningProxy, until: datetime | None = None) -> dict[str, Any]:
    """The report as JSON, per tenant, up to ``until`` (a minute from now: this second's
    runs are in it)."""
    proxy.flush()
    url = proxy.tollhouse.settings.database_url
    until = until or datetime.now(UTC) + timedelta(minutes=1)
    period = ["--since", "2020-01-01", "--until", until.isoformat()]
    done = CliRunner().invoke(
        main, ["migration", "--database-url", url, *period, "--format", "json"]
    )
    assert done.exit_code == 0, done.output
    return {t["tenant"]: t for t in json.loads(done.output)["tenants"]}


def _record(sim: Simulator) -> dict[str, dict[str, Any]]:
    """Per tenant, what the simulator did for it (tenants known by their assistants' names)."""
    tenant_of = {a["id"]: TENANT_OF_ASSISTANT[a["name"]] for a in sim.assistants}
    record: dict[str, dict[str, Any]] = {}
    polls = Counter(
        r.path.rsplit("/", 1)[-1]
        for r in sim.requests
        if r.method == "GET" and re.fullmatch(r"/v1/threads/[^/]+/runs/[^/]+", r.path)
    )
    submits = Counter(
        r.path.split("/")[-2] for r in sim.requests if r.path.endswith("/submit_tool_outputs")
    )
    for thread_id, runs in sim.runs.items():
        for run in runs:
            tenant = tenant_of[run.obj["assistant_id"]]
            mine = record.setdefault(
                tenant,
                {"threads": set(), "runs": Counter(), "prompt": 0, "completion": 0, "polls": 0}
                | {"polled": 0, "rounds": 0, "ci": [], "fs": 0, "model": run.obj["model"]},
            )
            mine["threads"].add(thread_id)
            mine["runs"][run.obj["assistant_id"]] += 1
            mine["prompt"] += run.obj["usage"]["prompt_tokens"]
            mine["completion"] += run.obj["usage"]["completion_tokens"]
            mine["polls"] += polls[run.id]
            mine["polled"] += polls[run.id] > 0
            mine["rounds"] += submits[run.id]
            for step in run.steps:
                for call in step["step_details"].get("tool_calls", ()):
                    if call["type"] == "code_interpreter":
                        mine["ci"].append(step["created_at"])
                    mine["fs"] += call["type"] == "file_search"
    for mine in record.values():
        mine["messages"] = sum(
            1 for t in mine["threads"] for m in sim.messages[t] if m["role"] == "user"
        )
    return record


@pytest.mark.timeout(120)
def test_the_demo_tenants_counted_as_the_simulator_did_their_work_and_priced_on_responses(
    upstream: tuple[ServerThread, Simulator],
) -> None:
    server, sim = upstream
    with running_proxy(server.url + "/v1", policy=demo_policy()) as proxy:
        asyncio.run(scenario(proxy.url + "/v1", lambda _line: None))
        report = migration(proxy)
        record = _record(sim)
        assert set(report) == {"acme", "globex", "initech", "umbrella"}
        umbrella = report.pop("umbrella")  # already on Responses: nothing of its to move
        assert (umbrella["responses"], umbrella["assistants"]) == (len(sim.responses), [])
        assert umbrella["patterns"]["runs"] == 0
        assert Decimal(umbrella["assistants_cost"]["total"]) == 0
        for tenant, mine in record.items():
            shown = report[tenant]
            runs = {a["id"]: a["runs"] for a in shown["assistants"]}
            assert runs == dict(mine["runs"])
            patterns = shown["patterns"]
            assert patterns["threads"] == len(mine["threads"])
            assert patterns["runs"] == sum(mine["runs"].values())
            assert patterns["messages"] == mine["messages"]
            assert patterns["polls"] == mine["polls"]
            assert patterns["polled_runs"] == mine["polled"]
            assert patterns["requires_action_round_trips"] == mine["rounds"]
            assert (shown["prompt_tokens"], shown["completion_tokens"]) == (
                mine["prompt"],
                mine["completion"],
            )
            assert shown["file_search_calls"] == mine["fs"]
            assert shown["code_interpreter_sessions"] == (1 if mine["ci"] else 0)
        assert [p["patterns"]["streamed_runs"] for p in report.values()] == [1, 0, 0]
        assert record["globex"]["rounds"] == 3  # each order needed its tool's output

        acme, globex = report["acme"], report["globex"]
        assert [a["tools"] for a in acme["assistants"]] == [["code_interpreter", "file_search"]]
        (store,) = acme["assistants"][0]["vector_store_ids"]
        assert acme["assistants"][0]["equivalent"] == (
            f"prompt: gpt-4o; code_interpreter: container 1g; file_search: {store}"
        )
        assert globex["assistants"][0]["equivalent"] == "prompt: gpt-4o-mini; function order_status"

        # By hand: acme has no Responses traffic, so no cached share; its one session
        # becomes one 1g container, alive from its first call to its last plus 20 minutes,
        # per started minute at $0.0015 (5 at least); file search at $2.50 per 1,000.
        mine = record["acme"]
        rate_in, _, rate_out = PRICES["gpt-4o"]
        tokens = (mine["prompt"] * rate_in + mine["completion"] * rate_out) / 1_000_000
        minutes = max(5, math.ceil((max(mine["ci"]) - min(mine["ci"]) + 1200) / 60))
        expected = tokens + minutes * Decimal("0.0015") + mine["fs"] * Decimal("0.0025")
        assert Decimal(acme["responses_cost"]["total"]) == expected
        assert Decimal(acme["assistants_cost"]["total"]) == tokens + Decimal("0.03")
        assert acme["cached_share"] == "0"

        # Forty days on, what nobody touched for its cleanup TTL needs no migrating:
        # acme's thread and file (30 days), its vector store (7 days); assistants have none.
        later = datetime.now(UTC) + timedelta(days=40)
        idle = migration(proxy, later)["acme"]["unused"]
        assert idle == {"thread": 1, "file": 1, "vector_store": 1}


@pytest.mark.timeout(60)
def test_the_cached_share_of_a_tenants_responses_prices_its_runs_input(
    upstream: tuple[ServerThread, Simulator],
) -> None:
    server, _ = upstream

    async def both_protocols(base_url: str) -> tuple[int, int, int, int]:
        async with client_for(base_url, "umbrella") as client:
            assistant = await client.beta.assistants.create(
                model="gpt-4o", instructions="Answer briefly.", name="hybrid"
            )
            run = await client.beta.threads.create_and_run_poll(
                assistant_id=assistant.id,
                thread={"messages": [{"role": "user", "content": "What is a toll house?"}]},
                poll_interval_ms=20,
            )
            first = await client.responses.create(model="gpt-4o", input="What is a toll house?")
            second = await client.responses.create(
                model="gpt-4o", input="And a turnpike?", previous_response_id=first.id
            )
            assert run.usage is not None
            assert first.usage is not None
            assert second.usage is not None
            inputs = first.usage.input_tokens + second.usage.input_tokens
            cached = (
                first.usage.input_tokens_details.cached_tokens
                + second.usage.input_tokens_details.cached_tokens
            )
            return run.usage.prompt_tokens, run.usage.completion_tokens, inputs, cached

    with running_proxy(server.url + "/v1", policy=demo_policy()) as proxy:
        prompt, completion, inputs, cached = asyncio.run(both_protocols(proxy.url + "/v1"))
        hybrid = migration(proxy)["umbrella"]
    assert cached > 0
    share = Decimal(cached) / Decimal(inputs)
    assert Decimal(hybrid["cached_share"]) == share
    read = int((prompt * share).to_integral_value(rounding="ROUND_HALF_UP"))
    rate_in, rate_cached, rate_out = PRICES["gpt-4o"]
    by_hand = ((prompt - read) * rate_in + read * rate_cached + completion * rate_out) / 1_000_000
    assert Decimal(hybrid["responses_cost"]["total"]) == by_hand
    assert (
        Decimal(hybrid["assistants_cost"]["total"])
        == (prompt * rate_in + completion * rate_out) / 1_000_000
    )
    (assistant,) = hybrid["assistants"]
    assert assistant["instructions_chars"] == len("Answer briefly.")
    assert hybrid["patterns"]["messages"] == 1


@pytest.mark.parametrize(
    ("tools", "stores", "expected"),
    [
        (None, (), "prompt (details not seen by tollhouse)"),
        ((), (), "prompt: m"),
        (("code_interpreter",), (), "prompt: m; code_interpreter: container 1g"),
        (("file_search",), ("vs_1", "vs_2"), "prompt: m; file_search: vs_1, vs_2"),
        (("function:f", "function:g"), (), "prompt: m; function f; function g"),
    ],
)
def test_an_assistant_maps_onto_a_prompt_and_its_tools(
    tools: tuple[str, ...] | None, stores: tuple[str, ...], expected: str
) -> None:
    assert equivalent("m", tools, stores) == expected


@pytest.mark.parametrize(
    ("tokens", "share"),
    [(None, Decimal(0)), ((0, 0), Decimal(0)), ((400, 100), Decimal("0.25")), ((10, 99), 1)],
)
def test_the_cached_share(tokens: tuple[int, int] | None, share: Decimal) -> None:
    assert cached_share(tokens) == share


def test_a_session_becomes_a_container_alive_until_twenty_minutes_after_its_last_call() -> None:
    assert container_seconds([100, 160, 400]) == 300 + 1200
    assert container_seconds([]) == 1200


@pytest.mark.parametrize(
    ("operation", "body", "added"),
    [
        ("threads.create", b'{"messages": [{"role": "user"}, {"role": "user"}]}', 2),
        ("threads.create", b"{}", 0),
        ("threads.create_and_run", b'{"thread": {"messages": [{}]}}', 1),
        ("threads.runs.create", b'{"additional_messages": [{}, {}, {}]}', 3),
        ("threads.messages.create", b"", 1),
        ("threads.runs.create", b"not json", 0),
        ("assistants.create", b'{"messages": [{}]}', 0),
    ],
)
def test_messages_a_request_adds(operation: str, body: bytes, added: int) -> None:
    assert messages_added(operation, body) == added


def test_an_assistant_is_read_from_its_object_and_nothing_else() -> None:
    doc = {
        "object": "assistant",
        "id": "asst_1",
        "created_at": 1,
        "model": "gpt-4o",
        "instructions": "four",
        "tools": [{"type": "function", "function": {"name": "f"}}, {"type": "file_search"}, 7],
        "tool_resources": {"file_search": {"vector_store_ids": ["vs_1"]}},
    }
    assert assistant_seen(doc) == AssistantSeen(
        "asst_1", "gpt-4o", 4, ("function:f", "file_search"), ("vs_1",), 1
    )
    assert assistant_seen({**doc, "object": "thread"}) is None
    assert assistant_seen({**doc, "created_at": "soon"}) is None


def test_assistants_and_exchanges_survive_the_spool() -> None:
    batch = Batch(
        seen=[Seen("t", AssistantSeen("asst_1", None, 0, ("code_interpreter",), ("vs",), 5))],
        exchanges=[
            Exchanged("t", "threads.runs.retrieve", "assistants", 200, runs=("run_1",), at=9),
            Exchanged("t", "responses.create", "responses", 200, True, (), ("resp_1",), "f"),
        ],
    )
    again = loads(dumps(batch))
    assert again.seen == batch.seen
    assert again.exchanges == batch.exchanges


def test_the_report_reads_the_ledger_alike_on_sqlite_and_postgresql(engine: Engine) -> None:
    day = int(datetime(2026, 12, 1, tzinfo=UTC).timestamp())
    usage = Usage(1000, 100, 1100)
    runs = [
        RunSeen(f"run_{n}", "thread_1", "asst_1", "gpt-4o", "completed", day + n, day + n + 5,
                usage, True, False)
        for n in range(3)
    ]  # fmt: skip
    follow = [
        Exchanged("t", "threads.runs.create", "assistants", 200, True, ("run_0",), (),
                  thread="thread_1", messages=1),
        Exchanged("t", "threads.runs.retrieve", "assistants", 200, runs=("run_1",)),
        Exchanged("t", "threads.runs.submit_tool_outputs", "assistants", 200, runs=("run_2",)),
    ]  # fmt: skip
    thread = ObjectSeen("thread_1", Kind.THREAD, None, day, False, None, None)
    ledger.apply(
        engine,
        Batch(
            owned=[Owned("t", thread)],
            seen=[Seen("t", run) for run in runs]
            + [Seen("t", AssistantSeen("asst_1", "gpt-4o", 3, ("code_interpreter",), (), day))],
            exchanges=follow,
        ),
        day + 60,
    )
    since, until = datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    end = int(until.timestamp())
    found = fetch_migration_usage(engine, int(since.timestamp()), end, None, end)
    report = build_migration(found, load_pricing(), Cleanup(), since, until, until)
    (tenant,) = report.tenants
    assert (tenant.tenant, tenant.prompt_tokens, tenant.completion_tokens) == ("t", 3000, 300)
    p = tenant.patterns
    assert (p.threads, p.messages, p.runs) == (1, 1, 3)
    assert (p.streamed_runs, p.polled_runs, p.requires_action_round_trips) == (1, 1, 1)
    (assistant,) = tenant.assistants
    assert (assistant.runs, assistant.instructions_chars) == (3, 3)
    assert assistant.tools == ("code_interpreter",)
    price = (3000 * Decimal("2.50") + 300 * Decimal("10.00")) / 1_000_000
    assert tenant.assistants_cost.total == tenant.responses_cost.total == price

"""The simulator's organisation usage and costs API: what it served, by UTC day, per the spec."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest

from tests.servers import ServerThread, serve
from tests.test_simulator_responses import SPEC, Spec
from tests.upstreams import Clock
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.billing import session_starts

NOON = 1_796_040_000.0  # 2026-11-30 12:00 UTC
DAY_START = 1_795_996_800  # 2026-11-30 00:00 UTC
ADMIN = "sk-admin-simulator"
USAGE = (
    "completions",
    "code_interpreter_sessions",
    "vector_stores",
    "file_search_calls",
    "web_search_calls",
)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def upstream(clock: Clock) -> Iterator[ServerThread]:
    with serve(create_app(SimulatorConfig(clock=clock, bill_markup=1.0))) as server:
        yield server


def get(server: ServerThread, path: str, key: str = ADMIN, **params: Any) -> httpx.Response:
    params.setdefault("start_time", DAY_START)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.get(server.url + path, params=params, headers=headers, timeout=10)


def traffic(server: ServerThread, clock: Clock) -> dict[str, Any]:
    """A run with both tools in two threads, a chat completion and a response with web search."""
    client = openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)
    upload = client.files.create(file=("a.txt", io.BytesIO(b"w" * 4000)), purpose="assistants")
    store = client.vector_stores.create(name="docs", file_ids=[upload.id])
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "code_interpreter"}, {"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    clock.advance(10)  # the file is processed
    runs = []
    for _ in range(2):
        runs.append(client.beta.threads.create_and_run(assistant_id=assistant.id))
    clock.advance(60)
    finished = [client.beta.threads.runs.retrieve(r.id, thread_id=r.thread_id) for r in runs]
    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello there"}]
    )
    response = client.responses.create(
        model="gpt-4o", input="news today", tools=[{"type": "web_search"}]
    )
    client.close()
    return {"runs": finished, "chat": chat, "response": response, "store": store.id}


def test_usage_follows_what_was_served(upstream: ServerThread, clock: Clock) -> None:
    served = traffic(upstream, clock)
    runs, chat, response = served["runs"], served["chat"], served["response"]
    page = get(upstream, "/v1/organization/usage/completions", group_by="model").json()
    [bucket] = page["data"]
    assert (bucket["start_time"], bucket["end_time"]) == (DAY_START, DAY_START + 86_400)
    by_model = {result["model"]: result for result in bucket["results"]}
    assert by_model["gpt-4o"]["input_tokens"] == (
        sum(run.usage.prompt_tokens for run in runs) + response.usage.input_tokens
    )
    assert by_model["gpt-4o"]["output_tokens"] == (
        sum(run.usage.completion_tokens for run in runs) + response.usage.output_tokens
    )
    assert by_model["gpt-4o"]["num_model_requests"] == 3
    assert by_model["gpt-4o-mini"]["input_tokens"] == chat.usage.prompt_tokens
    sessions = get(upstream, "/v1/organization/usage/code_interpreter_sessions").json()
    assert sessions["data"][0]["results"][0]["num_sessions"] == 2  # one per thread
    searches = get(upstream, "/v1/organization/usage/file_search_calls").json()
    assert searches["data"][0]["results"][0]["num_requests"] == 2
    web = get(upstream, "/v1/organization/usage/web_search_calls", group_by="model").json()
    assert web["data"][0]["results"][0]["num_requests"] == 1
    stores = get(upstream, "/v1/organization/usage/vector_stores").json()
    assert stores["data"][0]["results"][0]["usage_bytes"] == 4000


def test_costs_price_each_line_item(upstream: ServerThread, clock: Clock) -> None:
    served = traffic(upstream, clock)
    costs = get(upstream, "/v1/organization/costs", group_by="line_item").json()
    lines = {r["line_item"]: r for r in costs["data"][0]["results"]}
    chat = served["chat"]
    assert lines["gpt-4o-mini, input"]["quantity"] == chat.usage.prompt_tokens
    assert lines["gpt-4o-mini, input"]["amount"]["value"] == pytest.approx(
        chat.usage.prompt_tokens * 0.15 / 1e6
    )
    assert lines["Code Interpreter sessions"]["amount"] == {"value": 0.06, "currency": "usd"}
    assert lines["File search tool calls"]["amount"]["value"] == 0  # Assistants: no call fee
    assert lines["Web search tool calls"]["amount"]["value"] == pytest.approx(0.01)
    total = get(upstream, "/v1/organization/costs").json()["data"][0]["results"]
    assert [r["line_item"] for r in total] == [None]
    assert total[0]["amount"]["value"] == pytest.approx(
        sum(r["amount"]["value"] for r in lines.values())
    )


def test_a_markup_inflates_the_costs_only(clock: Clock) -> None:
    with serve(create_app(SimulatorConfig(clock=clock, bill_markup=1.5))) as server:
        traffic(server, clock)
        costs = get(server, "/v1/organization/costs", group_by="line_item").json()
    lines = {r["line_item"]: r for r in costs["data"][0]["results"]}
    assert lines["Code Interpreter sessions"]["amount"]["value"] == pytest.approx(0.09)
    assert lines["Code Interpreter sessions"]["quantity"] == 2


def test_buckets_are_utc_days_and_pages_follow(upstream: ServerThread, clock: Clock) -> None:
    traffic(upstream, clock)
    first = get(upstream, "/v1/organization/costs", start_time=DAY_START - 2 * 86_400, limit=2)
    page = first.json()
    assert [b["start_time"] for b in page["data"]] == [DAY_START - 2 * 86_400, DAY_START - 86_400]
    assert all(b["results"] == [] for b in page["data"])
    assert page["has_more"] is True
    rest = get(
        upstream,
        "/v1/organization/costs",
        start_time=DAY_START - 2 * 86_400,
        limit=2,
        page=page["next_page"],
    ).json()
    assert [b["start_time"] for b in rest["data"]] == [DAY_START]
    assert rest["data"][0]["results"]
    assert (rest["has_more"], rest["next_page"]) == (False, None)
    tomorrow = get(upstream, "/v1/organization/costs", start_time=DAY_START + 86_400).json()
    assert tomorrow["data"] == []
    elsewhere = get(upstream, "/v1/organization/costs", project_ids="proj_other").json()
    assert elsewhere["data"][0]["results"] == []


@pytest.mark.parametrize(
    ("key", "status", "code"),
    [
        ("", 401, "invalid_api_key"),
        ("sk-admin-wrong-key-0000", 401, "invalid_api_key"),
        ("sk-test", 403, None),
    ],
)
def test_only_the_admin_key_reads_the_bill(
    upstream: ServerThread, key: str, status: int, code: str | None
) -> None:
    answer = get(upstream, "/v1/organization/usage/completions", key=key)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == code
    assert "sk-admin-wrong-key-0000" not in error["message"]


def test_only_daily_buckets_are_served(upstream: ServerThread) -> None:
    answer = get(upstream, "/v1/organization/usage/completions", bucket_width="1h")
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "bucket_width"


def test_answers_match_the_spec(upstream: ServerThread, clock: Clock) -> None:
    traffic(upstream, clock)
    spec = Spec(SPEC)
    page = spec.validator("#/components/schemas/UsageResponse")
    error = spec.validator("#/components/schemas/ErrorResponse")
    grouped = {"completions": "model", "web_search_calls": "model"}
    for name in USAGE:
        params = {"group_by": grouped[name]} if name in grouped else {"group_by": "project_id"}
        answer = get(upstream, f"/v1/organization/usage/{name}", **params)
        assert list(page.iter_errors(answer.json())) == [], name
        assert answer.json()["data"][0]["results"], name
    for params in ({}, {"group_by": "line_item"}):
        answer = get(upstream, "/v1/organization/costs", **params)
        assert list(page.iter_errors(answer.json())) == []
    refused = get(upstream, "/v1/organization/costs", key="sk-test")
    assert list(error.iter_errors(refused.json())) == []


@pytest.mark.parametrize(
    ("calls", "starts"),
    [
        ([], []),
        ([10], [10]),
        ([10, 20, 3609], [10]),
        ([10, 3610], [10, 3610]),
        ([5000, 10, 3700], [10, 3700]),
    ],
)
def test_a_session_covers_the_hour_after_its_first_call(
    calls: list[int], starts: list[int]
) -> None:
    assert session_starts(calls) == starts

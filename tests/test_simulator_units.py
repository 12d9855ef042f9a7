"""Pure parts of the simulator: durations, classes, buckets, pagination, search, tokens."""

from __future__ import annotations

import pytest

from tollhouse_simulator.config import SimulatorConfig
from tollhouse_simulator.errors import SimulatorError
from tollhouse_simulator.gate import check_beta, check_key, mask_key
from tollhouse_simulator.ratelimit import RateLimiter, go_duration, request_class
from tollhouse_simulator.search import Document, matches, score, search, validate_filter
from tollhouse_simulator.steps import Planned, plan_first_leg
from tollhouse_simulator.store import ListParams, Table, list_params, new_id
from tollhouse_simulator.timeline import Timeline
from tollhouse_simulator.tokens import (
    add_usage,
    chunks,
    count_tokens,
    exceeded_limit,
    prompt_tokens,
    usage,
)


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.012, "12ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.25, "59.25s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (61.5, "1m1.5s"),
        (3600, "1h0m0s"),
        (3723, "1h2m3s"),
    ],
)
def test_go_duration(seconds: float, expected: str) -> None:
    assert go_duration(seconds) == expected


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("POST", "/v1/threads/runs", "RUN_CREATE"),
        ("POST", "/v1/threads/thread_abc/runs", "RUN_CREATE"),
        ("POST", "/v1/threads/thread_abc/runs/run_1/cancel", "POST"),
        ("POST", "/v1/threads/thread_abc/runs/run_1/submit_tool_outputs", "POST"),
        ("POST", "/v1/threads", "POST"),
        ("GET", "/v1/threads/thread_abc/runs", "GET"),
        ("DELETE", "/v1/assistants/asst_1", "DELETE"),
    ],
)
def test_request_class(method: str, path: str, expected: str) -> None:
    assert request_class(method, path) == expected


def test_bucket_refuses_when_empty_and_refills_continuously() -> None:
    limiter = RateLimiter({"GET": 2}, "org-x")
    first = limiter.admit("GET", 100.0)
    assert first["x-ratelimit-limit-requests"] == "2"
    assert first["x-ratelimit-remaining-requests"] == "1"
    assert first["x-ratelimit-reset-requests"] == "30s"
    limiter.admit("GET", 100.0)
    with pytest.raises(SimulatorError) as refused:
        limiter.admit("GET", 100.0)
    assert refused.value.status == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.type == "requests"
    assert refused.value.headers["retry-after"] == "30"
    assert refused.value.headers["retry-after-ms"] == "30000"
    assert "Limit 2, Used 2, Requested 1" in refused.value.message
    assert limiter.admit("GET", 130.0)["x-ratelimit-remaining-requests"] == "0"
    assert limiter.admit("POST", 100.0) == {}  # no limit configured for this class


def test_config_refuses_unknown_request_class() -> None:
    with pytest.raises(ValueError, match="unknown request class"):
        SimulatorConfig(rate_limits={"PATCH": 3})


@pytest.mark.parametrize(
    ("key", "masked"),
    [("sk-abcdefghijklmnopqrstuvwxyz", "sk-ab***wxyz"), ("sk-bad", "sk***d"), ("x", "***")],
)
def test_mask_key_hides_the_middle(key: str, masked: str) -> None:
    assert mask_key(key) == masked


def test_check_key_and_beta() -> None:
    check_key("Bearer sk-1", None)
    check_key("Bearer sk-1", frozenset({"sk-1"}))
    for header in (None, "", "Bearer ", "Basic abc"):
        with pytest.raises(SimulatorError) as missing:
            check_key(header, None)
        assert (missing.value.status, missing.value.code) == (401, "invalid_api_key")
    with pytest.raises(SimulatorError) as wrong:
        check_key("Bearer sk-wrong-key-123", frozenset({"sk-1"}))
    assert "sk-wrong-key-123" not in wrong.value.message
    check_beta("/v1/files", None)
    check_beta("/v1/threads/x", "assistants=v2")
    check_beta("/v1/threads/x", "other=v1, assistants=v2")
    with pytest.raises(SimulatorError) as beta:
        check_beta("/v1/vector_stores", "assistants=v1")
    assert beta.value.code == "invalid_beta"


def _table(count: int) -> Table[int]:
    table: Table[int] = Table()
    for index in range(count):
        table.insert(f"id{index}", 1000 + index // 2, index)  # pairs share a timestamp
    return table


def _ids(table: Table[int], **params: str) -> tuple[list[str], bool]:
    page = table.page(list_params(params))
    return [row[0] for row in page.rows], page.has_more


def test_pagination_orders_by_time_then_insertion() -> None:
    table = _table(5)
    assert _ids(table, order="asc") == (["id0", "id1", "id2", "id3", "id4"], False)
    assert _ids(table) == (["id4", "id3", "id2", "id1", "id0"], False)
    assert _ids(table, limit="2") == (["id4", "id3"], True)
    assert _ids(table, limit="2", after="id3") == (["id2", "id1"], True)
    assert _ids(table, limit="2", after="id1") == (["id0"], False)
    assert _ids(table, order="asc", limit="2", after="id1") == (["id2", "id3"], True)
    assert _ids(table, limit="2", before="id1") == (["id3", "id2"], True)
    assert _ids(table, order="asc", limit="3", before="id3") == (["id0", "id1", "id2"], False)


def test_pagination_continues_after_a_deleted_cursor() -> None:
    table = _table(4)
    table.remove("id2")
    assert _ids(table, after="id2") == (["id1", "id0"], False)


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "nope"}, "after"),
    ],
)
def test_invalid_list_parameters(query: dict[str, str], param: str) -> None:
    with pytest.raises(SimulatorError) as invalid:
        _table(1).page(list_params(query))
    assert (invalid.value.status, invalid.value.param) == (400, param)


def test_list_params_defaults() -> None:
    assert list_params({}) == ListParams(20, "desc", None, None)
    assert list_params({}, default_limit=10_000, max_limit=10_000).limit == 10_000


def test_new_ids_carry_prefix_and_differ() -> None:
    first, second = new_id("file-"), new_id("file-")
    assert first.startswith("file-")
    assert len(first) == 29
    assert first != second


def test_search_scores_words_and_filters_attributes() -> None:
    docs = [
        Document("f1", "a.txt", "the bridge toll is paid in silver", {"lang": "en", "year": 2020}),
        Document("f2", "b.txt", "nothing relevant here", {"lang": "en", "year": 2024}),
        Document("f3", "c.txt", "silver bridge", {"lang": "de", "year": 2024}),
    ]
    assert score("silver bridge", "silver bridge") == 1.0
    assert score("silver gold", "only silver") == 0.45
    hits = search(docs, ["silver bridge"], max_results=10)
    assert [hit.file_id for hit in hits] == ["f3", "f1"]
    english = validate_filter({"type": "eq", "key": "lang", "value": "en"})
    assert [hit.file_id for hit in search(docs, ["silver"], max_results=5, filters=english)] == [
        "f1"
    ]
    recent = {"type": "and", "filters": [{"type": "gte", "key": "year", "value": 2024}]}
    assert matches(recent, {"year": 2024})
    assert not matches(recent, {"year": 2020})
    assert matches({"type": "in", "key": "lang", "value": ["de", "fr"]}, {"lang": "de"})
    with pytest.raises(SimulatorError):
        validate_filter({"type": "like", "key": "lang", "value": "e"})


def test_tokens_are_deterministic() -> None:
    assert count_tokens("") == 0
    assert count_tokens("one two three") == 4
    assert prompt_tokens("be nice", ["hello world"]) == 8 + 3 + 4 + 3
    assert add_usage([{"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}, None]) == {
        "prompt_tokens": 2,
        "completion_tokens": 3,
        "total_tokens": 5,
    }
    text = "a reply made of several words to stream"
    pieces = chunks(text, 3)
    assert len(pieces) == 3
    assert "".join(pieces) == text


@pytest.mark.parametrize(
    ("used", "max_prompt", "max_completion", "reason"),
    [
        (usage(300, 10), None, None, None),
        (usage(300, 10), 300, 256, None),
        (usage(301, 10), 300, None, "max_prompt_tokens"),
        (usage(10, 257), None, 256, "max_completion_tokens"),
    ],
)
def test_exceeded_limit(
    used: dict[str, int], max_prompt: int | None, max_completion: int | None, reason: str | None
) -> None:
    assert exceeded_limit(used, max_prompt, max_completion) == reason


@pytest.mark.parametrize(
    ("tools", "choice", "kinds"),
    [
        ([], "auto", ["message"]),
        ([{"type": "code_interpreter"}], "auto", ["code_interpreter", "message"]),
        (
            [{"type": "function", "function": {"name": "f"}}, {"type": "file_search"}],
            "auto",
            ["file_search", "function"],
        ),
        ([{"type": "code_interpreter"}], "none", ["message"]),
        (
            [{"type": "function", "function": {"name": "f"}}, {"type": "code_interpreter"}],
            {"type": "function", "function": {"name": "f"}},
            ["function"],
        ),
    ],
)
def test_first_leg_plan(tools: list[dict[str, object]], choice: object, kinds: list[str]) -> None:
    plan = plan_first_leg(tools, choice)
    assert [item.kind for item in plan] == kinds
    assert all(isinstance(item, Planned) for item in plan)


def test_timeline_applies_due_actions_in_order_with_planned_times() -> None:
    timeline = Timeline()
    applied: list[tuple[str, float]] = []
    timeline.at(2.0, lambda at: applied.append(("b", at)))
    timeline.at(1.0, lambda at: applied.append(("a", at)))
    timeline.at(2.0, lambda at: applied.append(("c", at)))
    events = timeline.subscribe()
    timeline.emit("x", lambda: {"n": 1})
    timeline.advance(1.5)
    assert applied == [("a", 1.0)]
    assert timeline.next_due() == 2.0
    timeline.advance(10.0)
    assert applied == [("a", 1.0), ("b", 2.0), ("c", 2.0)]
    assert events == [("x", {"n": 1})]
    timeline.unsubscribe(events)
    timeline.emit("y", lambda: {})
    assert events == [("x", {"n": 1})]

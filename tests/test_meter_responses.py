"""Usage of the Responses era from real simulator answers and streams, and from hand-made cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest

from tests.servers import serve
from tollhouse.api.classify import ROUTES, Operation, classify
from tollhouse.metering.meter import (
    ObjectSeen,
    RunSeen,
    Seen,
    StreamMeter,
    observe_event,
    observe_event_all,
    observe_json,
    observe_json_all,
)
from tollhouse.metering.responses import (
    ChatCompletionSeen,
    ContainerSeen,
    ResponseSeen,
    TokenUsage,
    ToolItemSeen,
)
from tollhouse.metering.sse import SSEEvent, SSEParser
from tollhouse_simulator import SimulatorConfig, create_app

START = 1_700_000_000
SUCCESSORS = (ResponseSeen, ToolItemSeen, ContainerSeen, ChatCompletionSeen)
TWO_SEARCHES = "Search for tollhouse history, then search turnpike prices"
WEB_TOOL: Any = {"type": "web_search"}
CODE_AUTO: Any = {"type": "code_interpreter", "container": {"type": "auto"}}
IMAGES: Any = {"type": "image_generation", "size": "1024x1024", "quality": "low"}
MCP_NEVER: Any = {
    "type": "mcp",
    "server_label": "wiki",
    "server_url": "https://mcp.example.com",
    "require_approval": "never",
}
FUNCTION: Any = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}
ALL_TOOLS: Any = [WEB_TOOL, CODE_AUTO, IMAGES, MCP_NEVER, FUNCTION]
HELLO: Any = [{"role": "user", "content": "Hello there"}]


def describe(seen: Seen) -> str:
    """A short, exact summary of one observation, for tables."""
    if isinstance(seen, ResponseSeen):
        flags = [
            flag
            for flag, on in (
                ("bg", seen.background),
                ("conv", seen.conversation_id),
                ("prev", seen.previous_response_id),
            )
            if on
        ]
        usage, done = "usage" if seen.usage else "-", "done" if seen.finished_at else "-"
        return " ".join(["resp", seen.status, usage, done, *flags])
    if isinstance(seen, ToolItemSeen):
        container = "cntr" if seen.container_id else None
        extras = (seen.action, seen.tool, container, seen.size, seen.quality)
        orphan = [] if seen.response_id else ["orphan"]
        kind = seen.type.removesuffix("_call")
        return " ".join([kind, seen.status or "-", *(e for e in extras if e), *orphan])
    if isinstance(seen, ContainerSeen):
        minutes = "-" if seen.expires_after_minutes is None else str(seen.expires_after_minutes)
        return f"container {seen.status} {seen.memory_limit or '-'} {minutes}"
    if isinstance(seen, ChatCompletionSeen):
        return f"chat {'usage' if seen.usage else '-'}"
    if isinstance(seen, ObjectSeen):
        return f"new {seen.kind}"
    return type(seen).__name__


def successors(seen: list[Seen]) -> list[Seen]:
    return [s for s in seen if isinstance(s, SUCCESSORS)]


def meter(chunks: list[bytes]) -> list[Seen]:
    """Everything a whole stream reports, fed as it was relayed, then ended."""
    stream_meter = StreamMeter()
    return [
        seen for chunk in chunks for seen in stream_meter.feed_all(chunk)
    ] + stream_meter.close()


def of(kind: type[Any], seen: list[Seen]) -> list[Any]:
    return [s for s in seen if isinstance(s, kind)]


def terminal(seen: list[Seen]) -> list[ResponseSeen]:
    return [s for s in of(ResponseSeen, seen) if s.terminal]


def items_by_id(seen: list[Seen]) -> dict[str, ToolItemSeen]:
    """Tool items as whoever counts them keeps them: one per id, the latest sighting."""
    return {item.id: item for item in of(ToolItemSeen, seen)}


# -- answers and streams recorded from the simulator ---------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


Recorded = tuple[Operation, int, bytes]


def record(response: Any) -> Recorded:
    http = response.http_response
    return classify(http.request.method, http.request.url.path), http.status_code, http.content


@dataclass
class Upstream:
    """What the module recorded: JSON answers and stream chunks, by name."""

    answers: dict[str, Recorded] = field(default_factory=dict)
    streams: dict[str, list[bytes]] = field(default_factory=dict)


def record_responses(client: openai.OpenAI, clock: FakeClock, up: Upstream) -> None:
    raw, answers = client.responses.with_raw_response, up.answers
    answers["plain"] = record(raw.create(model="gpt-4o", input="Tell me a story"))
    answers["two web searches"] = record(
        raw.create(model="gpt-4o", input=TWO_SEARCHES, tools=[WEB_TOOL])
    )
    answers["preview web search"] = record(
        raw.create(model="gpt-4o", input="Search for tolls", tools=[{"type": "web_search_preview"}])
    )
    answers["auto container"] = record(raw.create(model="gpt-4o", input="Run", tools=[CODE_AUTO]))
    code = json.loads(answers["auto container"][2])["output"][0]
    answers["its container"] = record(
        client.containers.with_raw_response.retrieve(code["container_id"])
    )
    answers["every tool"] = record(raw.create(model="gpt-4o", input="Go", tools=ALL_TOOLS))
    answers["reasoning"] = record(raw.create(model="o4-mini", input="Why do tolls exist?"))
    first = json.loads(answers["plain"][2])["id"]
    answers["previous response"] = record(
        raw.create(model="gpt-4o", input="And then?", previous_response_id=first)
    )
    talk = client.conversations.create().id
    answers["conversation"] = record(raw.create(model="gpt-4o", input="Hi", conversation=talk))
    answers["incomplete"] = record(
        raw.create(model="gpt-4o", input="word " * 40, max_output_tokens=16)
    )
    answers["flex"] = record(raw.create(model="o3", input="x", service_tier="flex"))

    background = raw.create(model="gpt-4o", input=TWO_SEARCHES, background=True, tools=[WEB_TOOL])
    answers["background queued"] = record(background)
    response_id = background.parse().id
    clock.now += 2  # queued for 1 s, then 3 s of work
    answers["background polled working"] = record(raw.retrieve(response_id))
    clock.now += 3
    answers["background polled done"] = record(raw.retrieve(response_id))
    clock.now += 60
    answers["background polled again"] = record(raw.retrieve(response_id))

    slow = client.responses.create(model="gpt-4o", input="slow", background=True)
    clock.now += 2
    answers["cancelled"] = record(raw.cancel(slow.id))
    answers["cancelled polled"] = record(raw.retrieve(slow.id))
    answers["input items"] = record(client.responses.input_items.with_raw_response.list(first))
    answers["deleted"] = record(raw.delete(first))
    try:
        raw.retrieve(first)
    except openai.NotFoundError as error:
        http = error.response
        answers["not found"] = (classify("GET", http.request.url.path), 404, http.content)


def record_containers(client: openai.OpenAI, clock: FakeClock, up: Upstream) -> None:
    raw = client.containers.with_raw_response
    created = raw.create(
        name="c", memory_limit="4g", expires_after={"anchor": "last_active_at", "minutes": 5}
    )
    up.answers["container created"] = record(created)
    up.answers["containers listed"] = record(raw.list(limit=2))
    clock.now += 3600
    up.answers["container expired"] = record(raw.retrieve(created.parse().id))


def record_chat(client: openai.OpenAI, up: Upstream) -> None:
    raw = client.chat.completions.with_raw_response
    up.answers["chat"] = record(raw.create(model="o3", messages=HELLO, n=2))
    up.answers["chat stored"] = record(raw.create(model="gpt-4o", messages=HELLO, store=True))
    stored = json.loads(up.answers["chat stored"][2])["id"]
    up.answers["chat retrieved"] = record(raw.retrieve(stored))
    streaming = client.chat.completions.with_streaming_response
    for name, options in (("with usage", {"include_usage": True}), ("without usage", None)):
        extra: dict[str, Any] = {} if options is None else {"stream_options": options}
        with streaming.create(model="gpt-4o", messages=HELLO, stream=True, **extra) as response:
            up.streams[f"chat {name}"] = list(response.iter_bytes())


def record_streams(client: openai.OpenAI, clock: FakeClock, up: Upstream) -> None:
    streaming = client.responses.with_streaming_response
    with streaming.create(
        model="gpt-4o", input=TWO_SEARCHES, tools=ALL_TOOLS, stream=True
    ) as response:
        clock.now += 10  # the stream follows the clock: let it run to the end
        up.streams["streamed"] = list(response.iter_bytes())
    streamed_id = first_response_id(up.streams["streamed"])
    up.answers["streamed retrieved"] = record(
        client.responses.with_raw_response.retrieve(streamed_id)
    )

    with streaming.create(
        model="gpt-4o", input=TWO_SEARCHES, tools=ALL_TOOLS, background=True, stream=True
    ) as response:
        parser, head, events = SSEParser(), [], 0
        for chunk in response.iter_bytes():  # created and queued; then the connection drops
            head.append(chunk)
            events += len(parser.feed(chunk))
            if events >= 2:
                break
    up.streams["broken"] = head
    resumed_id = first_response_id(head)
    clock.now += 10
    for after in (1, 2, 3, 9):
        with streaming.retrieve(resumed_id, stream=True, starting_after=after) as response:
            up.streams[f"resumed after {after}"] = list(response.iter_bytes())
    with streaming.retrieve(resumed_id, stream=True) as response:
        up.streams["replayed"] = list(response.iter_bytes())
    up.answers["resumed retrieved"] = record(
        client.responses.with_raw_response.retrieve(resumed_id)
    )


def first_response_id(chunks: list[bytes]) -> str:
    [first, *_] = SSEParser().feed(b"".join(chunks))
    return str(json.loads(first.data)["response"]["id"])


@pytest.fixture(scope="module")
def upstream() -> Upstream:
    clock = FakeClock()
    config = SimulatorConfig(clock=clock, queued_seconds=1.0, in_progress_seconds=3.0)
    up = Upstream()
    with (
        serve(create_app(config)) as server,
        openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        record_responses(client, clock, up)
        record_containers(client, clock, up)
        record_chat(client, up)
        record_streams(client, clock, up)
    return up


WEB = "web_search completed search web_search"
CODE = "code_interpreter completed cntr"
DONE = "resp completed usage done"
NEW = "new response"
EVERY_CALL = [
    WEB,
    CODE,
    "image_generation completed 1024x1024 low",
    "mcp completed",
    "function completed",
]
RECORDED = [
    ("plain", [NEW, DONE]),
    ("two web searches", [NEW, DONE, WEB, WEB]),
    ("preview web search", [NEW, DONE, "web_search completed search web_search_preview"]),
    ("auto container", [NEW, DONE, CODE]),
    ("its container", ["container active 1g 20"]),
    ("every tool", [NEW, DONE, *EVERY_CALL]),
    ("reasoning", [NEW, DONE]),
    ("previous response", [NEW, f"{DONE} prev"]),
    ("conversation", [NEW, f"{DONE} conv"]),
    ("incomplete", [NEW, "resp incomplete usage -"]),
    ("flex", [NEW, DONE]),
    ("background queued", [NEW, "resp queued - - bg"]),
    # the first search done, the second under way
    (
        "background polled working",
        ["resp in_progress - - bg", WEB, "web_search in_progress search web_search"],
    ),
    ("background polled done", [f"{DONE} bg", WEB, WEB]),
    ("background polled again", [f"{DONE} bg", WEB, WEB]),
    ("cancelled", ["resp cancelled - - bg"]),
    ("cancelled polled", ["resp cancelled - - bg"]),
    ("input items", []),
    ("deleted", []),
    ("not found", []),
    ("container created", ["new container", "container active 4g 5"]),
    ("containers listed", ["container active 4g 5", "container active 1g 20"]),
    ("container expired", ["container expired 4g 5"]),
    ("chat", ["new chat_completion", "chat usage"]),
    ("chat stored", ["new chat_completion", "chat usage"]),
    ("chat retrieved", []),  # a stored completion read again is no new use
    ("streamed retrieved", [DONE, WEB, *EVERY_CALL]),
    ("resumed retrieved", [f"{DONE} bg", WEB, *EVERY_CALL]),
]


def test_every_recorded_answer_has_a_row(upstream: Upstream) -> None:
    assert sorted(upstream.answers) == sorted(name for name, _ in RECORDED)


@pytest.mark.parametrize(("name", "expected"), RECORDED, ids=[row[0] for row in RECORDED])
def test_recorded_answers(upstream: Upstream, name: str, expected: list[str]) -> None:
    operation, status, body = upstream.answers[name]
    seen = observe_json_all(operation, status, body)
    assert [describe(s) for s in seen] == expected
    assert observe_json(operation, status, body) == [s for s in seen if s not in successors(seen)]


def recorded_responses(upstream: Upstream) -> Iterator[tuple[dict[str, Any], list[Seen]]]:
    """Each response the simulator answered with, and what its answer reported."""
    for operation, status, body in upstream.answers.values():
        document = json.loads(body)
        if status == 200 and document.get("object") == "response" and "output" in document:
            yield document, successors(observe_json_all(operation, status, body))


def token_usage(usage: dict[str, Any] | None) -> TokenUsage | None:
    if usage is None:
        return None
    given, written = usage["input_tokens_details"], usage["output_tokens_details"]
    return TokenUsage(
        usage["input_tokens"],
        given["cached_tokens"],
        given["cache_write_tokens"],
        usage["output_tokens"],
        written["reasoning_tokens"],
        usage["total_tokens"],
    )


def test_recorded_responses_match_their_bodies(upstream: Upstream) -> None:
    checked = 0
    for doc, seen in recorded_responses(upstream):
        [response] = of(ResponseSeen, seen)
        assert response == ResponseSeen(
            id=doc["id"],
            model=doc["model"],
            status=doc["status"],
            created_at=doc["created_at"],
            finished_at=doc.get("completed_at"),
            service_tier=doc["service_tier"],
            usage=token_usage(doc.get("usage")),  # absent until the response ends
            conversation_id=(doc.get("conversation") or {}).get("id"),
            previous_response_id=doc.get("previous_response_id"),
            background=doc["background"],
            auto_container=next(
                (
                    tool["container"].get("memory_limit") or "1g"
                    for tool in doc["tools"]
                    if tool["type"] == "code_interpreter" and isinstance(tool["container"], dict)
                ),
                None,
            ),
        )
        assert response.terminal == (doc["status"] in ("completed", "incomplete", "cancelled"))
        calls = [item for item in doc["output"] if item["type"].endswith("_call")]
        items = of(ToolItemSeen, seen)
        assert [(i.id, i.type, i.status, i.response_id) for i in items] == [
            (c["id"], c["type"], c["status"], doc["id"]) for c in calls
        ]
        assert [i.container_id for i in items] == [c.get("container_id") for c in calls]
        checked += 1
    assert checked == 18


def test_usage_breakdowns_come_through(upstream: Upstream) -> None:
    [reasoning] = of(ResponseSeen, observe_json_all(*upstream.answers["reasoning"]))
    [following] = of(ResponseSeen, observe_json_all(*upstream.answers["previous response"]))
    [talk] = of(ResponseSeen, observe_json_all(*upstream.answers["conversation"]))
    [flex] = of(ResponseSeen, observe_json_all(*upstream.answers["flex"]))
    assert reasoning.usage is not None
    assert 0 < reasoning.usage.reasoning_tokens < reasoning.usage.output_tokens
    assert following.usage is not None
    assert 0 < following.usage.cached_tokens < following.usage.input_tokens
    assert following.previous_response_id == json.loads(upstream.answers["plain"][2])["id"]
    assert talk.conversation_id is not None
    assert talk.conversation_id.startswith("conv_")
    assert flex.service_tier == "flex"


def test_two_web_searches_are_two_items(upstream: Upstream) -> None:
    seen = observe_json_all(*upstream.answers["two web searches"])
    [response] = of(ResponseSeen, seen)
    searches = of(ToolItemSeen, seen)
    assert len({item.id for item in searches}) == 2
    assert {(i.type, i.response_id, i.tool, i.action) for i in searches} == {
        ("web_search_call", response.id, "web_search", "search")
    }


def test_an_auto_containers_code_call_carries_its_container(upstream: Upstream) -> None:
    [call] = of(ToolItemSeen, observe_json_all(*upstream.answers["auto container"]))
    [container] = of(ContainerSeen, observe_json_all(*upstream.answers["its container"]))
    doc = json.loads(upstream.answers["its container"][2])
    assert call.type == "code_interpreter_call"
    assert call.container_id == container.id == doc["id"]
    assert container == ContainerSeen(
        doc["id"], "active", doc["created_at"], doc["last_active_at"], "1g", 20
    )


def test_a_background_response_reports_usage_only_once_terminal(upstream: Upstream) -> None:
    polls = [
        of(ResponseSeen, observe_json_all(*upstream.answers[f"background {name}"]))[0]
        for name in ("queued", "polled working", "polled done", "polled again")
    ]
    assert len({poll.id for poll in polls}) == 1
    assert [(p.status, p.usage is not None, p.terminal) for p in polls] == [
        ("queued", False, False),
        ("in_progress", False, False),
        ("completed", True, True),
        ("completed", True, True),
    ]
    assert polls[2] == polls[3]  # polled again: the same observation, counted once downstream
    assert polls[2].finished_at == START + 4  # queued 1 s, then 3 s of work


# -- recorded streams ------------------------------------------------------------------------


def test_a_streamed_response_meters_like_its_retrieval(upstream: Upstream) -> None:
    streamed = meter(upstream.streams["streamed"])
    retrieved = observe_json_all(*upstream.answers["streamed retrieved"])
    [final] = terminal(streamed)
    assert [final] == of(ResponseSeen, retrieved)
    assert final.usage is not None
    assert items_by_id(streamed) == items_by_id(retrieved)
    assert len(items_by_id(streamed)) == 6
    assert [describe(s) for s in of(ObjectSeen, streamed)] == [NEW]
    # each tool call is reported as it finishes, and again in the final response
    assert len(of(ToolItemSeen, streamed)) == 2 * len(items_by_id(streamed))


def test_a_stream_reports_the_same_in_any_chunks(upstream: Upstream) -> None:
    chunks = upstream.streams["streamed"]
    whole = b"".join(chunks)
    for size in (1, 7, 64, 1000):
        pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
        assert meter(pieces) == meter(chunks) == meter([whole])


def test_a_broken_stream_reports_no_usage(upstream: Upstream) -> None:
    seen = meter(upstream.streams["broken"])
    assert [describe(s) for s in seen] == [NEW, "resp queued - - bg", "resp queued - - bg"]


@pytest.mark.parametrize("after", [1, 2, 3, 9])
def test_a_resumed_stream_reports_the_same_terminal_usage(upstream: Upstream, after: int) -> None:
    resumed = meter(upstream.streams[f"resumed after {after}"])
    retrieved = observe_json_all(*upstream.answers["resumed retrieved"])
    assert terminal(resumed) == of(ResponseSeen, retrieved)
    assert items_by_id(resumed) == items_by_id(retrieved)
    assert not of(ObjectSeen, resumed)  # reading a response again creates nothing
    # items that finish before an event names the response wait for one that does
    [response_id] = {item.response_id for item in of(ToolItemSeen, resumed)}
    assert response_id == terminal(resumed)[0].id


def test_a_broken_and_resumed_stream_meters_like_the_whole(upstream: Upstream) -> None:
    replayed = meter(upstream.streams["replayed"])
    joined = meter(upstream.streams["broken"]) + meter(upstream.streams["resumed after 1"])
    assert terminal(joined) == terminal(replayed)
    assert items_by_id(joined) == items_by_id(replayed)
    assert joined == replayed


def test_a_chat_stream_with_usage_reports_it(upstream: Upstream) -> None:
    chunks = upstream.streams["chat with usage"]
    events = SSEParser().feed(b"".join(chunks))
    [last] = [doc for e in events if e.data != "[DONE]" and (doc := json.loads(e.data))["usage"]]
    usage = last["usage"]
    [completion] = of(ChatCompletionSeen, meter(chunks))
    expected = TokenUsage(
        usage["prompt_tokens"],
        usage["prompt_tokens_details"]["cached_tokens"],
        0,
        usage["completion_tokens"],
        usage["completion_tokens_details"]["reasoning_tokens"],
        usage["total_tokens"],
    )
    assert completion == ChatCompletionSeen(
        last["id"], "gpt-4o", last["created"], "default", expected
    )


def test_a_chat_stream_without_usage_reports_its_completion_unmetered(upstream: Upstream) -> None:
    chunks = upstream.streams["chat without usage"]
    stream_meter = StreamMeter()
    seen = [s for chunk in chunks for s in stream_meter.feed_all(chunk)]
    [completion] = of(ChatCompletionSeen, seen)  # at `data: [DONE]`
    assert (completion.model, completion.usage) == ("gpt-4o", None)
    assert {s.id for s in of(ObjectSeen, seen)} == {completion.id}
    assert stream_meter.close() == []
    whole = b"".join(chunks)
    assert whole.endswith(b"data: [DONE]\n\n")
    broken = whole.removesuffix(b"data: [DONE]\n\n")  # closing the stream reports it
    assert of(ChatCompletionSeen, meter([broken])) == [completion]


def test_feed_reports_what_observe_event_does(upstream: Upstream) -> None:
    for chunks in upstream.streams.values():
        events = SSEParser().feed(b"".join(chunks))
        legacy = [s for event in events for s in observe_event(event)]
        stream_meter = StreamMeter()
        assert [s for chunk in chunks for s in stream_meter.feed(chunk)] == legacy
        everything = [s for event in events for s in observe_event_all(event)]
        assert [s for s in everything if not isinstance(s, SUCCESSORS)] == legacy


# -- hand-made answers: what the simulator does not produce, and broken ones -----------------

USAGE: Any = {
    "input_tokens": 100,
    "input_tokens_details": {"cached_tokens": 40, "cache_write_tokens": 10},
    "output_tokens": 30,
    "output_tokens_details": {"reasoning_tokens": 12},
    "total_tokens": 130,
}
WS: Any = {
    "id": "ws_1",
    "type": "web_search_call",
    "status": "completed",
    "action": {"type": "search", "query": "q"},
}
CI: Any = {
    "id": "ci_1",
    "type": "code_interpreter_call",
    "status": "completed",
    "container_id": "cntr_1",
    "code": "",
    "outputs": None,
}
IG: Any = {"id": "ig_1", "type": "image_generation_call", "status": "completed", "result": None}
FC: Any = {
    "id": "fc_1",
    "type": "function_call",
    "call_id": "call_1",
    "name": "f",
    "arguments": "{}",
    "status": "completed",
}
CU: Any = {
    "id": "cu_1",
    "type": "computer_call",
    "call_id": "c",
    "action": {"type": "click"},
    "pending_safety_checks": [],
    "status": "completed",
}
SH: Any = {"id": "sh_1", "type": "shell_call", "call_id": "s", "status": "in_progress"}
NOT_CALLS: Any = [
    {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": []},
    {"id": "rs_1", "type": "reasoning", "summary": []},
    {"id": "fco_1", "type": "function_call_output", "call_id": "call_1", "output": "42"},
    {"id": "mcpl_1", "type": "mcp_list_tools", "server_label": "wiki", "tools": []},
    {"id": "mcpr_1", "type": "mcp_approval_request", "server_label": "w", "name": "n"},
]
IMAGE_TOOL: Any = {"type": "image_generation", "size": "1024x1536", "quality": "medium"}


def resp(*output: Any, **fields: Any) -> dict[str, Any]:
    """A completed response as the spec's Response describes it."""
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": START,
        "status": "completed",
        "completed_at": START + 4,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "model": "gpt-4o",
        "output": list(output),
        "parallel_tool_calls": True,
        "metadata": {},
        "tools": [WEB_TOOL],
        "service_tier": "default",
        "background": False,
        "previous_response_id": None,
        "conversation": None,
        "usage": USAGE,
        **fields,
    }


def cntr(**fields: Any) -> dict[str, Any]:
    """A container as ContainerResource describes it."""
    return {
        "id": "cntr_1",
        "object": "container",
        "name": "c",
        "created_at": START,
        "status": "active",
        "last_active_at": START + 9,
        "expires_after": {"anchor": "last_active_at", "minutes": 20},
        "memory_limit": "4g",
        **fields,
    }


CHAT_USAGE: Any = {
    "prompt_tokens": 50,
    "completion_tokens": 20,
    "total_tokens": 70,
    "prompt_tokens_details": {"cached_tokens": 32, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 8, "audio_tokens": 0},
}
BARE_USAGE: Any = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def chat(**fields: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": START,
        "model": "o3",
        "choices": [],
        "service_tier": "default",
        "usage": CHAT_USAGE,
        **fields,
    }


def chunk(**fields: Any) -> dict[str, Any]:
    return chat(object="chat.completion.chunk", usage=None) | fields


def listing(*items: Any) -> dict[str, Any]:
    return {"object": "list", "data": list(items), "has_more": False}


def at(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``doc`` with ``value`` at ``path``."""
    if len(path) == 1:
        return {**doc, path[0]: value}
    return {**doc, path[0]: at(doc[path[0]], path[1:], value)}


def without(doc: dict[str, Any], *path: str) -> dict[str, Any]:
    if len(path) == 1:
        return {k: v for k, v in doc.items() if k != path[0]}
    return {**doc, path[0]: without(doc[path[0]], *path[1:])}


def operation(name: str) -> Operation:
    [route] = [route for route in ROUTES if route.name == name]
    path = "/" + "/".join("x" if s.startswith("{") else s for s in route.segments)
    found = classify(route.method, path)
    assert found.name == name
    return found


GET, CONTAINER, CHAT = "responses.retrieve", "containers.retrieve", "chat.completions.create"
LEAN = {k: v for k, v in resp().items() if k not in ("service_tier", "background", "tools")}
OPTIONAL_NULL = dict.fromkeys(("conversation", "previous_response_id", "completed_at"))
WS_TWO: Any = [{"type": "web_search"}, {"type": "web_search_preview"}]
UNCOUNTABLE: Any = [
    without(WS, "id"),
    CI | {"status": 3},
    CI | {"container_id": [1]},
    "ws_3",
    {"id": "x", "type": 5},
]
CASES: list[tuple[str, str, Any, list[str]]] = [
    ("completed", GET, resp(), [DONE]),
    ("created", "responses.create", resp(), [NEW, DONE]),
    (
        "cancel answers",
        "responses.cancel",
        resp(status="cancelled", completed_at=None, usage=None, background=True),
        ["resp cancelled - - bg"],
    ),
    ("failed with usage", GET, resp(status="failed"), ["resp failed usage done"]),
    ("failed without usage", GET, resp(status="failed", usage=None), ["resp failed - done"]),
    ("incomplete", GET, resp(status="incomplete", completed_at=None), ["resp incomplete usage -"]),
    ("live: usage never counts", GET, resp(status="in_progress"), ["resp in_progress - -"]),
    ("queued", GET, resp(status="queued", usage=None), ["resp queued - -"]),
    ("unknown status: not terminal", GET, resp(status="paused"), ["resp paused - -"]),
    (
        "conversation and previous",
        GET,
        resp(conversation={"id": "c"}, previous_response_id="r"),
        [f"{DONE} conv prev"],
    ),
    ("optional fields absent", GET, LEAN, [DONE]),
    ("optional fields null", GET, LEAN | OPTIONAL_NULL, ["resp completed usage -"]),
    ("model and tier null", GET, resp(model=None, service_tier=None), [DONE]),
    ("created_at not whole", GET, resp(created_at=START + 0.75), [DONE]),
    (
        "every kind of item",
        GET,
        resp(WS, *NOT_CALLS, CI, IG, FC, CU, SH, tools=[]),
        [
            DONE,
            "web_search completed search",
            CODE,
            "image_generation completed",
            "function completed",
            "computer completed",
            "shell in_progress",
        ],
    ),
    ("two searches, two items", GET, resp(WS, WS | {"id": "ws_2"}), [DONE, WEB, WEB]),
    (
        "a dated search tool",
        GET,
        resp(WS, tools=[{"type": "web_search_2025_08_26"}]),
        [DONE, "web_search completed search web_search_2025_08_26"],
    ),
    (
        "two search tools: which unknown",
        GET,
        resp(WS, tools=WS_TWO),
        [DONE, "web_search completed search"],
    ),
    ("one search tool twice", GET, resp(WS, tools=[WEB_TOOL, WEB_TOOL, "x"]), [DONE, WEB]),
    (
        "a search opening a page",
        GET,
        resp(WS | {"action": {"type": "open_page"}}),
        [DONE, "web_search completed open_page web_search"],
    ),
    (
        "a failed search, no action",
        GET,
        resp(WS | {"action": None, "status": "failed"}),
        [DONE, "web_search failed web_search"],
    ),
    (
        "image from the tool",
        GET,
        resp(IG, tools=[IMAGE_TOOL]),
        [DONE, "image_generation completed 1024x1536 medium"],
    ),
    (
        "image from the item first",
        GET,
        resp(IG | {"size": "1024x1024", "quality": "high"}, tools=[IMAGE_TOOL]),
        [DONE, "image_generation completed 1024x1024 high"],
    ),
    (
        "two image tools",
        GET,
        resp(IG, tools=[IMAGE_TOOL, IMAGE_TOOL]),
        [DONE, "image_generation completed"],
    ),
    ("uncountable items skipped", GET, resp(*UNCOUNTABLE, FC), [DONE, "function completed"]),
    (
        "a deleted response",
        "responses.delete",
        {"id": "r", "object": "response", "deleted": True},
        [],
    ),
    ("input items", "responses.input_items", listing(*NOT_CALLS, FC), []),
    ("a response where a container is due", CONTAINER, resp(), []),
    ("a container where a response is due", GET, cntr(), []),
    ("container", CONTAINER, cntr(), ["container active 4g 20"]),
    ("container created", "containers.create", cntr(), ["new container", "container active 4g 20"]),
    (
        "containers listed, a bad one skipped",
        "containers.list",
        listing(cntr(), cntr(status=None), cntr(status="expired")),
        ["container active 4g 20", "container expired 4g 20"],
    ),
    (
        "container, optional fields null",
        CONTAINER,
        cntr(last_active_at=None, expires_after=None, memory_limit=None),
        ["container active - -"],
    ),
    (
        "container expiring, no minutes",
        CONTAINER,
        cntr(expires_after={}),
        ["container active 4g -"],
    ),
    ("container files", "containers.files.list", listing(cntr()), []),
    ("chat completion", CHAT, chat(), ["new chat_completion", "chat usage"]),
    ("chat completion without usage", CHAT, chat(usage=None), ["new chat_completion", "chat -"]),
    (
        "chat usage without breakdowns",
        CHAT,
        chat(usage=BARE_USAGE),
        ["new chat_completion", "chat usage"],
    ),
    ("stored completions listed", "chat.completions.list", listing(chat()), []),
    ("a chunk as a JSON answer: no usage", CHAT, chunk(usage=CHAT_USAGE), ["new chat_completion"]),
]


@pytest.mark.parametrize(
    ("name", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_observe_json_all(name: str, body: Any, expected: list[str]) -> None:
    seen = observe_json_all(operation(name), 200, json.dumps(body).encode())
    assert [describe(s) for s in seen] == expected


def test_usage_values() -> None:
    def seen(name: str, doc: Any) -> list[Seen]:
        return successors(observe_json_all(operation(name), 200, json.dumps(doc).encode()))

    assert seen(GET, resp()) == [
        ResponseSeen(
            "resp_1",
            "gpt-4o",
            "completed",
            START,
            START + 4,
            "default",
            TokenUsage(100, 40, 10, 30, 12, 130),
            None,
            None,
            False,
        )
    ]
    before_cache_writes = at(USAGE, ("input_tokens_details",), {"cached_tokens": 40})
    [earlier] = seen(GET, resp(created_at=START + 0.75, usage=before_cache_writes))
    assert isinstance(earlier, ResponseSeen)
    assert (earlier.created_at, earlier.usage) == (START, TokenUsage(100, 40, 0, 30, 12, 130))
    assert seen(CHAT, chat()) == [
        ChatCompletionSeen("chatcmpl-1", "o3", START, "default", TokenUsage(50, 32, 0, 20, 8, 70))
    ]
    [bare] = seen(CHAT, chat(usage=BARE_USAGE))
    assert isinstance(bare, ChatCompletionSeen)
    assert bare.usage == TokenUsage(1, 0, 0, 2, 0, 3)
    assert seen(CONTAINER, cntr()) == [
        ContainerSeen("cntr_1", "active", START, START + 9, "4g", 20)
    ]


MALFORMED: list[tuple[str, str, Any]] = [
    ("id missing", GET, without(resp(), "id")),
    ("id a number", GET, resp(id=1)),
    ("object missing", GET, without(resp(), "object")),
    ("status missing", GET, without(resp(), "status")),
    ("status a list", GET, resp(status=["completed"])),
    ("created_at a string", GET, resp(created_at="1700000000")),
    ("created_at a bool", GET, resp(created_at=True)),
    ("created_at infinite", GET, resp(created_at=float("inf"))),
    ("created_at not a number", GET, resp(created_at=float("nan"))),
    ("completed_at a string", GET, resp(completed_at="soon")),
    ("model a number", GET, resp(model=4)),
    ("service_tier an object", GET, resp(service_tier={})),
    ("previous_response_id a number", GET, resp(previous_response_id=1)),
    ("conversation a string", GET, resp(conversation="conv_1")),
    ("conversation without id", GET, resp(conversation={})),
    ("background a string", GET, resp(background="true")),
    ("output an object", GET, resp(output={"id": "ws_1"})),
    ("tools an object", GET, resp(tools=WEB_TOOL)),
    ("usage a number", GET, resp(usage=130)),
    ("usage negative", GET, at(resp(), ("usage", "output_tokens"), -1)),
    ("usage a float", GET, at(resp(), ("usage", "input_tokens"), 1.0)),
    ("usage without total", GET, without(resp(), "usage", "total_tokens")),
    ("usage without input details", GET, without(resp(), "usage", "input_tokens_details")),
    ("usage output details null", GET, at(resp(), ("usage", "output_tokens_details"), None)),
    ("details a list", GET, at(resp(), ("usage", "input_tokens_details"), [])),
    (
        "cached tokens missing",
        GET,
        without(resp(), "usage", "input_tokens_details", "cached_tokens"),
    ),
    (
        "reasoning tokens a string",
        GET,
        at(resp(), ("usage", "output_tokens_details", "reasoning_tokens"), "12"),
    ),
    (
        "cache writes negative",
        GET,
        at(resp(), ("usage", "input_tokens_details", "cache_write_tokens"), -3),
    ),
    ("container status missing", CONTAINER, without(cntr(), "status")),
    ("container created_at a string", CONTAINER, cntr(created_at="now")),
    ("container expires_after a list", CONTAINER, cntr(expires_after=[20])),
    ("container minutes a string", CONTAINER, at(cntr(), ("expires_after", "minutes"), "20")),
    ("container memory a number", CONTAINER, cntr(memory_limit=4)),
    ("chat id missing", CHAT, without(chat(), "id")),
    ("chat created a string", CHAT, chat(created="now")),
    ("chat usage without prompt tokens", CHAT, without(chat(), "usage", "prompt_tokens")),
    ("chat details a list", CHAT, at(chat(), ("usage", "prompt_tokens_details"), [32])),
    (
        "chat reasoning negative",
        CHAT,
        at(chat(), ("usage", "completion_tokens_details", "reasoning_tokens"), -8),
    ),
    ("list data not a list", "containers.list", {"object": "list", "data": cntr()}),
    ("a JSON array", GET, [resp()]),
    ("JSON null", GET, None),
]


@pytest.mark.parametrize(
    ("name", "body"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_bodies_report_no_usage(name: str, body: Any) -> None:
    assert successors(observe_json_all(operation(name), 200, json.dumps(body).encode())) == []


@pytest.mark.parametrize("status", [100, 201, 204, 299, 300, 400, 404, 429, 500])
def test_only_2xx_bodies_count(status: int) -> None:
    seen = observe_json_all(operation(GET), status, json.dumps(resp()).encode())
    assert [describe(s) for s in seen] == ([DONE] if 200 <= status < 300 else [])


def test_bodies_over_the_limit_are_skipped() -> None:
    body = json.dumps(resp()).encode()
    assert observe_json_all(operation(GET), 200, body, max_body=len(body)) != []
    assert observe_json_all(operation(GET), 200, body, max_body=len(body) - 1) == []


WHOLE: list[tuple[str, dict[str, Any]]] = [
    (GET, resp(WS, CI, IG, tools=[IMAGE_TOOL])),
    ("containers.list", listing(cntr())),
    (CHAT, chat()),
]


@pytest.mark.parametrize(("name", "doc"), WHOLE, ids=[w[0] for w in WHOLE])
def test_every_truncation_of_a_body_gives_nothing(name: str, doc: dict[str, Any]) -> None:
    body = json.dumps(doc).encode()
    assert observe_json_all(operation(name), 200, body) != []
    for cut in range(len(body)):
        assert observe_json_all(operation(name), 200, body[:cut]) == [], cut


def test_every_truncation_of_an_event_gives_nothing() -> None:
    data = json.dumps({"type": "response.completed", "response": resp(WS)})
    assert observe_event_all(SSEEvent("response.completed", data)) != []
    for cut in range(len(data)):
        assert observe_event_all(SSEEvent("response.completed", data[:cut])) == [], cut


def paths(doc: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every key path in a document, nested objects included."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield (*prefix, key)
            yield from paths(value, (*prefix, key))


ANY_VALUE: list[Any] = [None, True, -1, 1.5, float("nan"), "x", [], {}, [1], {"type": 1}]


@pytest.mark.parametrize("value", ANY_VALUE, ids=[repr(v) for v in ANY_VALUE])
def test_any_field_of_any_type_never_raises(value: Any) -> None:
    response = resp(WS, CI, IG, FC, tools=[IMAGE_TOOL, WEB_TOOL])
    docs: list[dict[str, Any]] = [
        response,
        cntr(),
        chat(),
        chunk(usage=CHAT_USAGE),
        {"type": "response.completed", "response": response},
        {"type": "response.output_item.done", "output_index": 0, "item": CI},
    ]
    names = ["responses.create", GET, "containers.list", CHAT]
    events = ["response.created", "response.completed", "response.output_item.done", "message"]
    for doc in docs:
        for path in paths(doc):
            body = json.dumps(at(doc, path, value))
            for name in names:
                assert isinstance(observe_json_all(operation(name), 200, body.encode()), list)
            stream_meter = StreamMeter()
            for event in events:
                assert isinstance(observe_event_all(SSEEvent(event, body)), list)
                assert isinstance(stream_meter.observe(SSEEvent(event, body)), list)
            assert isinstance(stream_meter.close(), list)


# -- events, alone and in their streams ------------------------------------------------------


def wrapped(name: str, response: Any) -> dict[str, Any]:
    return {"type": name, "sequence_number": 1, "response": response}


def done(item: Any) -> dict[str, Any]:
    return {
        "type": "response.output_item.done",
        "sequence_number": 5,
        "output_index": 0,
        "item": item,
    }


LIVE = resp(status="in_progress", completed_at=None, usage=None)
QUEUED = resp(status="queued", completed_at=None, usage=None, background=True)
EVENTS: list[tuple[str, Any, list[str]]] = [
    ("response.created", wrapped("response.created", LIVE), [NEW, "resp in_progress - -"]),
    ("response.queued", wrapped("response.queued", QUEUED), ["resp queued - - bg"]),
    ("response.in_progress", wrapped("response.in_progress", LIVE), ["resp in_progress - -"]),
    ("response.completed", wrapped("response.completed", resp(WS)), [DONE, WEB]),
    (
        "response.incomplete",
        wrapped("response.incomplete", resp(status="incomplete")),
        ["resp incomplete usage done"],
    ),
    (
        "response.failed",
        wrapped("response.failed", resp(status="failed", usage=None)),
        ["resp failed - done"],
    ),
    # alone, a finished item names neither its response nor the tools offered
    ("response.output_item.done", done(WS), ["web_search completed search orphan"]),
    ("response.output_item.done", done(CI), [f"{CODE} orphan"]),
    ("response.output_item.done", done(NOT_CALLS[0]), []),
    ("response.output_item.done", done("ws_1"), []),
    ("response.output_item.added", done(WS), []),  # never parsed, whatever it holds
    ("response.web_search_call.completed", {"item_id": "ws_1", "output_index": 0}, []),
    ("response.output_text.delta", wrapped("response.completed", resp()), []),
    ("response.cancelled", wrapped("response.cancelled", resp(status="cancelled")), []),
    ("response.completed", wrapped("response.completed", "resp_1"), []),
    ("response.completed", wrapped("response.completed", cntr()), []),
    ("response.completed", "{not json", []),
    ("response.created", {"response": {"id": "resp_1", "object": "response"}}, []),
    ("error", {"type": "error", "code": "server_error", "message": "boom"}, []),
    ("message", chunk(), ["new chat_completion"]),
    ("message", chunk(usage=CHAT_USAGE), ["new chat_completion", "chat usage"]),
    ("message", chunk(usage="lots"), ["new chat_completion"]),
    ("message", chat(), []),
    ("message", "[DONE]", []),
    ("chunk", chunk(usage=CHAT_USAGE), []),
    ("thread.run.completed", resp(), []),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"), EVENTS, ids=[f"{i}-{e[0]}" for i, e in enumerate(EVENTS)]
)
def test_observe_event_all(name: str, data: Any, expected: list[str]) -> None:
    event = SSEEvent(name, data if isinstance(data, str) else json.dumps(data))
    seen = observe_event_all(event)
    assert [describe(s) for s in seen] == expected
    assert observe_event(event) == [s for s in seen if not isinstance(s, SUCCESSORS)]


def sse(*events: tuple[str | None, Any]) -> bytes:
    """A stream as the upstream sends it; a None name is a data-only (chat) event."""
    out = b""
    for name, data in events:
        text = data if isinstance(data, str) else json.dumps(data)
        out += (b"" if name is None else f"event: {name}\n".encode()) + f"data: {text}\n\n".encode()
    return out


ITEM_DONE, FINISHED = "response.output_item.done", wrapped("response.completed", resp(WS, CI))
STREAMS: list[tuple[str, bytes, list[str], list[str]]] = [
    (
        "items finishing after the response is named",
        sse(("response.in_progress", wrapped("x", LIVE)), (ITEM_DONE, done(WS))),
        ["resp in_progress - -", WEB],
        [],
    ),
    (
        "a resumed stream naming its response at the end: items wait till then",
        sse((ITEM_DONE, done(WS)), (ITEM_DONE, done(CI)), ("response.completed", FINISHED)),
        [DONE, WEB, CODE, WEB, CODE],
        [],
    ),
    (
        "a resumed stream broken first: its items are reported when it ends",
        sse((ITEM_DONE, done(WS))),
        [],
        ["web_search completed search orphan"],
    ),
    (
        "a chat stream without usage: the completion, unmetered, at [DONE]",
        sse((None, chunk()), (None, chunk()), (None, "[DONE]")),
        ["new chat_completion", "new chat_completion", "chat -"],
        [],
    ),
    (
        "a chat stream with usage",
        sse((None, chunk()), (None, chunk(usage=CHAT_USAGE)), (None, "[DONE]")),
        ["new chat_completion", "new chat_completion", "chat usage"],
        [],
    ),
    (
        "a chat stream broken: the completion, unmetered, when it ends",
        sse((None, chunk())),
        ["new chat_completion"],
        ["chat -"],
    ),
    (
        "a chat stream whose first chunk is malformed",
        sse((None, chunk(id=5)), (None, chunk()), (None, "[DONE]")),
        ["new chat_completion", "chat -"],
        [],
    ),
    ("an Assistants stream", sse(("thread.run.step.delta", {}), ("done", "[DONE]")), [], []),
]


@pytest.mark.parametrize(
    ("stream", "expected", "at_close"), [s[1:] for s in STREAMS], ids=[s[0] for s in STREAMS]
)
def test_streams(stream: bytes, expected: list[str], at_close: list[str]) -> None:
    stream_meter = StreamMeter()
    assert [describe(s) for s in stream_meter.feed_all(stream)] == expected
    assert [describe(s) for s in stream_meter.close()] == at_close
    assert stream_meter.close() == []


def test_held_items_take_the_response_and_its_tools() -> None:
    named = wrapped("x", LIVE | {"tools": [{"type": "web_search_preview"}, IMAGE_TOOL]})
    stream = sse((ITEM_DONE, done(IG)), ("response.in_progress", named), (ITEM_DONE, done(WS)))
    assert of(ToolItemSeen, StreamMeter().feed_all(stream)) == [
        ToolItemSeen(
            "ig_1",
            "image_generation_call",
            "resp_1",
            "completed",
            None,
            None,
            None,
            "1024x1536",
            "medium",
        ),
        ToolItemSeen(
            "ws_1", "web_search_call", "resp_1", "completed", "search", "web_search_preview"
        ),
    ]


def test_stream_meter_still_reports_runs() -> None:
    run = {
        "id": "run_1",
        "object": "thread.run",
        "created_at": START,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": "completed",
        "completed_at": START,
        "model": "gpt-4o",
        "tools": [],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    seen = StreamMeter().feed_all(sse(("thread.run.completed", run)))
    assert [type(s) for s in seen] == [RunSeen]

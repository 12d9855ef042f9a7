"""The simulator's Responses and Conversations APIs through the real openai client."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from tests.servers import ServerThread, serve
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.outputs import INCLUDABLE

START = 1_700_000_000.0
STREAM_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]
FUNCTION = {"type": "function", "name": "lookup", "parameters": {"type": "object"}}


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def to(self, offset: float) -> None:
        """Moves to START + offset seconds."""
        self.now = START + offset


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)


@pytest.fixture
def client(clock: FakeClock) -> Iterator[openai.OpenAI]:
    """On the injected clock: background responses are queued 1 s, then work for 3 s."""
    config = SimulatorConfig(
        clock=clock, queued_seconds=1.0, in_progress_seconds=3.0, file_processing_seconds=0.0
    )
    with serve(create_app(config)) as server, _client(server) as client:
        yield client


@pytest.fixture(scope="module")
def shared() -> Iterator[openai.OpenAI]:
    """One server for the tests that only read answers, so each case does not start one."""
    with serve(create_app(SimulatorConfig())) as server, _client(server) as client:
        yield client


@pytest.fixture
def live() -> Iterator[openai.OpenAI]:
    """On the real clock with a fast schedule, for streams that unfold over time."""
    config = SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.06)
    with serve(create_app(config)) as server, _client(server) as client:
        yield client


def kinds(response: Any) -> list[str]:
    return [item.type for item in response.output]


def test_response_round_trip(client: openai.OpenAI) -> None:
    created = client.responses.create(
        model="gpt-4o", input="Tell me a story", instructions="Be brief.", metadata={"t": "a"}
    )
    assert created.id.startswith("resp_")
    assert (created.status, created.created_at, created.completed_at) == ("completed", START, START)
    assert kinds(created) == ["message"]
    assert created.output_text == "Simulated reply from gpt-4o to: 'Tell me a story'."
    assert (created.metadata, created.service_tier, created.store) == ({"t": "a"}, "default", True)
    assert created.usage is not None
    assert (
        created.usage.input_tokens
        == client.responses.input_tokens.count(
            model="gpt-4o", input="Tell me a story", instructions="Be brief."
        ).input_tokens
    )
    assert created.usage.input_tokens_details.cached_tokens == 0
    assert created.usage.output_tokens_details.reasoning_tokens == 0
    usage = created.usage
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert client.responses.retrieve(created.id).to_dict() == created.to_dict()
    [item] = client.responses.input_items.list(created.id).data
    assert item.type == "message"
    assert item.to_dict()["content"] == [{"type": "input_text", "text": "Tell me a story"}]
    deleted = client.responses.delete(created.id)
    assert deleted is None  # the spec types no answer; the next test reads the raw one
    with pytest.raises(openai.NotFoundError) as missing:
        client.responses.retrieve(created.id)
    assert missing.value.body == {
        "message": f"No response found with id '{created.id}'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_delete_answers_the_deleted_object(client: openai.OpenAI) -> None:
    created = client.responses.create(model="gpt-4o", input="x")
    raw = client.responses.with_raw_response.delete(created.id)
    assert raw.http_response.json() == {"id": created.id, "object": "response", "deleted": True}


def test_unstored_responses_are_not_retrievable(client: openai.OpenAI) -> None:
    created = client.responses.create(model="gpt-4o", input="secret", store=False)
    assert (created.status, created.store) == ("completed", False)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(created.id)
    with pytest.raises(openai.NotFoundError) as previous:
        client.responses.create(model="gpt-4o", input="more", previous_response_id=created.id)
    assert previous.value.param == "previous_response_id"
    assert previous.value.message.endswith(f"Previous response with id '{created.id}' not found.")


def test_previous_response_is_read_again_and_cached(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4.1", input="What is a tollhouse?")
    second = client.responses.create(
        model="gpt-4.1", input="And a turnpike?", previous_response_id=first.id
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None
    assert second.usage is not None
    cached = second.usage.input_tokens_details.cached_tokens
    assert 0 < cached < second.usage.input_tokens
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    listed = client.responses.input_items.list(second.id, order="asc").data
    assert [item.id for item in listed[:2]] == [
        client.responses.input_items.list(first.id).data[0].id,
        first.output[0].id,
    ]
    assert [item.type for item in listed] == ["message", "message", "message"]
    assert second.output_text.endswith("'And a turnpike?'.")


def test_function_call_then_output_with_previous_response(client: openai.OpenAI) -> None:
    called = client.responses.create(model="gpt-4o", input="Look it up", tools=[FUNCTION])
    assert kinds(called) == ["function_call"]
    call = called.output[0]
    assert call.type == "function_call"
    assert (call.name, call.arguments, call.status) == ("lookup", "{}", "completed")
    answered = client.responses.create(
        model="gpt-4o",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "42"}],
        tools=[FUNCTION],
    )
    assert kinds(answered) == ["message"]
    assert "The function lookup returned: 42" in answered.output_text
    with pytest.raises(openai.BadRequestError) as unknown:
        client.responses.create(
            model="gpt-4o",
            previous_response_id=called.id,
            input=[{"type": "function_call_output", "call_id": "call_nope", "output": "1"}],
        )
    assert unknown.value.param == "input"


def test_two_searches_in_one_response(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="gpt-4o",
        input="Search for tollhouse history, then search turnpike prices",
        tools=[{"type": "web_search"}],
        include=["web_search_call.action.sources"],
    )
    assert kinds(response) == ["web_search_call", "web_search_call", "message"]
    queries = [item.to_dict()["action"]["query"] for item in response.output[:2]]
    assert queries == ["tollhouse history", "turnpike prices"]
    assert all(item.to_dict()["action"]["sources"] for item in response.output[:2])
    plain = client.responses.retrieve(response.id)
    assert "sources" not in plain.output[0].to_dict()["action"]
    assert "A web search for 'turnpike prices' found 2 pages." in response.output_text


def test_file_search_reads_the_tool_stores(client: openai.OpenAI) -> None:
    document = client.files.create(
        file=("fees.txt", b"The toll fee is two coins."), purpose="assistants"
    )
    store = client.vector_stores.create(name="docs", file_ids=[document.id])
    tool = {"type": "file_search", "vector_store_ids": [store.id]}
    response = client.responses.create(
        model="gpt-4o", input="toll fee", tools=[tool], include=["file_search_call.results"]
    )
    assert kinds(response) == ["file_search_call", "message"]
    found = response.output[0].to_dict()
    assert (found["queries"], found["status"]) == (["toll fee"], "completed")
    assert [r["file_id"] for r in found["results"]] == [document.id]
    assert client.responses.retrieve(response.id).output[0].to_dict()["results"] is None
    with pytest.raises(openai.NotFoundError, match="No vector store found with id 'vs_nope'"):
        client.responses.create(
            model="gpt-4o",
            input="x",
            tools=[{"type": "file_search", "vector_store_ids": ["vs_nope"]}],
        )


def test_reasoning_models_think_before_answering(client: openai.OpenAI) -> None:
    medium = client.responses.create(model="o4-mini", input="Why do tolls exist?")
    high = client.responses.create(
        model="o4-mini", input="Why do tolls exist?", reasoning={"effort": "high"}
    )
    assert kinds(medium) == ["reasoning", "message"]
    assert medium.reasoning is not None
    assert medium.reasoning.effort == "medium"
    assert medium.usage is not None
    assert high.usage is not None
    thinking = medium.usage.output_tokens_details.reasoning_tokens
    assert 0 < thinking < high.usage.output_tokens_details.reasoning_tokens
    assert medium.usage.output_tokens > thinking
    assert "encrypted_content" not in medium.output[0].to_dict()
    with pytest.raises(openai.BadRequestError) as unsupported:
        client.responses.create(model="gpt-4o", input="x", reasoning={"effort": "low"})
    assert unsupported.value.param == "reasoning.effort"


@pytest.mark.parametrize(
    ("requested", "served"),
    [(None, "default"), ("auto", "default"), ("flex", "flex"), ("fast", "priority")],
)
def test_service_tier_is_echoed(shared: openai.OpenAI, requested: Any, served: str) -> None:
    options = {} if requested is None else {"service_tier": requested}
    assert shared.responses.create(model="o3", input="x", **options).service_tier == served


def test_output_token_limit_cuts_the_answer(client: openai.OpenAI) -> None:
    long = "word " * 40
    response = client.responses.create(model="gpt-4o", input=long, max_output_tokens=16)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None
    assert response.usage.output_tokens <= 16
    assert response.output[0].status == "incomplete"


def test_background_response_follows_the_clock(client: openai.OpenAI, clock: FakeClock) -> None:
    tools = [{"type": "web_search"}, {"type": "code_interpreter", "container": {"type": "auto"}}]
    created = client.responses.create(model="gpt-4o", input="count", background=True, tools=tools)
    assert (created.status, created.background, created.output, created.usage) == (
        "queued",
        True,
        [],
        None,
    )
    clock.to(2.0)  # a third into the work: the web search is done, the code is running
    working = client.responses.retrieve(created.id)
    assert working.status == "in_progress"
    assert [(item.type, item.status) for item in working.output] == [
        ("web_search_call", "completed"),
        ("code_interpreter_call", "in_progress"),
    ]
    clock.to(4.0)
    done = client.responses.retrieve(created.id)
    assert (done.status, done.completed_at) == ("completed", START + 4)
    assert kinds(done) == ["web_search_call", "code_interpreter_call", "message"]
    assert done.usage is not None
    assert done.usage.input_tokens > 0


def test_cancel_background_responses_only(client: openai.OpenAI, clock: FakeClock) -> None:
    created = client.responses.create(model="gpt-4o", input="slow", background=True)
    clock.to(2.0)
    cancelled = client.responses.cancel(created.id)
    assert cancelled.status == "cancelled"
    clock.to(10.0)
    assert client.responses.retrieve(created.id).status == "cancelled"
    assert client.responses.cancel(created.id).status == "cancelled"
    finished = client.responses.create(model="gpt-4o", input="fast")
    with pytest.raises(openai.BadRequestError, match="background=true"):
        client.responses.cancel(finished.id)


def test_stream_sends_every_documented_event(live: openai.OpenAI) -> None:
    with live.responses.stream(model="gpt-4o", input="Stream me a reply") as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert [event.type for event in events] == STREAM_EVENTS
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == final.output_text == live.responses.retrieve(final.id).output_text
    assert final.status == "completed"


def test_stream_with_tools_sends_their_events(live: openai.OpenAI) -> None:
    tools = [
        {"type": "web_search"},
        {"type": "code_interpreter", "container": {"type": "auto"}},
        {"type": "image_generation", "partial_images": 1},
        {
            "type": "mcp",
            "server_label": "wiki",
            "server_url": "https://mcp.example.com",
            "require_approval": "never",
        },
        FUNCTION,
    ]
    with live.responses.stream(model="gpt-4o", input="Go", tools=tools) as stream:
        names = [event.type for event in stream if "output_item" not in event.type]
        final = stream.get_final_response()
    assert names == [
        "response.created",
        "response.in_progress",
        "response.web_search_call.in_progress",
        "response.web_search_call.searching",
        "response.web_search_call.completed",
        "response.code_interpreter_call.in_progress",
        "response.code_interpreter_call_code.delta",
        "response.code_interpreter_call_code.done",
        "response.code_interpreter_call.interpreting",
        "response.code_interpreter_call.completed",
        "response.image_generation_call.in_progress",
        "response.image_generation_call.generating",
        "response.image_generation_call.partial_image",
        "response.image_generation_call.completed",
        "response.mcp_list_tools.in_progress",
        "response.mcp_list_tools.completed",
        "response.mcp_call.in_progress",
        "response.mcp_call_arguments.delta",
        "response.mcp_call_arguments.done",
        "response.mcp_call.completed",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.completed",
    ]
    assert kinds(final) == [
        "web_search_call",
        "code_interpreter_call",
        "image_generation_call",
        "mcp_list_tools",
        "mcp_call",
        "function_call",
    ]


def test_background_stream_resumes_after_a_sequence_number(live: openai.OpenAI) -> None:
    with live.responses.create(
        model="gpt-4o", input="resume me", background=True, stream=True
    ) as first:
        head = [next(first) for _ in range(4)]  # then the connection drops
    response_id = head[0].response.id
    assert [e.type for e in head[:2]] == ["response.created", "response.queued"]
    with live.responses.retrieve(response_id, stream=True, starting_after=3) as resumed:
        tail = list(resumed)
    numbers = [event.sequence_number for event in head + tail]
    assert numbers == list(range(len(numbers)))
    assert tail[-1].type == "response.completed"
    with live.responses.stream(response_id=response_id, starting_after=3) as helper:
        assert [e.sequence_number for e in helper] == [e.sequence_number for e in tail]
        assert helper.get_final_response().output_text == tail[-1].response.output_text


def test_resumed_stream_gives_exactly_the_later_events(
    client: openai.OpenAI, clock: FakeClock
) -> None:
    created = client.responses.create(model="gpt-4o", input="replay", background=True)
    clock.to(10.0)
    with client.responses.retrieve(created.id, stream=True) as everything:
        events = [event.to_dict() for event in everything]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "response.completed"
    for after in (-1, 0, 5, len(events) - 1):
        with client.responses.retrieve(created.id, stream=True, starting_after=after) as later:
            assert [event.to_dict() for event in later] == events[after + 1 :]


def test_mcp_approval_then_call(client: openai.OpenAI) -> None:
    server = {"type": "mcp", "server_label": "wiki", "server_url": "https://mcp.example.com"}
    asked = client.responses.create(model="gpt-4o", input="Ask the wiki", tools=[server])
    assert kinds(asked) == ["mcp_list_tools", "mcp_approval_request"]
    request = asked.output[1]
    approved = client.responses.create(
        model="gpt-4o",
        previous_response_id=asked.id,
        tools=[server],
        input=[
            {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}
        ],
    )
    assert kinds(approved) == ["mcp_call", "message"]
    call = approved.output[0].to_dict()
    assert (call["name"], call["approval_request_id"], call["status"]) == (
        "lookup",
        request.id,
        "completed",
    )
    again = client.responses.create(
        model="gpt-4o", previous_response_id=approved.id, tools=[server], input="Once more"
    )
    assert kinds(again) == ["mcp_approval_request"]  # the tools were listed already


def test_item_reference_reads_an_earlier_item(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-4o", input="Remember tollhouse")
    user_item = client.responses.input_items.list(first.id).data[0]
    second = client.responses.create(
        model="gpt-4o", input=[{"type": "item_reference", "id": user_item.id}]
    )
    assert second.output_text.endswith("'Remember tollhouse'.")
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o", input=[{"type": "item_reference", "id": "msg_x"}])


def test_conversation_round_trip(client: openai.OpenAI, clock: FakeClock) -> None:
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": "Hello"}], metadata={"t": "a"}
    )
    assert conversation.id.startswith("conv_")
    assert (conversation.created_at, conversation.metadata) == (START, {"t": "a"})
    assert client.conversations.retrieve(conversation.id).metadata == {"t": "a"}
    assert client.conversations.update(conversation.id, metadata={"t": "b"}).metadata == {"t": "b"}
    clock.to(1)
    added = client.conversations.items.create(
        conversation.id,
        items=[
            {"type": "message", "role": "user", "content": "How are you?"},
            {"role": "assistant", "content": "Fine."},
        ],
    )
    assert [item.type for item in added.data] == ["message", "message"]
    listed = client.conversations.items.list(conversation.id)
    texts = [item.to_dict()["content"][0]["text"] for item in listed.data]
    assert texts == ["Fine.", "How are you?", "Hello"]
    ascending = client.conversations.items.list(conversation.id, order="asc", limit=1)
    assert ascending.has_more
    assert ascending.data[0].to_dict()["content"][0]["text"] == "Hello"
    item = client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    assert item.id == added.data[0].id
    after = client.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    assert after.id == conversation.id
    assert len(client.conversations.items.list(conversation.id).data) == 2
    gone = client.conversations.delete(conversation.id)
    assert (gone.id, gone.object, gone.deleted) == (conversation.id, "conversation.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.conversations.retrieve(conversation.id)


def test_responses_in_a_conversation_append_to_it(client: openai.OpenAI) -> None:
    conversation = client.conversations.create()
    first = client.responses.create(model="gpt-4o", input="Hi", conversation=conversation.id)
    assert first.conversation is not None
    assert first.conversation.id == conversation.id
    second = client.responses.create(
        model="gpt-4o", input="Again", conversation={"id": conversation.id}
    )
    assert second.usage is not None
    assert second.usage.input_tokens_details.cached_tokens > 0
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [(item.type, item.to_dict()["role"]) for item in items] == [
        ("message", "user"),
        ("message", "assistant"),
        ("message", "user"),
        ("message", "assistant"),
    ]
    assert items[1].id == first.output[0].id
    with pytest.raises(openai.BadRequestError) as both:
        client.responses.create(
            model="gpt-4o", input="x", conversation=conversation.id, previous_response_id=first.id
        )
    assert both.value.param == "conversation"


def test_compaction_shortens_the_context(client: openai.OpenAI) -> None:
    first = client.responses.create(model="gpt-5", input="Plan a road with " + "many tolls " * 30)
    compacted = client.responses.compact(model="gpt-5", previous_response_id=first.id)
    assert compacted.object == "response.compaction"
    assert [item.type for item in compacted.output] == ["compaction"]
    window = [item.to_dict() for item in compacted.output]
    following = client.responses.create(
        model="gpt-5", input=[*window, {"role": "user", "content": "Next?"}]
    )
    assert following.output_text.endswith("'Next?'.")
    assert following.usage is not None
    assert first.usage is not None
    assert following.usage.input_tokens < first.usage.input_tokens + first.usage.output_tokens


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "gpt-4o", "input": 5}, "input"),
        ({"model": "gpt-4o", "input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"model": "gpt-4o", "tools": [{"type": "browser"}]}, "tools[0].type"),
        ({"model": "gpt-4o", "tools": [{"type": "code_interpreter"}]}, "tools[0].container"),
        (
            {
                "model": "gpt-4o",
                "tools": [
                    {
                        "type": "code_interpreter",
                        "container": {"type": "auto", "memory_limit": "3g"},
                    }
                ],
            },
            "tools[0].container.memory_limit",
        ),
        ({"model": "gpt-4o", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"model": "gpt-4o", "max_output_tokens": 3}, "max_output_tokens"),
        ({"model": "gpt-4o", "include": ["everything"]}, "include"),
        ({"model": "gpt-4o", "background": True, "store": False}, "store"),
        ({"model": "gpt-4o", "service_tier": "gold"}, "service_tier"),
        ({"model": "gpt-4o", "temperature": 3}, "temperature"),
    ],
)
def test_invalid_create_bodies_name_the_param(
    shared: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as invalid:
        shared.post("/responses", body=body, cast_to=object)
    assert (invalid.value.param, invalid.value.type) == (param, "invalid_request_error")


def test_unknown_ids_answer_404(shared: openai.OpenAI) -> None:
    for call in (
        lambda: shared.responses.retrieve("resp_nope"),
        lambda: shared.responses.cancel("resp_nope"),
        lambda: shared.responses.input_items.list("resp_nope"),
        lambda: shared.conversations.retrieve("conv_nope"),
        lambda: shared.conversations.items.list("conv_nope"),
        lambda: shared.responses.create(model="gpt-4o", input="x", conversation="conv_nope"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()


# -- every answer against the spec ---------------------------------------------------------

SPEC = Path(__file__).with_name("reference") / "openai-openapi.yaml"
NEW_FAMILIES = ("/v1/responses", "/v1/conversations", "/v1/containers", "/v1/chat/completions")


@dataclass
class Exchange:
    method: str
    path: str
    status: int = 0
    content_type: str = ""
    body: bytearray = field(default_factory=bytearray)


class Recorder:
    """Plain ASGI wrapper keeping every answer the app sends, byte for byte."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(scope["method"], scope["path"])
        self.exchanges.append(exchange)

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                exchange.status = message["status"]
                headers = dict(message.get("headers") or [])
                exchange.content_type = headers.get(b"content-type", b"").decode()
            elif message["type"] == "http.response.body":
                exchange.body += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, record)


def as_openapi_31(node: Any) -> Any:
    """Rewrites OpenAPI 3.0's ``nullable: true``, which the 3.1 document still uses in places
    (the stream chunk's ``finish_reason``, for one), as the 3.1 way of allowing null."""
    if isinstance(node, list):
        return [as_openapi_31(value) for value in node]
    if not isinstance(node, dict):
        return node
    rewritten = {key: as_openapi_31(value) for key, value in node.items()}
    if rewritten.get("nullable") is True:
        del rewritten["nullable"]
        return {"anyOf": [rewritten, {"type": "null"}]}
    return rewritten


class Spec:
    """The reference's operations and a JSON Schema 2020-12 validator (OpenAPI 3.1's dialect)
    for any of its component schemas."""

    def __init__(self, path: Path) -> None:
        document = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        assert str(document["openapi"]).startswith("3.1")
        self.paths: dict[str, Any] = document["paths"]
        self.components = as_openapi_31(document["components"])
        messages = self.components["schemas"]["ChatCompletionMessageList"]
        # The spec's own example of this list shows the request's user message, while the
        # schema allows only role "assistant"; the example is what the API answers.
        entry = messages["properties"]["data"]["items"]["allOf"]
        entry.append({"properties": {"role": {"enum": list(REQUEST_ROLES)}}})
        entry[0] = {"$ref": "#/components/schemas/ChatCompletionResponseMessageAnyRole"}
        schema = copy.deepcopy(self.components["schemas"]["ChatCompletionResponseMessage"])
        del schema["properties"]["role"]
        self.components["schemas"]["ChatCompletionResponseMessageAnyRole"] = schema
        self._validators: dict[str, Draft202012Validator] = {}

    def validator(self, ref: str) -> Draft202012Validator:
        if ref not in self._validators:
            root = {"$ref": ref, "components": self.components}
            self._validators[ref] = Draft202012Validator(root)
        return self._validators[ref]

    def operations(self, prefixes: tuple[str, ...]) -> set[tuple[str, str]]:
        return {
            (method.upper(), "/v1" + template)
            for template, operations in self.paths.items()
            if "?" not in template and ("/v1" + template).startswith(prefixes)
            for method in operations
            if method in ("get", "post", "delete")
        }

    def operation(self, method: str, path: str) -> tuple[str, dict[str, Any]]:
        """The template and operation serving a concrete path (literal segments win)."""
        found = []
        for template, operations in self.paths.items():
            pattern = "^/v1" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
            if "?" not in template and method.lower() in operations and re.match(pattern, path):
                found.append((template.count("{"), "/v1" + template, operations[method.lower()]))
        assert found, f"no operation in the spec serves {method} {path}"
        _, template, operation = min(found, key=lambda entry: entry[0])
        return template, operation


REQUEST_ROLES = ("developer", "system", "user", "assistant", "tool", "function")
# The spec gives these operations no answer schema.
UNTYPED = {
    ("DELETE", "/v1/responses/{response_id}"),
    ("DELETE", "/v1/containers/{container_id}"),
    ("DELETE", "/v1/containers/{container_id}/files/{file_id}"),
    ("GET", "/v1/containers/{container_id}/files/{file_id}/content"),
}


def sse_payloads(body: bytes) -> list[dict[str, Any]]:
    payloads = []
    for block in body.decode().split("\n\n"):
        data = [line[len("data: ") :] for line in block.splitlines() if line.startswith("data: ")]
        if data and data[0] != "[DONE]":
            payloads.append(json.loads(data[0]))
    return payloads


def answer_schema(spec: Spec, exchange: Exchange) -> str | None:
    """The schema the spec gives this answer, or None where it gives none."""
    template, operation = spec.operation(exchange.method, exchange.path)
    if exchange.status >= 400:
        return "#/components/schemas/ErrorResponse"
    content = operation["responses"][str(exchange.status)].get("content") or {}
    kind = exchange.content_type.split(";")[0]
    if kind == "text/event-stream" and kind not in content:
        # Retrieve documents `stream=true` but types only its JSON answer; the events are
        # the ones create streams.
        content = spec.paths["/responses"]["post"]["responses"]["200"]["content"]
    if kind not in content:
        assert (exchange.method, template) in UNTYPED, f"{exchange.method} {template} {kind}"
        return None
    return str(content[kind]["schema"]["$ref"])


def problems(spec: Spec, exchange: Exchange) -> list[str]:
    ref = answer_schema(spec, exchange)
    if ref is None:
        return []
    stream = exchange.content_type.startswith("text/event-stream")
    payloads = sse_payloads(exchange.body) if stream else [json.loads(exchange.body)]
    assert payloads, f"{exchange.method} {exchange.path} answered nothing"
    found = []
    for payload in payloads:
        error = best_match(spec.validator(ref).iter_errors(payload))
        if error is not None:
            where = f"{exchange.method} {exchange.path} {ref.rsplit('/', 1)[-1]}"
            found.append(f"{where}: {error.message} at {error.json_path}")
    return found


def walk_responses(client: openai.OpenAI, clock: FakeClock) -> None:
    document = client.files.create(
        file=("fees.txt", b"The toll fee is two coins."), purpose="assistants"
    )
    store = client.vector_stores.create(file_ids=[document.id])
    clock.to(1)
    tools: list[Any] = [
        {"type": "web_search"},
        {"type": "file_search", "vector_store_ids": [store.id]},
        {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}},
        {"type": "image_generation", "partial_images": 1},
        {"type": "mcp", "server_label": "wiki", "server_url": "https://mcp.example.com"},
        FUNCTION,
    ]
    everything = client.responses.create(
        model="o3", input="search toll fee then search roads", tools=tools, include=list(INCLUDABLE)
    )
    client.responses.retrieve(everything.id, include=list(INCLUDABLE))
    client.responses.input_items.list(everything.id, order="asc", limit=1)
    calls = {item.type: item for item in everything.output}
    client.responses.create(
        model="o3",
        previous_response_id=everything.id,
        tools=tools,
        input=[
            {
                "type": "function_call_output",
                "call_id": calls["function_call"].call_id,
                "output": "7",
            },
            {
                "type": "mcp_approval_response",
                "approval_request_id": calls["mcp_approval_request"].id,
                "approve": True,
            },
        ],
    )
    with client.responses.create(model="gpt-5", input="stream", tools=tools, stream=True) as stream:
        clock.to(10)
        list(stream)
    background = client.responses.create(model="gpt-4o", input="later", background=True)
    client.responses.retrieve(background.id)
    clock.to(11.5)
    client.responses.retrieve(background.id)
    clock.to(20)
    with client.responses.retrieve(background.id, stream=True, starting_after=2) as resumed:
        list(resumed)
    cancelled = client.responses.create(model="gpt-4o", input="stop", background=True)
    client.responses.cancel(cancelled.id)
    client.responses.input_tokens.count(model="gpt-4o", input="count me", tools=tools)
    client.responses.compact(model="gpt-5", previous_response_id=everything.id)
    client.responses.create(model="gpt-4o", input="brief", max_output_tokens=16, store=False)
    client.responses.delete(background.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(background.id)
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="gpt-4o", input=5)


def walk_conversations(client: openai.OpenAI, clock: FakeClock) -> None:
    conversation = client.conversations.create(
        items=[{"role": "user", "content": "Hello"}], metadata={"team": "a"}
    )
    client.responses.create(model="gpt-4o", input="Hi", conversation=conversation.id)
    client.conversations.retrieve(conversation.id)
    client.conversations.update(conversation.id, metadata={"team": "b"})
    added = client.conversations.items.create(
        conversation.id, items=[{"role": "assistant", "content": "Fine."}]
    )
    client.conversations.items.list(conversation.id, limit=2)
    client.conversations.items.retrieve(added.data[0].id, conversation_id=conversation.id)
    client.conversations.items.delete(added.data[0].id, conversation_id=conversation.id)
    client.conversations.delete(conversation.id)


def walk_containers(client: openai.OpenAI, clock: FakeClock) -> None:
    document = client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="user_data")
    container = client.containers.create(
        name="walk", memory_limit="4g", expires_after={"anchor": "last_active_at", "minutes": 5}
    )
    uploaded = client.containers.files.create(container.id, file=("notes.txt", b"notes"))
    client.containers.files.create(container.id, file_id=document.id)
    client.containers.list(limit=1)
    client.containers.retrieve(container.id)
    client.containers.files.list(container.id)
    client.containers.files.retrieve(uploaded.id, container_id=container.id)
    client.containers.files.content.retrieve(uploaded.id, container_id=container.id)
    client.containers.files.delete(uploaded.id, container_id=container.id)
    clock.to(1000)
    client.containers.retrieve(container.id)  # expired
    client.containers.delete(container.id)


def walk_chat(client: openai.OpenAI, clock: FakeClock) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    stored = client.chat.completions.create(
        model="gpt-4o", messages=messages, store=True, metadata={"team": "a"}, n=2
    )
    called = client.chat.completions.create(
        model="o3", messages=messages, tools=[{"type": "function", "function": {"name": "f"}}]
    )
    answer: Any = called.choices[0].message.to_dict()
    client.chat.completions.create(
        model="o3",
        messages=[
            *messages,
            answer,
            {"role": "tool", "tool_call_id": answer["tool_calls"][0]["id"], "content": "1"},
        ],
        max_completion_tokens=20,
    )
    for tools in ([], [{"type": "function", "function": {"name": "f"}}]):
        chunks = client.chat.completions.create(
            model="gpt-4o",
            messages=messages,
            tools=tools,
            stream=True,
            stream_options={"include_usage": True},
        )
        list(chunks)
    client.chat.completions.list(model="gpt-4o", metadata={"team": "a"})
    client.chat.completions.retrieve(stored.id)
    client.chat.completions.update(stored.id, metadata={"team": "b"})
    client.chat.completions.messages.list(stored.id)
    client.chat.completions.delete(stored.id)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(stored.id)


def test_every_answer_and_event_matches_the_spec(clock: FakeClock) -> None:
    spec = Spec(SPEC)
    config = SimulatorConfig(clock=clock, queued_seconds=1.0, in_progress_seconds=3.0)
    recorder = Recorder(create_app(config))
    with serve(recorder) as server, _client(server) as client:
        for walk in (walk_responses, walk_conversations, walk_containers, walk_chat):
            walk(client, clock)
    answers = [e for e in recorder.exchanges if e.path.startswith(NEW_FAMILIES)]
    served = {spec.operation(e.method, e.path)[0] for e in answers if e.status == 200}
    covered = {(e.method, spec.operation(e.method, e.path)[0]) for e in answers if e.status == 200}
    assert covered == spec.operations(NEW_FAMILIES), served
    assert [p for exchange in answers for p in problems(spec, exchange)] == []

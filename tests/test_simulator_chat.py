"""The simulator's Chat Completions API through the real openai client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.servers import ServerThread, serve
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.tokens import count_tokens

START = 1_700_000_000.0
HELLO: list[Any] = [{"role": "user", "content": "Hello there"}]
LOOKUP = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ServerThread]:
    with serve(create_app(SimulatorConfig(clock=clock))) as running:
        yield running


def _client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0)


@pytest.fixture
def client(server: ServerThread) -> Iterator[openai.OpenAI]:
    with _client(server) as client:
        yield client


@pytest.fixture(scope="module")
def shared() -> Iterator[openai.OpenAI]:
    """One server for the cases that only read errors, so each case does not start one."""
    with serve(create_app(SimulatorConfig())) as server, _client(server) as client:
        yield client


def test_completion_answers_with_usage(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="gpt-4o", messages=HELLO, n=2)
    assert completion.id.startswith("chatcmpl-")
    assert (completion.object, completion.created, completion.model) == (
        "chat.completion",
        START,
        "gpt-4o",
    )
    assert [choice.index for choice in completion.choices] == [0, 1]
    message = completion.choices[0].message
    reply = "Simulated reply from gpt-4o to: 'Hello there'."
    assert (message.role, message.content) == ("assistant", reply)
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage is not None
    assert usage.completion_tokens == 2 * count_tokens(reply)  # both choices
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 0
    assert completion.service_tier == "default"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(completion.id)  # not stored


def test_multi_turn_chat_reads_its_history_from_the_cache(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model="gpt-4.1", messages=HELLO)
    history = [*HELLO, {"role": "assistant", "content": first.choices[0].message.content}]
    second = client.chat.completions.create(
        model="gpt-4.1", messages=[*history, {"role": "user", "content": "And then?"}]
    )
    assert second.usage is not None
    assert second.usage.prompt_tokens_details is not None
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert 0 < cached < second.usage.prompt_tokens
    other_model = client.chat.completions.create(model="gpt-4o", messages=[*history, HELLO[0]])
    assert other_model.usage is not None
    assert other_model.usage.prompt_tokens_details is not None
    assert other_model.usage.prompt_tokens_details.cached_tokens == 0


def test_reasoning_models_report_reasoning_tokens(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="o3", messages=HELLO, reasoning_effort="low", service_tier="flex"
    )
    assert completion.usage is not None
    assert completion.usage.completion_tokens_details is not None
    thinking = completion.usage.completion_tokens_details.reasoning_tokens
    assert thinking is not None
    assert 0 < thinking < completion.usage.completion_tokens
    assert completion.service_tier == "flex"


def test_token_limit_cuts_the_answer(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, max_completion_tokens=4
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None
    assert completion.usage.completion_tokens <= 4
    assert completion.choices[0].message.content == "Simulated reply from"


def test_function_call_then_tool_result(client: openai.OpenAI) -> None:
    called = client.chat.completions.create(model="gpt-4o", messages=HELLO, tools=[LOOKUP])
    choice = called.choices[0]
    assert (choice.finish_reason, choice.message.content) == ("tool_calls", None)
    assert choice.message.tool_calls is not None
    [call] = choice.message.tool_calls
    assert call.type == "function"
    assert (call.function.name, call.function.arguments) == ("lookup", "{}")
    answered = client.chat.completions.create(
        model="gpt-4o",
        tools=[LOOKUP],
        messages=[
            *HELLO,
            choice.message.to_dict(),
            {"role": "tool", "tool_call_id": call.id, "content": "42"},
        ],
    )
    assert answered.choices[0].finish_reason == "stop"
    assert "The function lookup returned: 42" in (answered.choices[0].message.content or "")
    plain = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, tools=[LOOKUP], tool_choice="none"
    )
    assert plain.choices[0].message.tool_calls is None


def test_stream_helper_and_usage_chunk(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="gpt-4o", messages=HELLO, stream_options={"include_usage": True}
    ) as stream:
        deltas = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert "".join(deltas) == final.choices[0].message.content
    text = final.choices[0].message.content or ""
    assert final.usage is not None
    assert final.usage.completion_tokens == count_tokens(text)
    raw = client.chat.completions.create(
        model="gpt-4o", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(raw)
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert [chunk.usage for chunk in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert (chunks[-1].choices, chunks[-1].usage) == ([], final.usage)
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_stream_of_a_tool_call(client: openai.OpenAI) -> None:
    with client.chat.completions.stream(model="gpt-4o", messages=HELLO, tools=[LOOKUP]) as stream:
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    function = choice.message.tool_calls[0].function
    assert (function.name, function.arguments) == ("lookup", "{}")


def test_raw_stream_is_data_lines_ending_in_done(server: ServerThread) -> None:
    body = json.dumps({"model": "gpt-4o", "messages": HELLO, "stream": True}).encode()
    request = urllib.request.Request(
        server.url + "/v1/chat/completions",
        data=body,
        headers={"Authorization": "Bearer sk-test", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        blocks = response.read().decode().split("\n\n")
    assert blocks[-2:] == ["data: [DONE]", ""]
    assert all(block.startswith("data: {") for block in blocks[:-2])
    assert "usage" not in json.loads(blocks[0][len("data: ") :])  # not asked for


def test_stored_completions_round_trip(client: openai.OpenAI, clock: FakeClock) -> None:
    made = []
    for index, model in enumerate(["gpt-4o", "gpt-4o-mini", "gpt-4o"]):
        made.append(
            client.chat.completions.create(
                model=model,
                messages=[
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": [{"type": "text", "text": f"Question {index}"}]},
                ],
                store=True,
                metadata={"team": "a" if index < 2 else "b"},
            )
        )
        clock.now += 1
    assert [c.id for c in client.chat.completions.list()] == [c.id for c in made]  # oldest first
    assert [c.id for c in client.chat.completions.list(model="gpt-4o")] == [made[0].id, made[2].id]
    assert [c.id for c in client.chat.completions.list(metadata={"team": "a"})] == [
        made[0].id,
        made[1].id,
    ]
    page = client.chat.completions.list(limit=1, order="desc")
    assert ([c.id for c in page.data], page.has_more) == ([made[2].id], True)
    after = client.chat.completions.list(limit=5, after=made[0].id)
    assert [c.id for c in after.data] == [made[1].id, made[2].id]
    stored = client.chat.completions.retrieve(made[0].id)
    assert (stored.choices[0].message.content, stored.metadata) == (
        made[0].choices[0].message.content,
        {"team": "a"},
    )
    assert client.chat.completions.update(made[0].id, metadata={"team": "c"}).metadata == {
        "team": "c"
    }
    messages = client.chat.completions.messages.list(made[0].id)
    assert [(m.id, m.role) for m in messages.data] == [
        (f"{made[0].id}-0", "system"),
        (f"{made[0].id}-1", "user"),
    ]
    assert messages.data[1].content == "Question 0"
    assert messages.data[1].to_dict()["content_parts"] == [{"type": "text", "text": "Question 0"}]
    deleted = client.chat.completions.delete(made[0].id)
    assert (deleted.id, deleted.object, deleted.deleted) == (
        made[0].id,
        "chat.completion.deleted",
        True,
    )
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.messages.list(made[0].id)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": HELLO}, "model"),
        ({"model": "gpt-4o"}, "messages"),
        ({"model": "gpt-4o", "messages": []}, "messages"),
        ({"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
        ({"model": "gpt-4o", "messages": [{"role": "user"}]}, "messages[0].content"),
        (
            {"model": "gpt-4o", "messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        ({"model": "gpt-4o", "messages": HELLO, "stream_options": {}}, "stream_options"),
        ({"model": "gpt-4o", "messages": HELLO, "n": 0}, "n"),
        ({"model": "gpt-4o", "messages": HELLO, "service_tier": "gold"}, "service_tier"),
        ({"model": "gpt-4o", "messages": HELLO, "tool_choice": "always"}, "tool_choice"),
        (
            {"model": "gpt-4o", "messages": HELLO, "tools": [{"type": "function"}]},
            "tools[0].function.name",
        ),
    ],
)
def test_invalid_bodies_name_the_param(
    shared: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as invalid:
        shared.post("/chat/completions", body=body, cast_to=object)
    assert (invalid.value.param, invalid.value.type) == (param, "invalid_request_error")

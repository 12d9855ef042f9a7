"""Streamed runs through the openai client's helpers, the raw SSE format, and the stream gate."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from openai.lib.streaming import AssistantEventHandler
from openai.types.beta.threads import Text, TextDelta
from openai.types.beta.threads.runs import RunStep, ToolCall

from tests.servers import ServerThread, serve
from tollhouse_simulator import SimulatorConfig, create_app

MESSAGE_EVENTS = [
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",
    "thread.message.delta",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.step.completed",
]
TOOL_EVENTS = [
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.run.step.delta",
]


class Recorder(AssistantEventHandler):
    def __init__(self) -> None:
        super().__init__()
        self.text = ""
        self.done_texts: list[str] = []
        self.tool_calls: list[str] = []
        self.finished_steps: list[str] = []

    def on_text_delta(self, delta: TextDelta, snapshot: Text) -> None:
        self.text += delta.value or ""

    def on_text_done(self, text: Text) -> None:
        self.done_texts.append(text.value)

    def on_tool_call_created(self, tool_call: ToolCall) -> None:
        self.tool_calls.append(tool_call.type)

    def on_run_step_done(self, run_step: RunStep) -> None:
        self.finished_steps.append(run_step.status)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    config = SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.06)
    with serve(create_app(config)) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def setup(client: openai.OpenAI, tools: list[Any] | None = None) -> tuple[str, str]:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=tools or [])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "Stream me a reply"}])
    return assistant.id, thread.id


def test_run_stream_sends_the_documented_sequence(client: openai.OpenAI) -> None:
    assistant_id, thread_id = setup(client)
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        names = [event.event for event in stream]
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    assert names == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        *MESSAGE_EVENTS,
        "thread.run.completed",
    ]
    assert final.status == "completed"
    assert final.usage is not None
    polled = client.beta.threads.runs.retrieve(final.id, thread_id=thread_id)
    assert polled.status == "completed"
    assert polled.usage == final.usage
    [message] = messages
    stored = client.beta.threads.messages.retrieve(message.id, thread_id=thread_id)
    assert message.content[0].text.value == stored.content[0].text.value
    assert stream.text == stored.content[0].text.value
    assert stream.done_texts == [stream.text]


def test_tool_stream_then_submit_tool_outputs_stream(client: openai.OpenAI) -> None:
    tools = [{"type": "code_interpreter"}, {"type": "function", "function": {"name": "lookup"}}]
    assistant_id, thread_id = setup(client, tools)
    with client.beta.threads.runs.stream(
        thread_id=thread_id, assistant_id=assistant_id, event_handler=Recorder()
    ) as stream:
        events = list(stream)
        waiting = stream.get_final_run()
        steps = stream.get_final_run_steps()
    assert [event.event for event in events] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        *TOOL_EVENTS,
        "thread.run.step.delta",
        "thread.run.step.completed",
        *TOOL_EVENTS,
        "thread.run.requires_action",
    ]
    assert stream.tool_calls == ["code_interpreter"]  # the function call is index 0 again
    assert stream.finished_steps == ["completed"]
    assert [s.step_details.tool_calls[0].type for s in steps] == [
        "code_interpreter",
        "function",
    ]
    assert steps[1].status == "in_progress"
    code = steps[0].step_details.tool_calls[0]
    assert code.code_interpreter.outputs[0].logs == "4\n"
    assert waiting.status == "requires_action"
    assert waiting.usage is None
    [call] = waiting.required_action.submit_tool_outputs.tool_calls
    with client.beta.threads.runs.submit_tool_outputs_stream(
        thread_id=thread_id,
        run_id=waiting.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "42"}],
        event_handler=Recorder(),
    ) as resumed:
        names = [event.event for event in resumed]
        final = resumed.get_final_run()
    assert names == [
        "thread.run.step.completed",
        "thread.run.queued",
        "thread.run.in_progress",
        *MESSAGE_EVENTS,
        "thread.run.completed",
    ]
    assert final.status == "completed"
    assert final.usage is not None
    assert "lookup returned: 42" in resumed.text
    steps = client.beta.threads.runs.steps.list(final.id, thread_id=thread_id).data
    assert sum(s.usage.total_tokens for s in steps) == final.usage.total_tokens


def test_create_and_run_stream_starts_with_the_thread(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    with client.beta.threads.create_and_run_stream(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hi"}]},
    ) as stream:
        events = list(stream)
        stream.until_done()
    assert events[0].event == "thread.created"
    assert [e.event for e in events[1:4]] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
    ]
    assert events[-1].event == "thread.run.completed"
    assert events[-1].data.thread_id == events[0].data.id


def test_raw_event_stream_format(server: ServerThread, client: openai.OpenAI) -> None:
    assistant_id, thread_id = setup(client)
    request = urllib.request.Request(
        f"{server.url}/v1/threads/{thread_id}/runs",
        data=json.dumps({"assistant_id": assistant_id, "stream": True}).encode(),
        headers={
            "Authorization": "Bearer sk-test",
            "OpenAI-Beta": "assistants=v2",
            "Content-Type": "application/json",
        },
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    blocks = body.split("\n\n")
    assert blocks[-2:] == ["event: done\ndata: [DONE]", ""]
    first_name, first_data = blocks[0].split("\n")
    assert first_name == "event: thread.run.created"
    assert json.loads(first_data.removeprefix("data: "))["status"] == "queued"
    completed = json.loads(blocks[-3].split("\n")[1].removeprefix("data: "))
    assert (completed["object"], completed["status"]) == ("thread.run", "completed")
    delta = next(b for b in blocks if b.startswith("event: thread.message.delta"))
    payload = json.loads(delta.split("\n")[1].removeprefix("data: "))
    assert payload["object"] == "thread.message.delta"
    assert payload["delta"]["content"][0]["index"] == 0
    assert payload["delta"]["content"][0]["text"]["annotations"] == []


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_stream_gate_holds_everything_after_the_first_event() -> None:
    gate = threading.Event()
    clock = FakeClock()
    config = SimulatorConfig(clock=clock, stream_gate=gate, queued_seconds=1, in_progress_seconds=3)
    with (
        serve(create_app(config)) as server,
        openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        assistant_id, thread_id = setup(client)
        with client.beta.threads.runs.stream(
            thread_id=thread_id, assistant_id=assistant_id
        ) as stream:
            events = iter(stream)
            assert next(events).event == "thread.run.created"  # delivered while the gate is shut
            clock.now += 10
            polled = client.beta.threads.runs.list(thread_id).data[0]
            assert polled.status == "completed"  # the run moves on; the stream waits
            gate.set()
            rest = [event.event for event in events]
            final = stream.get_final_run()
    assert rest[0] == "thread.run.queued"
    assert rest[-1] == "thread.run.completed"
    assert len(rest) == 2 + len(MESSAGE_EVENTS) + 1
    assert final.usage == polled.usage

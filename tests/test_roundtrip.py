"""The real openai client, pointed at tollhouse with the simulator behind it.

Every resource family round-trips, and what the client gets through tollhouse
equals what the simulator answers directly.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tollhouse_simulator import SimulatorConfig, create_app


@pytest.fixture
def direct(simulator: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=simulator.url + "/v1", max_retries=0) as client:
        yield client


@pytest.fixture
def client(proxy: RunningProxy) -> openai.OpenAI:
    return proxy.client()


def same(through: Any, directly: Any) -> None:
    assert through.model_dump() == directly.model_dump()


def test_assistants_round_trip(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    created = client.beta.assistants.create(
        model="gpt-4o", name="helper", tools=[{"type": "code_interpreter"}]
    )
    assert created.id.startswith("asst_")
    same(client.beta.assistants.retrieve(created.id), direct.beta.assistants.retrieve(created.id))
    updated = client.beta.assistants.update(created.id, name="renamed")
    assert updated.name == "renamed"
    listed = client.beta.assistants.list()
    assert [a.id for a in listed.data] == [created.id]
    deleted = client.beta.assistants.delete(created.id)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as missing:
        client.beta.assistants.retrieve(created.id)
    assert missing.value.body["message"] == f"No assistant found with id '{created.id}'."  # type: ignore[index]


def test_threads_and_messages_round_trip(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    message = client.beta.threads.messages.create(thread.id, role="user", content="second")
    same(
        client.beta.threads.messages.retrieve(message.id, thread_id=thread.id),
        direct.beta.threads.messages.retrieve(message.id, thread_id=thread.id),
    )
    same(client.beta.threads.messages.list(thread.id), direct.beta.threads.messages.list(thread.id))
    client.beta.threads.update(thread.id, metadata={"customer": "42"})
    assert direct.beta.threads.retrieve(thread.id).metadata == {"customer": "42"}
    assert client.beta.threads.messages.delete(message.id, thread_id=thread.id).deleted
    assert client.beta.threads.delete(thread.id).deleted


def test_list_pagination(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    ids = [client.beta.assistants.create(model="gpt-4o-mini").id for _ in range(5)]
    first = client.beta.assistants.list(limit=2, order="asc")
    assert [a.id for a in first.data] == ids[:2]
    assert first.has_more is True
    second = client.beta.assistants.list(limit=2, order="asc", after=first.last_id)
    assert [a.id for a in second.data] == ids[2:4]
    before = client.beta.assistants.list(limit=2, order="asc", before=ids[4])
    assert [a.id for a in before.data] == ids[2:4]
    # the client's auto-pagination follows the cursors through tollhouse
    assert [a.id for a in client.beta.assistants.list(limit=2, order="asc")] == ids
    same(client.beta.assistants.list(limit=3), direct.beta.assistants.list(limit=3))


def test_polled_run_completes_with_usage(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(
        model="gpt-4o", tools=[{"type": "code_interpreter"}, {"type": "file_search"}]
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "plot it"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=20
    )
    assert run.status == "completed"
    assert run.usage is not None
    assert run.usage.total_tokens == run.usage.prompt_tokens + run.usage.completion_tokens > 0
    same(run, direct.beta.threads.runs.retrieve(run.id, thread_id=thread.id))
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc")
    tool_types = [
        call.type
        for step in steps.data
        if step.step_details.type == "tool_calls"
        for call in step.step_details.tool_calls
    ]
    assert "code_interpreter" in tool_types
    assert "file_search" in tool_types
    step = client.beta.threads.runs.steps.retrieve(
        steps.data[0].id, thread_id=thread.id, run_id=run.id
    )
    same(step, steps.data[0])
    runs = client.beta.threads.runs.list(thread.id)
    assert [r.id for r in runs.data] == [run.id]
    messages = client.beta.threads.messages.list(thread.id, run_id=run.id)
    assert messages.data[0].role == "assistant"


def test_function_call_and_submit_tool_outputs(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    )
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "look it up"}]},
        poll_interval_ms=20,
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    assert call.function.name == "lookup"
    run = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=run.thread_id,
        tool_outputs=[{"tool_call_id": call.id, "output": "42"}],
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    assert run.usage is not None


def test_streamed_run_event_by_event(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o", tools=[{"type": "code_interpreter"}])
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    stream = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id, stream=True
    )
    events = [event.event for event in stream]
    assert events[:3] == ["thread.run.created", "thread.run.queued", "thread.run.in_progress"]
    assert events[-1] == "thread.run.completed"
    assert "thread.run.step.delta" in events
    assert "thread.message.delta" in events


def test_stream_helper_and_submit_tool_outputs_stream(client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(
        model="gpt-4o",
        tools=[{"type": "function", "function": {"name": "weather", "parameters": {}}}],
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "weather?"}])
    with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        paused = stream.get_final_run()
    assert paused.status == "requires_action"
    assert paused.required_action is not None
    call = paused.required_action.submit_tool_outputs.tool_calls[0]
    with client.beta.threads.runs.submit_tool_outputs_stream(
        run_id=paused.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}],
    ) as stream:
        stream.until_done()
        final = stream.get_final_run()
        messages = stream.get_final_messages()
    assert final.status == "completed"
    assert final.usage is not None
    assert messages
    assert messages[0].role == "assistant"


def test_file_upload_and_download_are_byte_exact(
    client: openai.OpenAI, direct: openai.OpenAI
) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    uploaded = client.files.create(file=("data.bin", io.BytesIO(payload)), purpose="assistants")
    assert uploaded.bytes == len(payload)
    assert uploaded.filename == "data.bin"
    same(client.files.retrieve(uploaded.id), direct.files.retrieve(uploaded.id))
    assert client.files.content(uploaded.id).read() == payload
    assert [f.id for f in client.files.list()] == [uploaded.id]
    assert client.files.delete(uploaded.id).deleted


def test_vector_stores_files_and_batches(client: openai.OpenAI, direct: openai.OpenAI) -> None:
    first = client.files.create(file=("a.txt", io.BytesIO(b"alpha " * 500)), purpose="assistants")
    second = client.files.create(file=("b.txt", io.BytesIO(b"beta " * 800)), purpose="assistants")
    store = client.vector_stores.create(name="docs")
    assert store.usage_bytes == 0
    attached = client.vector_stores.files.create_and_poll(
        vector_store_id=store.id, file_id=first.id, poll_interval_ms=20
    )
    assert attached.status == "completed"
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=store.id, file_ids=[second.id], poll_interval_ms=20
    )
    assert batch.file_counts.completed == 1
    grown = client.vector_stores.retrieve(store.id)
    assert grown.usage_bytes > 0
    assert grown.file_counts.total == 2
    same(grown, direct.vector_stores.retrieve(store.id))
    listed = client.vector_stores.files.list(store.id)
    assert {f.id for f in listed.data} == {first.id, second.id}
    results = client.vector_stores.search(store.id, query="alpha")
    assert any(r.file_id == first.id for r in results.data)
    assert client.vector_stores.files.delete(file_id=first.id, vector_store_id=store.id).deleted
    assert client.vector_stores.delete(store.id).deleted


def test_streaming_is_not_buffered() -> None:
    """The first event reaches the client while the upstream still holds the second."""
    gate = threading.Event()
    app = create_app(
        SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05, stream_gate=gate)
    )
    with serve(app) as upstream:
        with openai.OpenAI(api_key="sk-test", base_url=upstream.url + "/v1") as setup:
            assistant = setup.beta.assistants.create(model="gpt-4o")
            thread = setup.beta.threads.create()
        with running_proxy(upstream.url + "/v1") as gated:
            stream = gated.client().beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant.id, stream=True
            )
            events = iter(stream)
            first = next(events)
            # the upstream has sent exactly one event and is waiting on the gate
            assert first.event == "thread.run.created"
            assert not gate.is_set()
            gate.set()
            rest = [event.event for event in events]
    assert rest[-1] == "thread.run.completed"

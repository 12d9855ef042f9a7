"""Run lifecycles on an injected clock: status, steps, messages and usage over time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.servers import serve
from tollhouse_simulator import SimulatorConfig, create_app
from tollhouse_simulator.tokens import count_tokens

START = 1_700_000_000.0
INCLUDE = "step_details.tool_calls[*].file_search.results[*].content"
RUN_FIELDS = {
    "id",
    "object",
    "created_at",
    "thread_id",
    "assistant_id",
    "status",
    "required_action",
    "last_error",
    "expires_at",
    "started_at",
    "cancelled_at",
    "failed_at",
    "completed_at",
    "model",
    "instructions",
    "tools",
    "metadata",
    "usage",
    "incomplete_details",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
}
STEP_FIELDS = {
    "id",
    "object",
    "created_at",
    "assistant_id",
    "thread_id",
    "run_id",
    "type",
    "status",
    "step_details",
    "last_error",
    "expired_at",
    "cancelled_at",
    "failed_at",
    "completed_at",
    "metadata",
    "usage",
}


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


@pytest.fixture
def client(clock: FakeClock) -> Iterator[openai.OpenAI]:
    config = SimulatorConfig(
        clock=clock,
        queued_seconds=1.0,
        in_progress_seconds=3.0,
        cancelling_seconds=1.0,
        file_processing_seconds=0.0,
    )
    with (
        serve(create_app(config)) as server,
        openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        yield client


class Thread:
    """A thread with an assistant, and shortcuts to read its run as the clock moves."""

    def __init__(self, client: openai.OpenAI, tools: list[Any] | None = None, **thread: Any):
        self.client = client
        self.assistant = client.beta.assistants.create(
            model="gpt-4o", instructions="Answer in one line.", tools=tools or []
        )
        self.thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "How many words are here?"}], **thread
        )

    def run(self, **options: Any) -> Any:
        return self.client.beta.threads.runs.create(
            self.thread.id, assistant_id=self.assistant.id, **options
        )

    def get(self, run_id: str) -> Any:
        return self.client.beta.threads.runs.retrieve(run_id, thread_id=self.thread.id)

    def steps(self, run_id: str, **options: Any) -> list[Any]:
        page = self.client.beta.threads.runs.steps.list(
            run_id, thread_id=self.thread.id, order="asc", **options
        )
        return list(page.data)

    def messages(self, **options: Any) -> list[Any]:
        return list(
            self.client.beta.threads.messages.list(self.thread.id, order="asc", **options).data
        )


def total(usages: list[Any]) -> tuple[int, int, int]:
    return (
        sum(u.prompt_tokens for u in usages),
        sum(u.completion_tokens for u in usages),
        sum(u.total_tokens for u in usages),
    )


def test_run_without_tools_goes_queued_in_progress_completed(
    client: openai.OpenAI, clock: FakeClock
) -> None:
    t = Thread(client)
    created = t.run()
    assert set(created.to_dict()) >= RUN_FIELDS
    assert created.id.startswith("run_")
    assert (created.status, created.usage, created.started_at) == ("queued", None, None)
    assert created.expires_at == int(START) + 600
    assert (created.model, created.instructions) == ("gpt-4o", "Answer in one line.")
    clock.to(0.99)
    assert t.get(created.id).status == "queued"
    clock.to(1.0)
    running = t.get(created.id)
    assert (running.status, running.started_at, running.usage) == (
        "in_progress",
        int(START) + 1,
        None,
    )
    [step] = t.steps(created.id)
    assert set(step.to_dict()) >= STEP_FIELDS
    assert (step.type, step.status, step.usage) == ("message_creation", "in_progress", None)
    reply = t.messages()[-1]
    assert (reply.role, reply.status, reply.content) == ("assistant", "in_progress", [])
    assert step.step_details.message_creation.message_id == reply.id
    clock.to(2.6)  # two of three deltas have arrived
    partial = t.messages()[-1].content[0].text.value
    assert partial
    assert t.get(created.id).usage is None
    clock.to(4.0)
    done = t.get(created.id)
    assert (done.status, done.completed_at, done.expires_at) == ("completed", int(START) + 4, None)
    prompt = 8 + count_tokens("Answer in one line.") + 4 + count_tokens("How many words are here?")
    assert done.usage.prompt_tokens == prompt
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    [step] = t.steps(created.id)
    assert (step.status, step.completed_at) == ("completed", int(START) + 4)
    assert total([step.usage]) == total([done.usage])
    [answer] = t.messages(run_id=created.id)
    text = answer.content[0].text.value
    assert text.startswith(partial)
    assert "How many words are here?" in text
    assert (answer.status, answer.assistant_id, answer.run_id) == (
        "completed",
        t.assistant.id,
        created.id,
    )
    assert done.usage.completion_tokens == count_tokens(text)


def test_tool_steps_appear_as_the_run_reaches_them(client: openai.OpenAI, clock: FakeClock) -> None:
    document = client.files.create(
        file=("guide.txt", b"Count how many words are here, then answer."), purpose="assistants"
    )
    store = client.vector_stores.create(file_ids=[document.id])
    t = Thread(
        client,
        tools=[{"type": "code_interpreter"}, {"type": "file_search"}],
        tool_resources={"file_search": {"vector_store_ids": [store.id]}},
    )
    clock.to(0.5)
    run = t.run()
    assert client.vector_stores.retrieve(store.id).last_active_at == int(START)
    clock.to(1.6)  # in progress since 1.5; each of three steps takes one second
    [code] = t.steps(run.id)
    call = code.step_details.tool_calls[0]
    assert (code.type, code.status, call.type) == ("tool_calls", "in_progress", "code_interpreter")
    assert call.id.startswith("call_")
    assert "print(len(text.split()))" in call.code_interpreter.input
    assert call.code_interpreter.outputs == []
    clock.to(2.0)
    outputs = t.steps(run.id)[0].step_details.tool_calls[0].code_interpreter.outputs
    assert [(o.type, o.logs) for o in outputs] == [("logs", "5\n")]
    clock.to(2.5)
    code, search = t.steps(run.id)
    assert (code.status, search.status, search.usage) == ("completed", "in_progress", None)
    assert code.usage is not None
    clock.to(3.0)
    found = t.steps(run.id)[1].step_details.tool_calls[0].file_search
    assert found.ranking_options.ranker == "default_2024_08_21"
    assert [(r.file_id, r.file_name) for r in found.results] == [(document.id, "guide.txt")]
    assert found.results[0].content is None  # content only when asked for
    with_content = t.steps(run.id, include=[INCLUDE])[1].step_details.tool_calls[0].file_search
    assert with_content.results[0].content[0].text == "Count how many words are here, then answer."
    single = client.beta.threads.runs.steps.retrieve(
        search.id, thread_id=t.thread.id, run_id=run.id, include=[INCLUDE]
    )
    assert single.step_details.tool_calls[0].file_search.results[0].content is not None
    clock.to(4.5)
    done = t.get(run.id)
    steps = t.steps(run.id)
    assert [s.type for s in steps] == ["tool_calls", "tool_calls", "message_creation"]
    assert total([s.usage for s in steps]) == total([done.usage])
    assert steps[2].usage.prompt_tokens > steps[0].usage.prompt_tokens  # tool results were read
    assert "printed 5" in t.messages()[-1].content[0].text.value
    with pytest.raises(openai.BadRequestError) as invalid:
        t.steps(run.id, include=["step_details.other"])
    assert invalid.value.param == "include"


def test_function_call_requires_action_then_completes(
    client: openai.OpenAI, clock: FakeClock
) -> None:
    weather = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    t = Thread(client, tools=[weather])
    run = t.run()
    clock.to(1.0)
    [step] = t.steps(run.id)
    assert step.step_details.tool_calls[0].function.name == "get_weather"
    clock.to(4.0)
    waiting = t.get(run.id)
    assert (waiting.status, waiting.usage) == ("requires_action", None)
    [call] = waiting.required_action.submit_tool_outputs.tool_calls
    assert (call.type, call.function.name, call.function.arguments) == (
        "function",
        "get_weather",
        "{}",
    )
    assert t.steps(run.id)[0].step_details.tool_calls[0].function.output is None
    with pytest.raises(openai.BadRequestError, match="Expected tool outputs"):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=t.thread.id, tool_outputs=[{"tool_call_id": "call_x", "output": "1"}]
        )
    clock.to(5.0)
    resumed = client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=t.thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}]
    )
    assert (resumed.status, resumed.required_action, resumed.usage) == ("queued", None, None)
    [function_step] = t.steps(run.id)
    assert function_step.status == "completed"
    assert function_step.step_details.tool_calls[0].function.output == "sunny"
    clock.to(6.0)
    assert t.get(run.id).status == "in_progress"
    clock.to(9.0)
    done = t.get(run.id)
    assert done.status == "completed"
    assert total([s.usage for s in t.steps(run.id)]) == total([done.usage])
    assert "get_weather returned: sunny" in t.messages()[-1].content[0].text.value
    with pytest.raises(openai.BadRequestError, match='Runs in status "completed"'):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=t.thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "x"}]
        )


def test_unanswered_run_expires(client: openai.OpenAI, clock: FakeClock) -> None:
    t = Thread(client, tools=[{"type": "function", "function": {"name": "f"}}])
    run = t.run()
    clock.to(599)
    assert t.get(run.id).status == "requires_action"
    clock.to(600)
    expired = t.get(run.id)
    assert (expired.status, expired.expires_at, expired.required_action) == ("expired", None, None)
    [step] = t.steps(run.id)
    assert (step.status, step.expired_at) == ("expired", int(START) + 600)
    assert expired.usage is not None
    assert total([step.usage]) == total([expired.usage])


def test_cancel_goes_through_cancelling(client: openai.OpenAI, clock: FakeClock) -> None:
    t = Thread(client)
    run = t.run()
    clock.to(2.0)  # the message is being written
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=t.thread.id)
    assert cancelling.status == "cancelling"
    clock.to(2.9)
    assert t.get(run.id).status == "cancelling"
    clock.to(3.0)
    cancelled = t.get(run.id)
    assert (cancelled.status, cancelled.cancelled_at, cancelled.completed_at) == (
        "cancelled",
        int(START) + 3,
        None,
    )
    assert cancelled.usage is not None
    assert cancelled.usage.completion_tokens == 0
    [step] = t.steps(run.id)
    assert (step.status, step.cancelled_at) == ("cancelled", int(START) + 3)
    message = t.messages()[-1]
    assert (message.status, message.incomplete_details.reason) == ("incomplete", "run_cancelled")
    clock.to(10.0)
    assert t.get(run.id).status == "cancelled"  # nothing planned survives a cancel
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'"):
        client.beta.threads.runs.cancel(run.id, thread_id=t.thread.id)


def test_one_active_run_per_thread(client: openai.OpenAI, clock: FakeClock) -> None:
    t = Thread(client)
    run = t.run()
    with pytest.raises(openai.BadRequestError) as busy:
        t.run()
    assert busy.value.message.endswith(f"Thread {t.thread.id} already has an active run {run.id}.")
    with pytest.raises(openai.BadRequestError, match="while a run"):
        client.beta.threads.messages.create(t.thread.id, role="user", content="more")
    clock.to(4.0)
    second = t.run(additional_messages=[{"role": "user", "content": "and now?"}])
    assert second.status == "queued"
    assert [m.content[0].text.value for m in t.messages()][-1] == "and now?"


def test_run_overrides_and_listing(client: openai.OpenAI, clock: FakeClock) -> None:
    t = Thread(client)
    first = t.run(
        model="gpt-4o-mini",
        instructions="Be terse.",
        additional_instructions="Use French.",
        tools=[{"type": "code_interpreter"}],
        temperature=0.5,
        metadata={"job": "1"},
    )
    assert (first.model, first.instructions) == ("gpt-4o-mini", "Be terse.\nUse French.")
    assert ([tool.type for tool in first.tools], first.temperature) == (["code_interpreter"], 0.5)
    assert first.metadata == {"job": "1"}
    updated = client.beta.threads.runs.update(
        first.id, thread_id=t.thread.id, metadata={"job": "2"}
    )
    assert updated.metadata == {"job": "2"}
    clock.to(10)
    second = t.run()
    listed = client.beta.threads.runs.list(t.thread.id, limit=1)
    assert ([r.id for r in listed.data], listed.has_more) == ([second.id], True)
    older = client.beta.threads.runs.list(t.thread.id, after=second.id)
    assert [r.id for r in older.data] == [first.id]
    assert older.data[0].status == "completed"


def test_create_and_run(client: openai.OpenAI, clock: FakeClock) -> None:
    assistant = client.beta.assistants.create(model="gpt-4o")
    run = client.beta.threads.create_and_run(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "hello there"}], "metadata": {"a": "b"}},
    )
    assert run.thread_id.startswith("thread_")
    assert run.status == "queued"
    thread = client.beta.threads.retrieve(run.thread_id)
    assert thread.metadata == {"a": "b"}
    clock.to(4.0)
    done = client.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id)
    assert done.status == "completed"
    assert done.usage is not None
    texts = [m.content[0].text.value for m in client.beta.threads.messages.list(run.thread_id)]
    assert len(texts) == 2
    assert "hello there" in texts[0]


def test_token_limits_end_a_run_incomplete(client: openai.OpenAI, clock: FakeClock) -> None:
    t = Thread(client)
    client.beta.threads.messages.create(t.thread.id, role="user", content="word " * 300)
    run = t.run(max_prompt_tokens=256)
    clock.to(4.0)
    done = t.get(run.id)
    assert (done.status, done.incomplete_details.reason) == ("incomplete", "max_prompt_tokens")
    assert done.usage.prompt_tokens > 256


def test_truncation_limits_the_prompt(client: openai.OpenAI, clock: FakeClock) -> None:
    t = Thread(client)
    client.beta.threads.messages.create(t.thread.id, role="user", content="word " * 30)
    full = t.run()
    clock.to(4.0)
    short = t.run(truncation_strategy={"type": "last_messages", "last_messages": 1})
    clock.to(8.0)
    assert t.get(full.id).usage.prompt_tokens > t.get(short.id).usage.prompt_tokens


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({}, 400, "assistant_id"),
        ({"assistant_id": "asst_nope"}, 404, None),
        ({"assistant_id": "ASSISTANT", "max_prompt_tokens": 10}, 400, "max_prompt_tokens"),
        ({"assistant_id": "ASSISTANT", "tool_choice": "sometimes"}, 400, "tool_choice"),
    ],
)
def test_run_create_errors(
    client: openai.OpenAI, body: dict[str, Any], status: int, param: str | None
) -> None:
    t = Thread(client)
    if body.get("assistant_id") == "ASSISTANT":
        body = {**body, "assistant_id": t.assistant.id}
    with pytest.raises(openai.APIStatusError) as refused:
        client.post(
            f"/threads/{t.thread.id}/runs",
            body=body,
            cast_to=object,
            options={"headers": {"OpenAI-Beta": "assistants=v2"}},
        )
    assert (refused.value.status_code, refused.value.body["param"]) == (status, param)


def test_unknown_run_and_thread(client: openai.OpenAI) -> None:
    t = Thread(client)
    with pytest.raises(openai.NotFoundError, match=r"No run found with id 'run_x'\."):
        t.get("run_x")
    with pytest.raises(openai.NotFoundError, match=r"No thread found with id 'thread_x'\."):
        client.beta.threads.runs.create("thread_x", assistant_id=t.assistant.id)


def test_runs_with_file_search_mark_their_stores_active(
    client: openai.OpenAI, clock: FakeClock
) -> None:
    store = client.vector_stores.create()
    t = Thread(client, tools=[{"type": "file_search", "file_search": {"max_num_results": 5}}])
    client.beta.threads.update(
        t.thread.id, tool_resources={"file_search": {"vector_store_ids": [store.id]}}
    )
    clock.to(50)
    run = t.run()
    assert run.tools[0].file_search.max_num_results == 5
    assert client.vector_stores.retrieve(store.id).last_active_at == int(START) + 50
    with pytest.raises(openai.BadRequestError) as invalid:
        t.run(
            tools=[
                {"type": "file_search", "file_search": {"ranking_options": {"score_threshold": 2}}}
            ]
        )
    assert invalid.value.param == "tools[0].file_search.ranking_options.score_threshold"

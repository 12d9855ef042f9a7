"""Usage extraction from real simulator responses and streams, and from hand-made edge cases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.servers import serve
from tollhouse.api.classify import ROUTES, Kind, Operation, classify
from tollhouse.metering.meter import (
    METERED_OPERATIONS,
    ObjectSeen,
    Observation,
    RunSeen,
    StepSeen,
    StreamMeter,
    Usage,
    observe_event,
    observe_json,
    wants_body,
)
from tollhouse.metering.sse import SSEEvent, SSEParser
from tollhouse_simulator import SimulatorConfig, create_app

START = 1_700_000_000
TOOLS: list[Any] = [{"type": "code_interpreter"}, {"type": "file_search"}]
FUNCTION: list[Any] = [{"type": "function", "function": {"name": "lookup"}}]
KEEP = {"tollhouse_keep": "true"}


def describe(seen: Observation) -> str:
    """A short, exact summary of one observation, for tables."""
    if isinstance(seen, RunSeen):
        flags = [f for f, on in (("ci", seen.code_interpreter), ("fs", seen.file_search)) if on]
        usage = "usage" if seen.usage else "-"
        return " ".join(["run", seen.status, usage, "done" if seen.finished_at else "-", *flags])
    if isinstance(seen, StepSeen):
        calls = ",".join(call.type for call in seen.tool_calls) or "-"
        return f"step {seen.status} {calls} {'usage' if seen.usage else '-'}"
    parent = seen.parent_id.split("_")[0] if seen.parent_id else "-"
    size = "-" if seen.usage_bytes is None else str(seen.usage_bytes)
    active = "-" if seen.last_active_at is None else "active"
    return f"{seen.kind} {parent} {'keep' if seen.keep else '-'} {size} {active}"


# -- responses recorded from the simulator -----------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        return self.now


Recorded = tuple[Operation, int, bytes]


def record(response: Any) -> Recorded:
    http = response.http_response
    return classify(http.request.method, http.request.url.path), http.status_code, http.content


def record_all(client: openai.OpenAI, clock: FakeClock) -> Iterator[tuple[str, Recorded]]:
    beta = client.beta
    raw_runs, raw_steps = beta.threads.runs.with_raw_response, beta.threads.runs.steps
    assistant = record(
        beta.assistants.with_raw_response.create(model="gpt-4o", tools=TOOLS, metadata=KEEP)
    )
    yield "assistant created", assistant
    assistant_id = json.loads(assistant[2])["id"]
    thread = record(
        beta.threads.with_raw_response.create(messages=[{"role": "user", "content": "2+2?"}])
    )
    yield "thread created", thread
    thread_id = json.loads(thread[2])["id"]
    yield (
        "message created",
        record(
            beta.threads.messages.with_raw_response.create(thread_id, role="user", content="and 3?")
        ),
    )
    yield "messages listed", record(beta.threads.messages.with_raw_response.list(thread_id))
    file = client.files.with_raw_response.create(
        file=("a.txt", b"twelve bytes"), purpose="assistants"
    )
    yield "file created", record(file)
    file_id = file.parse().id
    yield "file content", record(client.files.with_raw_response.content(file_id))
    store = client.vector_stores.with_raw_response.create(file_ids=[file_id], metadata=KEEP)
    yield "vector store created", record(store)
    store_id = store.parse().id
    other = client.files.create(file=("b.txt", b"more"), purpose="assistants")
    yield (
        "file batch created",
        record(
            client.vector_stores.file_batches.with_raw_response.create(
                store_id, file_ids=[other.id]
            )
        ),
    )
    clock.now += 5
    yield (
        "vector store retrieved",
        record(client.vector_stores.with_raw_response.retrieve(store_id)),
    )
    yield "vector stores listed", record(client.vector_stores.with_raw_response.list())
    yield (
        "vector store updated",
        record(
            client.vector_stores.with_raw_response.update(
                store_id, metadata={"tollhouse_keep": "no"}
            )
        ),
    )
    upload = client.uploads.with_raw_response.create(
        bytes=3, filename="u.txt", mime_type="text/plain", purpose="assistants"
    )
    yield "upload created", record(upload)
    part = client.uploads.parts.create(upload.parse().id, data=b"abc")
    yield (
        "upload completed",
        record(client.uploads.with_raw_response.complete(upload.parse().id, part_ids=[part.id])),
    )

    run = raw_runs.create(thread_id, assistant_id=assistant_id, metadata=KEEP)
    yield "run created", record(run)
    run_id = run.parse().id
    clock.now += 60
    yield "run completed", record(raw_runs.retrieve(run_id, thread_id=thread_id))
    steps = raw_steps.with_raw_response.list(run_id, thread_id=thread_id, order="asc")
    yield "steps listed", record(steps)
    first_step = steps.parse().data[0].id
    yield (
        "step retrieved",
        record(
            raw_steps.with_raw_response.retrieve(first_step, thread_id=thread_id, run_id=run_id)
        ),
    )

    waiting = raw_runs.create(thread_id, assistant_id=assistant_id, tools=FUNCTION).parse()
    clock.now += 60
    yield "run requires action", record(raw_runs.retrieve(waiting.id, thread_id=thread_id))
    yield (
        "function step listed",
        record(raw_steps.with_raw_response.list(waiting.id, thread_id=thread_id)),
    )
    action = beta.threads.runs.retrieve(waiting.id, thread_id=thread_id).required_action
    assert action is not None
    outputs = [
        {"tool_call_id": c.id, "output": "42"} for c in action.submit_tool_outputs.tool_calls
    ]
    yield (
        "tool outputs submitted",
        record(raw_runs.submit_tool_outputs(waiting.id, thread_id=thread_id, tool_outputs=outputs)),
    )
    clock.now += 60

    cancelled = raw_runs.create(thread_id, assistant_id=assistant_id).parse()
    yield "run cancelling", record(raw_runs.cancel(cancelled.id, thread_id=thread_id))
    clock.now += 60
    yield "run cancelled", record(raw_runs.retrieve(cancelled.id, thread_id=thread_id))

    expiring = raw_runs.create(thread_id, assistant_id=assistant_id, tools=FUNCTION).parse()
    clock.now += 60
    beta.threads.runs.retrieve(expiring.id, thread_id=thread_id)  # requires_action now
    clock.now += 3600
    yield "run expired", record(raw_runs.retrieve(expiring.id, thread_id=thread_id))

    long = beta.threads.create(messages=[{"role": "user", "content": "word " * 400}])
    short = raw_runs.create(long.id, assistant_id=assistant_id, max_prompt_tokens=256).parse()
    clock.now += 60
    yield "run incomplete", record(raw_runs.retrieve(short.id, thread_id=long.id))
    yield "runs listed", record(raw_runs.list(thread_id))

    yield (
        "thread created and run",
        record(
            beta.threads.with_raw_response.create_and_run(
                assistant_id=assistant_id, thread={"messages": [{"role": "user", "content": "hi"}]}
            )
        ),
    )
    try:
        raw_runs.retrieve("run_missing", thread_id=thread_id)
    except openai.NotFoundError as error:
        response = error.response
        yield "run not found", (classify("GET", response.request.url.path), 404, response.content)
    yield "vector store deleted", record(client.vector_stores.with_raw_response.delete(store_id))
    yield "assistant deleted", record(beta.assistants.with_raw_response.delete(assistant_id))


@pytest.fixture(scope="module")
def recorded() -> dict[str, Recorded]:
    clock = FakeClock()
    with (
        serve(create_app(SimulatorConfig(clock=clock))) as server,
        openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        return dict(record_all(client, clock))


RUN_DONE = "run completed usage done ci fs"
RECORDED = [
    ("assistant created", ["assistant - keep - -"]),
    ("thread created", ["thread - - - -"]),
    ("message created", ["message thread - - -"]),
    ("messages listed", []),
    ("file created", ["file - - 12 -"]),
    ("file content", []),
    ("vector store created", ["vector_store - keep 0 active"]),
    ("file batch created", ["file_batch vs - - -"]),
    ("vector store retrieved", ["vector_store - keep 16 active"]),
    ("vector stores listed", ["vector_store - keep 16 active"]),
    ("vector store updated", ["vector_store - - 16 active"]),
    ("upload created", ["upload - - 3 -"]),
    ("upload completed", ["file - - 3 -"]),
    ("run created", ["run queued - - ci fs", "run thread keep - -"]),
    ("run completed", [RUN_DONE]),
    (
        "steps listed",
        [
            "step completed code_interpreter usage",
            "step completed file_search usage",
            "step completed - usage",
        ],
    ),
    ("step retrieved", ["step completed code_interpreter usage"]),
    ("run requires action", ["run requires_action - -"]),
    ("function step listed", ["step in_progress function -"]),
    ("tool outputs submitted", ["run queued - -"]),
    ("run cancelling", ["run cancelling - - ci fs"]),
    ("run cancelled", ["run cancelled usage done ci fs"]),
    ("run expired", ["run expired usage -"]),  # runs carry no expiry time once expired
    ("run incomplete", ["run incomplete usage - ci fs"]),  # nor a finish time when incomplete
    (
        "runs listed",
        [
            "run expired usage -",
            "run cancelled usage done ci fs",
            "run completed usage done",
            RUN_DONE,
        ],
    ),
    ("thread created and run", ["run queued - - ci fs", "run thread - - -", "thread - - - -"]),
    ("run not found", []),
    ("vector store deleted", []),
    ("assistant deleted", []),
]


def test_every_recorded_response_has_a_row(recorded: dict[str, Recorded]) -> None:
    assert sorted(recorded) == sorted(name for name, _ in RECORDED)


@pytest.mark.parametrize(("name", "expected"), RECORDED, ids=[row[0] for row in RECORDED])
def test_recorded_responses(recorded: dict[str, Recorded], name: str, expected: list[str]) -> None:
    operation, status, body = recorded[name]
    assert [describe(seen) for seen in observe_json(operation, status, body)] == expected


def documents(body: bytes) -> list[dict[str, Any]]:
    document = json.loads(body)
    return list(document["data"]) if document.get("object") == "list" else [document]


def of_type(kind: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("object") == kind]


def test_recorded_runs_match_their_bodies(recorded: dict[str, Recorded]) -> None:
    pairs = [
        (seen, doc)
        for operation, status, body in recorded.values()
        if status == 200 and body.startswith(b"{")
        for seen, doc in zip(
            [s for s in observe_json(operation, status, body) if isinstance(s, RunSeen)],
            of_type("thread.run", documents(body)),
            strict=True,
        )
    ]
    assert len(pairs) >= 12
    for run, doc in pairs:
        assert (run.id, run.thread_id, run.assistant_id, run.model, run.status) == (
            doc["id"],
            doc["thread_id"],
            doc["assistant_id"],
            doc["model"],
            doc["status"],
        )
        assert run.created_at == doc["created_at"]
        assert run.usage == (Usage(**doc["usage"]) if doc["usage"] else None)
        assert run.finished_at == (doc["completed_at"] or doc["cancelled_at"])
        assert run.terminal == (doc["usage"] is not None)


def test_recorded_steps_match_their_bodies(recorded: dict[str, Recorded]) -> None:
    pairs = [
        (seen, doc)
        for operation, status, body in recorded.values()
        if status == 200 and body.startswith(b"{")
        for seen, doc in zip(
            [s for s in observe_json(operation, status, body) if isinstance(s, StepSeen)],
            of_type("thread.run.step", documents(body)),
            strict=True,
        )
    ]
    assert len(pairs) == 5
    for step, doc in pairs:
        assert (step.id, step.run_id, step.thread_id, step.status, step.created_at) == (
            doc["id"],
            doc["run_id"],
            doc["thread_id"],
            doc["status"],
            doc["created_at"],
        )
        assert step.usage == (Usage(**doc["usage"]) if doc["usage"] else None)
        calls = doc["step_details"].get("tool_calls", [])
        assert [(c.id, c.type) for c in step.tool_calls] == [(c["id"], c["type"]) for c in calls]
        for call in step.tool_calls:
            assert (call.step_id, call.run_id, call.thread_id, call.at) == (
                doc["id"],
                doc["run_id"],
                doc["thread_id"],
                doc["created_at"],
            )


def test_recorded_vector_stores_match_their_bodies(recorded: dict[str, Recorded]) -> None:
    operation, status, body = recorded["vector store retrieved"]
    doc = json.loads(body)
    [store] = observe_json(operation, status, body)
    assert store == ObjectSeen(
        doc["id"], Kind.VECTOR_STORE, None, doc["created_at"], True, START, doc["usage_bytes"]
    )
    assert doc["last_active_at"] == START


def test_create_and_run_reports_the_new_thread(recorded: dict[str, Recorded]) -> None:
    run, run_object, thread = observe_json(*recorded["thread created and run"])
    assert isinstance(run, RunSeen)
    assert run_object == ObjectSeen(
        run.id, Kind.RUN, run.thread_id, run.created_at, False, None, None
    )
    assert thread == ObjectSeen(run.thread_id, Kind.THREAD, None, run.created_at, False, None, None)


# -- hand-made bodies: the cases the simulator does not produce, and broken ones ---------


def operation(name: str) -> Operation:
    [route] = [route for route in ROUTES if route.name == name]
    params = {segment[1:-1]: "x" for segment in route.segments if segment.startswith("{")}
    path = "/" + "/".join("x" if s.startswith("{") else s for s in route.segments)
    found = classify(route.method, path)
    assert (found.name, dict(found.params)) == (name, params)
    return found


def run_doc(**fields: Any) -> dict[str, Any]:
    """A run as RunObject describes it; queued unless told otherwise."""
    return {
        "id": "run_1",
        "object": "thread.run",
        "created_at": START,
        "thread_id": "thread_1",
        "assistant_id": "asst_1",
        "status": "queued",
        "required_action": None,
        "last_error": None,
        "expires_at": START + 600,
        "started_at": None,
        "cancelled_at": None,
        "failed_at": None,
        "completed_at": None,
        "incomplete_details": None,
        "model": "gpt-4o-mini",
        "instructions": "",
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "metadata": {},
        "usage": None,
        **fields,
    }


USAGE = {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}


def step_doc(*calls: dict[str, Any], **fields: Any) -> dict[str, Any]:
    details: dict[str, Any] = {"type": "tool_calls", "tool_calls": list(calls)}
    if not calls:
        details = {"type": "message_creation", "message_creation": {"message_id": "msg_1"}}
    return {
        "id": "step_1",
        "object": "thread.run.step",
        "created_at": START + 3,
        "assistant_id": "asst_1",
        "thread_id": "thread_1",
        "run_id": "run_1",
        "type": details["type"],
        "status": "completed",
        "step_details": details,
        "usage": USAGE,
        **fields,
    }


CODE = {
    "id": "call_c",
    "type": "code_interpreter",
    "code_interpreter": {"input": "", "outputs": []},
}
SEARCH = {"id": "call_s", "type": "file_search", "file_search": {"results": []}}
CALL = {"id": "call_f", "type": "function", "function": {"name": "f", "arguments": "{}"}}


def listing(*items: Any) -> dict[str, Any]:
    return {"object": "list", "data": list(items), "has_more": False}


def vector_store(**fields: Any) -> dict[str, Any]:
    return {
        "id": "vs_1",
        "object": "vector_store",
        "created_at": START,
        "usage_bytes": 2048,
        "last_active_at": START + 50,
        "metadata": {},
        **fields,
    }


def thread(metadata: Any) -> dict[str, Any]:
    return {"id": "thread_1", "object": "thread", "created_at": START, "metadata": metadata}


RUN, STEP, LIST, STEPS = (
    "threads.runs.retrieve",
    "threads.runs.steps.retrieve",
    "threads.runs.list",
    "threads.runs.steps.list",
)
FAILED = {"status": "failed", "failed_at": START + 9}

CASES: list[tuple[str, str, Any, list[str]]] = [
    ("failed run with usage", RUN, run_doc(**FAILED, usage=USAGE), ["run failed usage done"]),
    ("failed run without usage", RUN, run_doc(**FAILED), ["run failed - done"]),
    (
        "expired run naming its expiry",
        RUN,
        run_doc(status="expired", usage=USAGE),
        ["run expired usage done"],
    ),
    (
        "live run never reports usage",
        RUN,
        run_doc(status="in_progress", usage=USAGE),
        ["run in_progress - -"],
    ),
    ("run without tools", RUN, run_doc(tools=[]), ["run queued - -"]),
    ("run with tools null", RUN, run_doc(tools=None), ["run queued - -"]),
    ("null assistant and model", RUN, run_doc(assistant_id=None, model=None), ["run queued - -"]),
    (
        "cancel answers with the run",
        "threads.runs.cancel",
        run_doc(status="cancelling"),
        ["run cancelling - -"],
    ),
    ("update answers with the run", "threads.runs.update", run_doc(), ["run queued - -"]),
    (
        "run create with keep",
        "threads.runs.create",
        run_doc(metadata=KEEP),
        ["run queued - -", "run thread keep - -"],
    ),
    (
        "run list",
        LIST,
        listing(run_doc(), run_doc(**FAILED, usage=USAGE)),
        ["run queued - -", "run failed usage done"],
    ),
    (
        "a bad item is skipped, not the list",
        LIST,
        listing(run_doc(id=7), "run", run_doc()),
        ["run queued - -"],
    ),
    ("message creation step", STEP, step_doc(), ["step completed - usage"]),
    (
        "step with all three tools",
        STEPS,
        listing(step_doc(CODE, SEARCH, CALL)),
        ["step completed code_interpreter,file_search,function usage"],
    ),
    (
        "step in progress",
        STEP,
        step_doc(CALL, status="in_progress", usage=None),
        ["step in_progress function -"],
    ),
    ("created thread with keep", "threads.create", thread(KEEP), ["thread - keep - -"]),
    (
        "keep must be the string true",
        "threads.create",
        thread({"tollhouse_keep": True}),
        ["thread - - - -"],
    ),
    (
        "keep is case-sensitive",
        "threads.create",
        thread({"tollhouse_keep": "True"}),
        ["thread - - - -"],
    ),
    ("metadata of a wrong type", "threads.create", thread(["tollhouse_keep"]), ["thread - - - -"]),
    ("a thread that was not created", "threads.retrieve", thread(KEEP), []),
    (
        "vector store never used",
        "vector_stores.retrieve",
        vector_store(last_active_at=None),
        ["vector_store - - 2048 -"],
    ),
    (
        "vector store search",
        "vector_stores.search",
        {"object": "vector_store.search_results.page", "data": []},
        [],
    ),
    (
        "deleted vector store",
        "vector_stores.delete",
        {"id": "vs_1", "object": "vector_store.deleted", "deleted": True},
        [],
    ),
    (
        "retrieved file",
        "files.retrieve",
        {"id": "file-1", "object": "file", "bytes": 9, "created_at": START},
        [],
    ),
    (
        "upload completed without its file",
        "uploads.complete",
        {"id": "upload_1", "object": "upload", "created_at": START, "bytes": 3, "file": None},
        [],
    ),
]


@pytest.mark.parametrize(
    ("name", "body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_observe_json(name: str, body: Any, expected: list[str]) -> None:
    seen = observe_json(operation(name), 200, json.dumps(body).encode())
    assert [describe(s) for s in seen] == expected


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


TOOL_CALLS_OBJECT = {"step_details": {"type": "tool_calls", "tool_calls": {}}}
MALFORMED: list[tuple[str, str, Any]] = [
    ("object missing", RUN, without(run_doc(), "object")),
    ("object unknown", RUN, run_doc(object="thread.run.v2")),
    ("object not a string", RUN, run_doc(object=["thread.run"])),
    ("id missing", RUN, without(run_doc(), "id")),
    ("id of a wrong type", RUN, run_doc(id=1)),
    ("created_at a string", RUN, run_doc(created_at="1700000000")),
    ("created_at a bool", RUN, run_doc(created_at=True)),
    ("created_at a float", RUN, run_doc(created_at=1.5)),
    ("status null", RUN, run_doc(status=None)),
    ("usage a string", RUN, run_doc(status="completed", usage="150")),
    ("usage negative", RUN, run_doc(status="completed", usage={**USAGE, "prompt_tokens": -1})),
    ("usage incomplete", RUN, run_doc(status="completed", usage=without(USAGE, "total_tokens"))),
    ("tools not a list", RUN, run_doc(tools={"type": "code_interpreter"})),
    ("tool_calls not a list", STEP, step_doc(CALL) | TOOL_CALLS_OBJECT),
    ("tool call without id", STEP, step_doc(without(CALL, "id"))),
    ("tool call a string", STEP, step_doc("call_f")),
    ("list without data", LIST, {"object": "list"}),
    ("list data not a list", LIST, {"object": "list", "data": run_doc()}),
    ("a JSON array", LIST, [run_doc()]),
    ("a JSON string", RUN, "thread.run"),
    ("JSON null", RUN, None),
]


@pytest.mark.parametrize(
    ("name", "body"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed_bodies_give_nothing(name: str, body: Any) -> None:
    assert observe_json(operation(name), 200, json.dumps(body).encode()) == []


def test_finish_times_and_usage_values() -> None:
    retrieve = operation("threads.runs.retrieve")
    for status, field in [
        ("completed", "completed_at"),
        ("failed", "failed_at"),
        ("cancelled", "cancelled_at"),
    ]:
        body = json.dumps(
            run_doc(status=status, expires_at=None, usage=USAGE, **{field: START + 42})
        )
        [run] = observe_json(retrieve, 200, body.encode())
        assert run == RunSeen(
            "run_1",
            "thread_1",
            "asst_1",
            "gpt-4o-mini",
            status,
            START,
            START + 42,
            Usage(120, 30, 150),
            False,
            False,
        )
        assert run.terminal
    [expired] = observe_json(retrieve, 200, json.dumps(run_doc(status="expired")).encode())
    assert isinstance(expired, RunSeen)
    assert (expired.finished_at, expired.terminal) == (START + 600, True)
    [queued] = observe_json(retrieve, 200, json.dumps(run_doc()).encode())
    assert isinstance(queued, RunSeen)
    assert (queued.finished_at, queued.usage, queued.terminal) == (None, None, False)


RUN_BODY = json.dumps(run_doc(status="completed", completed_at=START, usage=USAGE)).encode()
BAD_BODIES = [
    ("empty", b""),
    ("not JSON", b"<html>502 Bad Gateway</html>"),
    ("truncated", RUN_BODY[: len(RUN_BODY) // 2]),
    ("invalid UTF-8", RUN_BODY.replace(b"gpt", b"\xff\xfe")),
    ("binary", bytes(range(256)) * 64),
    ("deeply nested", b"[" * 200_000 + b"]" * 200_000),
    (
        "huge number",
        RUN_BODY.replace(b'"created_at":', b'"created_at": 1' + b"0" * 5000 + b',"x":'),
    ),
]


@pytest.mark.parametrize("body", [b[1] for b in BAD_BODIES], ids=[b[0] for b in BAD_BODIES])
def test_bodies_that_are_not_json_objects(body: bytes) -> None:
    assert observe_json(operation("threads.runs.retrieve"), 200, body) == []


@pytest.mark.parametrize(
    "status", [100, 199, 201, 204, 299, 300, 304, 400, 404, 409, 429, 500, 503]
)
def test_only_2xx_bodies_count(status: int) -> None:
    seen = observe_json(operation("threads.runs.retrieve"), status, RUN_BODY)
    assert [describe(s) for s in seen] == (
        ["run completed usage done"] if status < 300 and status >= 200 else []
    )


def test_every_truncation_of_a_body_gives_nothing() -> None:
    retrieve = operation("threads.runs.retrieve")
    assert observe_json(retrieve, 200, RUN_BODY) != []
    for cut in range(len(RUN_BODY)):
        assert observe_json(retrieve, 200, RUN_BODY[:cut]) == [], cut


@pytest.mark.parametrize("value", [None, True, -1, 1.5, "x", [], {}, [1], {"type": 1}])
def test_any_field_of_any_type_never_raises(value: Any) -> None:
    docs = [
        run_doc(status="completed", usage=USAGE),
        step_doc(CODE, SEARCH),
        vector_store(),
        thread(KEEP),
    ]
    for doc in docs:
        for key in doc:
            body = json.dumps({**doc, key: value}).encode()
            for name in ("threads.runs.create", "threads.runs.steps.list", "vector_stores.list"):
                assert isinstance(observe_json(operation(name), 200, body), list)
            assert isinstance(observe_event(SSEEvent("thread.run.created", body.decode())), list)


def test_bodies_over_the_limit_are_skipped() -> None:
    retrieve = operation("threads.runs.retrieve")
    assert observe_json(retrieve, 200, RUN_BODY, max_body=len(RUN_BODY)) != []
    assert observe_json(retrieve, 200, RUN_BODY, max_body=len(RUN_BODY) - 1) == []


# -- which responses are worth parsing ---------------------------------------------------

PARSED = {
    "assistants.create",
    "threads.create",
    "threads.create_and_run",
    "threads.messages.create",
    "threads.runs.list",
    "threads.runs.create",
    "threads.runs.retrieve",
    "threads.runs.update",
    "threads.runs.cancel",
    "threads.runs.submit_tool_outputs",
    "threads.runs.steps.list",
    "threads.runs.steps.retrieve",
    "vector_stores.list",
    "vector_stores.create",
    "vector_stores.retrieve",
    "vector_stores.update",
    "vector_stores.file_batches.create",
    "files.create",
    "uploads.create",
    "uploads.complete",
    # creates of the Responses era: their owners are recorded
    "responses.create",
    "conversations.create",
    "containers.create",
    "containers.files.create",
    "chat.completions.create",
    # reads of the Responses era that carry a response or a container
    "responses.retrieve",
    "responses.cancel",
    "containers.retrieve",
    "containers.list",
    # answers that show an assistant: its details, for the migration report
    "assistants.retrieve",
    "assistants.update",
    "assistants.list",
}


@pytest.mark.parametrize("name", [route.name for route in ROUTES])
def test_wants_body(name: str) -> None:
    assert wants_body(operation(name)) == (name in PARSED)
    assert (name in METERED_OPERATIONS) == (name in PARSED)


def test_unknown_operations_are_not_parsed() -> None:
    assert not wants_body(classify("GET", "/v1/fine_tuning/jobs"))
    assert not wants_body(classify("POST", "/v1/batches"))


# -- streamed events ---------------------------------------------------------------------


def event_data(doc: Any) -> str:
    return doc if isinstance(doc, str) else json.dumps(doc)


def run_event(status: str, **fields: Any) -> dict[str, Any]:
    return run_doc(status=status, tools=TOOLS, **fields)


FINISH = {"completed": "completed_at", "failed": "failed_at", "cancelled": "cancelled_at"}
FINISHED = [
    (
        f"thread.run.{status}",
        run_event(status, usage=USAGE, **{field: START}),
        [f"run {status} usage done ci fs"],
    )
    for status, field in FINISH.items()
]
EVENTS: list[tuple[str, Any, list[str]]] = [
    ("thread.created", thread(KEEP), ["thread - keep - -"]),
    ("thread.run.created", run_event("queued"), ["run queued - - ci fs", "run thread - - -"]),
    ("thread.run.queued", run_event("queued"), ["run queued - - ci fs"]),
    ("thread.run.in_progress", run_event("in_progress"), ["run in_progress - - ci fs"]),
    ("thread.run.requires_action", run_event("requires_action"), ["run requires_action - - ci fs"]),
    ("thread.run.cancelling", run_event("cancelling"), ["run cancelling - - ci fs"]),
    *FINISHED,
    (
        "thread.run.incomplete",
        run_event("incomplete", expires_at=None, usage=USAGE),
        ["run incomplete usage - ci fs"],
    ),
    ("thread.run.expired", run_event("expired", usage=USAGE), ["run expired usage done ci fs"]),
    (
        "thread.run.step.created",
        step_doc(status="in_progress", usage=None),
        ["step in_progress - -"],
    ),
    (
        "thread.run.step.in_progress",
        step_doc(CODE, status="in_progress", usage=None),
        ["step in_progress code_interpreter -"],
    ),
    (
        "thread.run.step.completed",
        step_doc(CODE, SEARCH),
        ["step completed code_interpreter,file_search usage"],
    ),
    ("thread.run.step.failed", step_doc(CALL, status="failed"), ["step failed function usage"]),
    (
        "thread.run.step.cancelled",
        step_doc(CALL, status="cancelled"),
        ["step cancelled function usage"],
    ),
    ("thread.run.step.expired", step_doc(CALL, status="expired"), ["step expired function usage"]),
    ("thread.run.step.delta", step_doc(CODE) | {"object": "thread.run.step.delta"}, []),
    ("thread.run.step.delta", step_doc(CODE), []),  # never parsed, whatever it holds
    ("thread.message.created", {"id": "msg_1", "object": "thread.message"}, []),
    ("thread.message.delta", run_event("completed", usage=USAGE), []),
    ("thread.message.completed", {"id": "msg_1", "object": "thread.message"}, []),
    ("error", {"message": "boom", "type": "server_error", "param": None, "code": None}, []),
    ("done", "[DONE]", []),
    ("message", run_event("completed", usage=USAGE), []),
    ("future.event", run_event("completed", usage=USAGE), []),
    ("thread.created", run_event("queued"), []),
    ("thread.run.created", thread(KEEP), []),
    ("thread.run.completed", "{not json", []),
    ("thread.run.completed", run_event("completed", usage="lots"), []),
    ("thread.run.step.completed", step_doc("call_f"), []),
    # the Responses era: a stream names what it created first
    (
        "response.created",
        {
            "type": "response.created",
            "sequence_number": 0,
            "response": {"id": "resp_1", "object": "response", "created_at": START},
        },
        ["response - - - -"],
    ),
    ("response.created", {"response": {"id": "resp_1", "object": "response"}}, []),
    (
        "response.in_progress",
        {"response": {"id": "resp_1", "object": "response", "created_at": START}},
        [],
    ),
    (
        "message",
        {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": START, "choices": []},
        ["chat_completion - - - -"],
    ),
    ("message", {"id": "chatcmpl-1", "object": "chat.completion", "created": START}, []),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"), EVENTS, ids=[f"{i}-{e[0]}" for i, e in enumerate(EVENTS)]
)  # fmt: skip
def test_observe_event(name: str, data: Any, expected: list[str]) -> None:
    assert [describe(s) for s in observe_event(SSEEvent(name, event_data(data)))] == expected


# -- whole streams from the simulator ----------------------------------------------------


class TickingClock:
    """Moves a quarter second on every reading, so runs finish without waiting."""

    def __init__(self) -> None:
        self.now = float(START)

    def __call__(self) -> float:
        self.now += 0.25
        return self.now


@pytest.fixture(scope="module")
def streamed() -> dict[str, tuple[list[bytes], list[dict[str, Any]]]]:
    """Raw chunks of two streams, and afterwards the run and steps as the API lists them."""
    with (
        serve(create_app(SimulatorConfig(clock=TickingClock()))) as server,
        openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        beta = client.beta
        assistant = beta.assistants.create(model="gpt-4o", tools=TOOLS)
        thread_id = beta.threads.create(messages=[{"role": "user", "content": "2+2?"}]).id
        streams: dict[str, tuple[list[bytes], list[dict[str, Any]]]] = {}
        create = beta.threads.runs.with_streaming_response.create
        with create(thread_id, assistant_id=assistant.id, stream=True) as response:
            chunks = list(response.iter_bytes())
        run = beta.threads.runs.list(thread_id).data[0]
        steps = beta.threads.runs.steps.list(run.id, thread_id=thread_id).data
        streams["runs.create"] = chunks, [run.model_dump(), *(s.model_dump() for s in steps)]
        create_and_run = beta.threads.with_streaming_response.create_and_run
        with create_and_run(
            assistant_id=assistant.id,
            thread={"messages": [{"role": "user", "content": "hi"}]},
            stream=True,
        ) as response:
            chunks = list(response.iter_bytes())
        streams["create_and_run"] = chunks, []
        return streams


def meter(chunks: list[bytes]) -> list[Observation]:
    stream_meter = StreamMeter()
    return [seen for chunk in chunks for seen in stream_meter.feed(chunk)]


def test_a_streamed_run_is_seen_finishing_once(streamed: dict[str, Any]) -> None:
    chunks, (run, *steps) = streamed["runs.create"]
    seen = meter(chunks)
    finished = [s for s in seen if isinstance(s, RunSeen) and s.terminal]
    assert len(finished) == 1
    assert finished[0].id == run["id"]
    assert finished[0].usage == Usage(**run["usage"])
    assert [s for s in seen if isinstance(s, ObjectSeen)] == [
        ObjectSeen(run["id"], Kind.RUN, run["thread_id"], run["created_at"], False, None, None)
    ]
    completed = {s.id: s for s in seen if isinstance(s, StepSeen) and s.status == "completed"}
    assert {step["id"]: Usage(**step["usage"]) for step in steps} == {
        step_id: step.usage for step_id, step in completed.items()
    }
    calls = sorted(call.type for step in completed.values() for call in step.tool_calls)
    assert calls == ["code_interpreter", "file_search"]
    assert (
        sum(s.usage.total_tokens for s in completed.values() if s.usage)
        == run["usage"]["total_tokens"]
    )


def test_a_streamed_create_and_run_reports_the_thread_first(streamed: dict[str, Any]) -> None:
    chunks, _ = streamed["create_and_run"]
    seen = meter(chunks)
    thread_seen, run_seen, run_object = seen[:3]
    assert isinstance(thread_seen, ObjectSeen)
    assert isinstance(run_seen, RunSeen)
    assert thread_seen.kind == Kind.THREAD
    assert (run_object.kind, run_object.parent_id) == (Kind.RUN, thread_seen.id)  # type: ignore[union-attr]
    assert run_seen.thread_id == thread_seen.id
    assert [s.status for s in seen if isinstance(s, RunSeen) and s.terminal] == ["completed"]


@pytest.mark.parametrize("size", [1, 7, 64, 1000])
def test_a_stream_meters_the_same_in_any_chunks(streamed: dict[str, Any], size: int) -> None:
    chunks, _ = streamed["runs.create"]
    whole = b"".join(chunks)
    assert len(chunks) > 1
    pieces = [whole[i : i + size] for i in range(0, len(whole), size)]
    assert meter(pieces) == meter(chunks) == meter([whole])


def test_stream_meter_uses_the_parser_it_is_given() -> None:
    parser = SSEParser(max_event_size=64)
    stream_meter = StreamMeter(parser)
    body = json.dumps(run_event("completed", usage=USAGE))
    assert stream_meter.feed(f"event: thread.run.completed\ndata: {body}\n\n".encode()) == []
    assert parser.dropped == 1

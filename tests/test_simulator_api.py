"""The simulator's resources through the real openai client over HTTP: shapes, lists, errors."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.servers import ServerThread, serve
from tollhouse_simulator import SimulatorConfig, create_app

START = 1_700_000_000.0
BETA = {"OpenAI-Beta": "assistants=v2", "Authorization": "Bearer sk-test"}

# Required properties of each object, from the spec's schemas (openai-openapi.yaml).
REQUIRED = {
    "assistant": {"id", "object", "created_at", "name", "description", "model"}
    | {"instructions", "tools", "metadata"},
    "thread": {"id", "object", "created_at", "tool_resources", "metadata"},
    "thread.message": {"id", "object", "created_at", "thread_id", "status", "role", "content"}
    | {"incomplete_details", "completed_at", "incomplete_at", "assistant_id", "run_id"}
    | {"attachments", "metadata"},
    "file": {"id", "object", "bytes", "created_at", "filename", "purpose", "status"},
    "vector_store": {"id", "object", "usage_bytes", "created_at", "status", "last_active_at"}
    | {"name", "file_counts", "metadata"},
    "vector_store.file": {"id", "object", "usage_bytes", "created_at", "vector_store_id"}
    | {"status", "last_error"},
    "vector_store.files_batch": {"id", "object", "created_at", "vector_store_id", "status"}
    | {"file_counts"},
}


class FakeClock:
    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def assert_shape(obj: Any) -> dict[str, Any]:
    data: dict[str, Any] = obj.to_dict()
    missing = REQUIRED[data["object"]] - set(data)
    assert not missing, f"{data['object']} lacks {missing}"
    return data


def raw(
    url: str, method: str = "GET", body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = response.read()
            status, found = response.status, response.headers
    except urllib.error.HTTPError as error:
        payload, status, found = error.read(), error.code, error.headers
    return status, {k.lower(): v for k, v in found.items()}, json.loads(payload or b"null")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _serve(**config: Any) -> Iterator[ServerThread]:
    with serve(create_app(SimulatorConfig(**config))) as server:
        yield server


@pytest.fixture
def server(clock: FakeClock) -> Iterator[ServerThread]:
    yield from _serve(clock=clock, file_processing_seconds=1.0)


@pytest.fixture
def client(server: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client:
        yield client


def test_assistant_round_trip(client: openai.OpenAI) -> None:
    created = client.beta.assistants.create(
        model="gpt-4o",
        name="Tutor",
        instructions="Answer briefly.",
        tools=[{"type": "code_interpreter"}, {"type": "function", "function": {"name": "f"}}],
        metadata={"team": "a"},
    )
    data = assert_shape(created)
    assert data["id"].startswith("asst_")
    assert data["created_at"] == int(START)
    assert data["tools"][1]["function"]["name"] == "f"
    assert client.beta.assistants.retrieve(created.id).name == "Tutor"
    updated = client.beta.assistants.update(created.id, name="Coach", model="gpt-4o-mini")
    assert (updated.name, updated.model, updated.instructions) == (
        "Coach",
        "gpt-4o-mini",
        "Answer briefly.",
    )
    deleted = client.beta.assistants.delete(created.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.id, "assistant.deleted", True)
    with pytest.raises(openai.NotFoundError) as missing:
        client.beta.assistants.retrieve(created.id)
    assert missing.value.body == {
        "message": f"No assistant found with id '{created.id}'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_assistant_list_paginates(client: openai.OpenAI, clock: FakeClock) -> None:
    ids = []
    for index in range(5):
        ids.append(client.beta.assistants.create(model="gpt-4o", name=str(index)).id)
        clock.advance(1)
    first = client.beta.assistants.list(limit=2)
    assert [a.id for a in first.data] == [ids[4], ids[3]]
    assert first.has_more
    assert first.last_id == ids[3]
    second = client.beta.assistants.list(limit=2, after=ids[3])
    assert [a.id for a in second.data] == [ids[2], ids[1]]
    ascending = client.beta.assistants.list(limit=10, order="asc")
    assert [a.id for a in ascending.data] == ids
    assert not ascending.has_more
    before = client.beta.assistants.list(limit=2, order="asc", before=ids[3])
    assert [a.id for a in before.data] == [ids[1], ids[2]]
    assert [a.id for a in client.beta.assistants.list(limit=2)] == ids[::-1]  # auto-paging


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "model"),
        ({"model": 4}, "model"),
        ({"model": "m", "temperature": 3}, "temperature"),
        ({"model": "m", "tools": [{"type": "browser"}]}, "tools[0].type"),
    ],
)
def test_assistant_create_validation(
    client: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as invalid:
        client.post("/assistants", body=body, cast_to=object, options={"headers": BETA})
    assert invalid.value.status_code == 400
    assert invalid.value.param == param
    assert invalid.value.type == "invalid_request_error"


def test_thread_and_messages_round_trip(client: openai.OpenAI, clock: FakeClock) -> None:
    thread = client.beta.threads.create(
        messages=[
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "second"}]},
        ],
        metadata={"tenant": "t1"},
    )
    assert_shape(thread)
    assert thread.id.startswith("thread_")
    assert thread.metadata == {"tenant": "t1"}
    clock.advance(1)
    third = client.beta.threads.messages.create(thread.id, role="user", content="third")
    data = assert_shape(third)
    assert data["content"] == [{"type": "text", "text": {"value": "third", "annotations": []}}]
    assert (data["run_id"], data["assistant_id"], data["role"]) == (None, None, "user")
    listed = client.beta.threads.messages.list(thread.id, order="asc")
    assert [m.content[0].text.value for m in listed.data] == ["first", "second", "third"]
    updated = client.beta.threads.messages.update(
        third.id, thread_id=thread.id, metadata={"k": "v"}
    )
    assert updated.metadata == {"k": "v"}
    gone = client.beta.threads.messages.delete(third.id, thread_id=thread.id)
    assert (gone.object, gone.deleted) == ("thread.message.deleted", True)
    assert len(client.beta.threads.messages.list(thread.id).data) == 2
    assert client.beta.threads.update(thread.id, metadata={"x": "y"}).metadata == {"x": "y"}
    assert client.beta.threads.delete(thread.id).object == "thread.deleted"
    with pytest.raises(openai.NotFoundError) as missing:
        client.beta.threads.messages.list(thread.id)
    assert missing.value.message.endswith(f"No thread found with id '{thread.id}'.")


def test_thread_can_create_its_vector_store(client: openai.OpenAI, clock: FakeClock) -> None:
    document = client.files.create(file=("a.txt", b"twelve bytes"), purpose="assistants")
    thread = client.beta.threads.create(
        tool_resources={"file_search": {"vector_stores": [{"file_ids": [document.id]}]}}
    )
    [store_id] = thread.tool_resources.file_search.vector_store_ids
    clock.advance(1)
    store = client.vector_stores.retrieve(store_id)
    assert (store.usage_bytes, store.file_counts.completed) == (12, 1)
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.beta.threads.create(
            tool_resources={"file_search": {"vector_stores": [{"file_ids": ["file-nope"]}]}}
        )


def test_file_upload_and_download_are_byte_exact(client: openai.OpenAI, clock: FakeClock) -> None:
    payload = bytes(range(256)) * 12_000  # 3 MB, not text, larger than the in-memory spool
    uploaded = client.files.create(file=("blob.bin", payload), purpose="assistants")
    data = assert_shape(uploaded)
    assert data["id"].startswith("file-")
    assert (data["bytes"], data["filename"], data["expires_at"]) == (len(payload), "blob.bin", None)
    assert client.files.content(uploaded.id).content == payload
    assert client.files.retrieve(uploaded.id).bytes == len(payload)
    clock.advance(1)
    batch = client.files.create(
        file=("b.jsonl", b"{}\n"),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert batch.expires_at == int(START) + 1 + 3600
    assert [f.id for f in client.files.list()] == [batch.id, uploaded.id]
    assert [f.id for f in client.files.list(purpose="batch")] == [batch.id]
    assert [f.id for f in client.files.list(limit=1, order="asc").data] == [uploaded.id]
    clock.advance(3600)
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(batch.id)  # expired files are gone
    deleted = client.files.delete(uploaded.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (uploaded.id, "file", True)
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.files.content(uploaded.id)


def test_file_upload_validation(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.txt", b"x"), purpose="homework")
    assert purpose.value.param == "purpose"
    with pytest.raises(openai.BadRequestError) as expiry:
        client.files.create(
            file=("a.txt", b"x"),
            purpose="assistants",
            expires_after={"anchor": "created_at", "seconds": 10},
        )
    assert expiry.value.param == "expires_after.seconds"


def test_vector_store_usage_grows_as_files_complete(
    client: openai.OpenAI, clock: FakeClock
) -> None:
    first = client.files.create(file=("a.txt", b"alpha bravo charlie\n" * 10), purpose="assistants")
    second = client.files.create(file=("b.txt", b"delta echo foxtrot\n" * 5), purpose="assistants")
    store = client.vector_stores.create(
        name="docs",
        file_ids=[first.id],
        expires_after={"anchor": "last_active_at", "days": 2},
    )
    data = assert_shape(store)
    assert data["id"].startswith("vs_")
    assert (store.status, store.usage_bytes, store.file_counts.in_progress) == ("in_progress", 0, 1)
    assert store.expires_at == int(START) + 2 * 86_400
    clock.advance(1)
    done = client.vector_stores.retrieve(store.id)
    assert (done.status, done.usage_bytes, done.file_counts.completed) == ("completed", 200, 1)
    attached = client.vector_stores.files.create(store.id, file_id=second.id, attributes={"n": 2})
    assert_shape(attached)
    assert (attached.status, attached.usage_bytes) == ("in_progress", 0)
    assert client.vector_stores.retrieve(store.id).file_counts.total == 2
    in_progress = client.vector_stores.files.list(store.id, filter="in_progress")
    assert [f.id for f in in_progress] == [second.id]
    clock.advance(1)
    assert client.vector_stores.retrieve(store.id).usage_bytes == 200 + 95
    assert client.vector_stores.files.retrieve(second.id, vector_store_id=store.id).attributes == {
        "n": 2
    }
    updated = client.vector_stores.files.update(
        second.id, vector_store_id=store.id, attributes={"n": 3}
    )
    assert updated.attributes == {"n": 3}
    content = client.vector_stores.files.content(second.id, vector_store_id=store.id)
    assert [c.text for c in content] == ["delta echo foxtrot\n" * 5]
    removed = client.vector_stores.files.delete(second.id, vector_store_id=store.id)
    assert (removed.object, removed.deleted) == ("vector_store.file.deleted", True)
    assert client.vector_stores.retrieve(store.id).usage_bytes == 200
    assert client.files.retrieve(second.id).id == second.id  # the file itself stays
    assert client.vector_stores.delete(store.id).object == "vector_store.deleted"
    with pytest.raises(openai.NotFoundError, match="No vector store found"):
        client.vector_stores.retrieve(store.id)


def test_vector_store_search_and_activity(client: openai.OpenAI, clock: FakeClock) -> None:
    toll = client.files.create(
        file=("toll.txt", b"Pay the toll in silver coins."), purpose="assistants"
    )
    other = client.files.create(file=("other.txt", b"Nothing to see."), purpose="assistants")
    store = client.vector_stores.create(file_ids=[toll.id, other.id])
    clock.advance(10)
    results = client.vector_stores.search(store.id, query="silver coins")
    assert [(r.file_id, r.filename, r.score) for r in results] == [(toll.id, "toll.txt", 1.0)]
    assert results.data[0].content[0].text == "Pay the toll in silver coins."
    assert client.vector_stores.retrieve(store.id).last_active_at == int(START) + 10
    filtered = client.vector_stores.search(
        store.id, query="silver", filters={"type": "eq", "key": "lang", "value": "fr"}
    )
    assert filtered.data == []
    clock.advance(3 * 86_400)
    assert client.vector_stores.retrieve(store.id).status == "completed"  # no expiry policy


def test_vector_store_expires_after_inactivity(client: openai.OpenAI, clock: FakeClock) -> None:
    store = client.vector_stores.create(expires_after={"anchor": "last_active_at", "days": 1})
    clock.advance(86_400)
    expired = client.vector_stores.retrieve(store.id)
    assert (expired.status, expired.expires_at) == ("expired", int(START) + 86_400)


def test_file_batches(client: openai.OpenAI, clock: FakeClock) -> None:
    files = [
        client.files.create(file=(f"{i}.txt", b"x" * (i + 1)), purpose="assistants")
        for i in range(3)
    ]
    store = client.vector_stores.create()
    batch = client.vector_stores.file_batches.create(store.id, file_ids=[f.id for f in files[:2]])
    assert_shape(batch)
    assert batch.id.startswith("vsfb_")
    assert (batch.status, batch.file_counts.in_progress, batch.file_counts.total) == (
        "in_progress",
        2,
        2,
    )
    clock.advance(1)
    done = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=store.id)
    assert (done.status, done.file_counts.completed) == ("completed", 2)
    listed = client.vector_stores.file_batches.list_files(batch.id, vector_store_id=store.id)
    assert sorted(f.id for f in listed) == sorted(f.id for f in files[:2])
    assert client.vector_stores.retrieve(store.id).usage_bytes == 1 + 2
    late = client.vector_stores.file_batches.create(store.id, file_ids=[files[2].id])
    cancelled = client.vector_stores.file_batches.cancel(late.id, vector_store_id=store.id)
    assert (cancelled.status, cancelled.file_counts.cancelled) == ("cancelled", 1)
    clock.advance(1)
    assert client.vector_stores.retrieve(store.id).file_counts.cancelled == 1
    with pytest.raises(openai.BadRequestError, match="file_ids"):
        client.vector_stores.file_batches.create(store.id)


def test_missing_beta_header_is_refused_except_for_files(server: ServerThread) -> None:
    auth = {"Authorization": "Bearer sk-test"}
    status, _, body = raw(server.url + "/v1/assistants", headers=auth)
    assert status == 400
    assert body["error"]["code"] == "invalid_beta"
    assert body["error"]["type"] == "invalid_request_error"
    assert "OpenAI-Beta: assistants=v2" in body["error"]["message"]
    for path in ("/v1/threads/thread_x/runs", "/v1/vector_stores"):
        assert raw(server.url + path, headers=auth)[0] == 400
    assert raw(server.url + "/v1/files", headers=auth)[0] == 200
    assert raw(server.url + "/v1/assistants", headers=BETA)[0] == 200


def test_unknown_paths_and_bad_bodies(server: ServerThread) -> None:
    status, _, body = raw(server.url + "/v1/whatever", headers=BETA)
    assert (status, body["error"]["message"]) == (404, "Invalid URL (GET /v1/whatever)")
    assert body["error"]["type"] == "invalid_request_error"
    status, _, body = raw(server.url + "/v1/assistants", "PUT", b"{}", BETA)
    assert (status, body["error"]["message"]) == (404, "Invalid URL (PUT /v1/assistants)")
    status, _, body = raw(server.url + "/v1/assistants", "POST", b"{not json", BETA)
    assert status == 400
    assert "could not parse the JSON body" in body["error"]["message"]
    status, _, body = raw(server.url + "/v1/assistants", "POST", b"[1]", BETA)
    assert status == 400
    assert body["error"]["code"] == "invalid_type"
    status, _, body = raw(server.url + "/v1/assistants", "POST", b'{"model":"m","x":1}', BETA)
    assert (status, body["error"]["message"]) == (400, "Unrecognized request argument supplied: x")
    status, _, body = raw(server.url + "/v1/assistants?limit=0", headers=BETA)
    assert (status, body["error"]["param"]) == (400, "limit")


def test_api_keys_and_the_request_log() -> None:
    app = create_app(SimulatorConfig(api_keys=frozenset({"sk-real-key"})))
    with serve(app) as server:
        status, _, body = raw(server.url + "/v1/files")
        assert (status, body["error"]["code"]) == (401, "invalid_api_key")
        with openai.OpenAI(
            api_key="sk-wrong-key-0000", base_url=server.url + "/v1", max_retries=0
        ) as wrong:
            with pytest.raises(openai.AuthenticationError) as refused:
                wrong.files.list()
        assert refused.value.code == "invalid_api_key"
        assert "Incorrect API key provided: sk-wr***0000." in refused.value.message
        with openai.OpenAI(
            api_key="sk-real-key", base_url=server.url + "/v1", max_retries=0
        ) as right:
            right.files.list(purpose="assistants")
    sim = app.state.simulator
    last = sim.requests[-1]
    assert (last.method, last.path, last.query) == ("GET", "/v1/files", "purpose=assistants")
    assert last.headers["authorization"] == "Bearer sk-real-key"
    assert [r.headers.get("authorization") for r in sim.requests][:2] == [
        None,
        "Bearer sk-wrong-key-0000",
    ]
    assert sim.counters["requests"] == 3
    assert sim.counters["status:401"] == 2
    assert sim.counters["status:200"] == 1


def test_request_log_is_bounded() -> None:
    app = create_app(SimulatorConfig(request_log_size=2))
    with serve(app) as server:
        for _ in range(3):
            raw(server.url + "/v1/files", headers=BETA)
    assert len(app.state.simulator.requests) == 2
    assert app.state.simulator.counters["requests"] == 3


def test_rate_limits_answer_429_like_openai(clock: FakeClock) -> None:
    app = create_app(SimulatorConfig(clock=clock, rate_limits={"GET": 2, "RUN_CREATE": 1}))
    with serve(app) as server:
        ok_status, ok_headers, _ = raw(server.url + "/v1/files", headers=BETA)
        assert ok_status == 200
        assert ok_headers["x-ratelimit-limit-requests"] == "2"
        assert ok_headers["x-ratelimit-remaining-requests"] == "1"
        assert ok_headers["x-ratelimit-reset-requests"] == "30s"
        raw(server.url + "/v1/files", headers=BETA)
        status, headers, body = raw(server.url + "/v1/files", headers=BETA)
        assert status == 429
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert body["error"]["type"] == "requests"
        assert body["error"]["param"] is None
        assert "Limit 2, Used 2, Requested 1. Please try again in 30s." in body["error"]["message"]
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("30", "30000")
        assert headers["x-ratelimit-remaining-requests"] == "0"
        assert headers["x-ratelimit-reset-requests"] == "1m0s"
        post_status, post_headers, _ = raw(server.url + "/v1/assistants", "POST", b"{}", BETA)
        assert post_status == 400
        assert "x-ratelimit-limit-requests" not in post_headers
        clock.advance(30)
        assert raw(server.url + "/v1/files", headers=BETA)[0] == 200
        with openai.OpenAI(api_key="sk", base_url=server.url + "/v1", max_retries=0) as client:
            thread = client.beta.threads.create()
            with pytest.raises(openai.NotFoundError):
                client.beta.threads.runs.create(thread.id, assistant_id="asst_missing")
            with pytest.raises(openai.RateLimitError) as limited:
                client.beta.threads.runs.create(thread.id, assistant_id="asst_missing")
        assert limited.value.response.headers["retry-after"] == "60"
    assert app.state.simulator.counters["status:429"] == 2


def test_upload_in_parts(client: openai.OpenAI) -> None:
    parts = [b"a" * 1000, bytes(range(256)), b"tail"]
    upload = client.uploads.create(
        bytes=sum(len(p) for p in parts),
        filename="big.bin",
        mime_type="application/octet-stream",
        purpose="assistants",
    )
    assert upload.id.startswith("upload_")
    assert (upload.status, upload.file) == ("pending", None)
    part_ids = [client.uploads.parts.create(upload.id, data=data).id for data in parts]
    assert all(part_id.startswith("part_") for part_id in part_ids)
    with pytest.raises(openai.BadRequestError, match="add up to"):
        client.uploads.complete(upload.id, part_ids=part_ids[:2])
    done = client.uploads.complete(upload.id, part_ids=part_ids)
    assert done.status == "completed"
    assert done.file is not None
    assert (done.file.filename, done.file.bytes) == ("big.bin", 1260)
    assert client.files.content(done.file.id).content == b"".join(parts)
    with pytest.raises(openai.BadRequestError, match="completed"):
        client.uploads.cancel(upload.id)
    other = client.uploads.create(
        bytes=1, filename="x", mime_type="text/plain", purpose="assistants"
    )
    assert client.uploads.cancel(other.id).status == "cancelled"
    with pytest.raises(openai.NotFoundError, match="No upload found"):
        client.uploads.parts.create("upload_missing", data=b"x")

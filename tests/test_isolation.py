"""Tenant isolation tried as a hostile tenant would, through the proxy, against the simulator.

Every request that names another tenant's object must answer exactly what the same
request answers for an id that exists nowhere, and the upstream must never see the
other tenant's id in the wrong tenant's requests.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tests.upstreams import own
from tollhouse.api.classify import Kind
from tollhouse.config.policy import parse_policy
from tollhouse.ledger.store import owners
from tollhouse.proxy.twins import twin
from tollhouse_simulator import SimulatorConfig, create_app

HEADER = "X-Tollhouse-Tenant"
TENANTS = {"acme": {}, "globex": {}, "ops": {"admin": True}}
POLICY = parse_policy({"identify": {"mode": "header"}, "tenants": TENANTS}, "test")
# Headers that differ between any two requests, whatever they name.
VOLATILE = frozenset({"date", "x-request-id", "openai-processing-ms"})


@dataclass
class Recorder:
    """An ASGI upstream that records each request's target and body, then serves it."""

    app: Any
    seen: list[bytes] = field(default_factory=list)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        parts: list[bytes] = []
        more = True
        while more:
            message = await receive()
            parts.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(parts)
        target = scope.get("raw_path", scope["path"].encode()) + b"?" + scope["query_string"]
        self.seen.append(scope["method"].encode() + b" " + target + b" " + body)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


@pytest.fixture
def recorder() -> Iterator[tuple[Recorder, ServerThread]]:
    upstream = Recorder(create_app(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05)))
    with serve(upstream) as server:
        yield upstream, server


@pytest.fixture
def isolated(recorder: tuple[Recorder, ServerThread]) -> Iterator[RunningProxy]:
    with running_proxy(recorder[1].url + "/v1", policy=POLICY) as proxy:
        yield proxy


def started(proxy: RunningProxy) -> RunningProxy:
    """The proxy once its ledger is migrated: it answers only after its start-up."""
    httpx.get(proxy.url + "/")
    return proxy


def tenant(proxy: RunningProxy, name: str) -> openai.OpenAI:
    return proxy.client(default_headers={HEADER: name, "OpenAI-Beta": "assistants=v2"})


@dataclass
class World:
    """What acme owns, and globex's own thread and store to aim with."""

    assistant: str
    thread: str
    message: str
    run: str
    store: str
    file: str
    batch: str
    upload: str
    own_thread: str
    own_store: str

    def acme_ids(self) -> list[str]:
        return [
            self.assistant,
            self.thread,
            self.message,
            self.run,
            self.store,
            self.file,
            self.batch,
            self.upload,
        ]


def build_world(proxy: RunningProxy) -> World:
    acme, globex = tenant(proxy, "acme"), tenant(proxy, "globex")
    assistant = acme.beta.assistants.create(model="gpt-4o", instructions="acme's secret prompt")
    thread = acme.beta.threads.create(messages=[{"role": "user", "content": "private"}])
    message = acme.beta.threads.messages.list(thread.id).data[0]
    run = acme.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    upload = acme.files.create(file=("secret.txt", io.BytesIO(b"acme only")), purpose="assistants")
    store = acme.vector_stores.create(name="acme docs", file_ids=[upload.id])
    batch = acme.vector_stores.file_batches.create(store.id, file_ids=[upload.id])
    pending = acme.uploads.create(
        bytes=5, filename="x.txt", mime_type="text/plain", purpose="assistants"
    )
    return World(
        assistant=assistant.id,
        thread=thread.id,
        message=message.id,
        run=run.id,
        store=store.id,
        file=upload.id,
        batch=batch.id,
        upload=pending.id,
        own_thread=globex.beta.threads.create().id,
        own_store=globex.vector_stores.create(name="globex docs").id,
    )


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str
    body: dict[str, Any] | None = None
    chunked: bool = False


def attempts(w: World) -> list[Attempt]:
    """Every operation on every object kind, aimed at acme's objects by globex."""
    t, r, vs = f"/v1/threads/{w.thread}", f"/v1/threads/{w.thread}/runs/{w.run}", w.store
    by_path = [
        Attempt("GET", f"/v1/assistants/{w.assistant}"),
        Attempt("HEAD", f"/v1/assistants/{w.assistant}"),
        Attempt("POST", f"/v1/assistants/{w.assistant}", {"name": "mine now"}),
        Attempt("DELETE", f"/v1/assistants/{w.assistant}"),
        Attempt("GET", t),
        Attempt("HEAD", t),
        Attempt("OPTIONS", t),
        Attempt("POST", t, {"metadata": {"k": "v"}}),
        Attempt("DELETE", t),
        Attempt("GET", t + "/messages"),
        Attempt("POST", t + "/messages", {"role": "user", "content": "hi"}),
        Attempt("GET", f"{t}/messages/{w.message}"),
        Attempt("POST", f"{t}/messages/{w.message}", {"metadata": {}}),
        Attempt("DELETE", f"{t}/messages/{w.message}"),
        Attempt("GET", t + "/runs"),
        Attempt("POST", t + "/runs", {"assistant_id": w.assistant}),
        Attempt("GET", r),
        Attempt("POST", r, {"metadata": {}}),
        Attempt("POST", r + "/cancel"),
        Attempt("POST", r + "/submit_tool_outputs", {"tool_outputs": []}),
        Attempt("GET", r + "/steps"),
        Attempt("GET", f"/v1/vector_stores/{vs}"),
        Attempt("POST", f"/v1/vector_stores/{vs}", {"name": "mine"}),
        Attempt("DELETE", f"/v1/vector_stores/{vs}"),
        Attempt("POST", f"/v1/vector_stores/{vs}/search", {"query": "secret"}),
        Attempt("GET", f"/v1/vector_stores/{vs}/files"),
        Attempt("GET", f"/v1/vector_stores/{vs}/files/{w.file}"),
        Attempt("DELETE", f"/v1/vector_stores/{vs}/files/{w.file}"),
        Attempt("GET", f"/v1/vector_stores/{vs}/file_batches/{w.batch}"),
        Attempt("POST", f"/v1/vector_stores/{vs}/file_batches/{w.batch}/cancel"),
        Attempt("GET", f"/v1/vector_stores/{vs}/file_batches/{w.batch}/files"),
        Attempt("GET", f"/v1/files/{w.file}"),
        Attempt("GET", f"/v1/files/{w.file}/content"),
        Attempt("DELETE", f"/v1/files/{w.file}"),
        Attempt("POST", f"/v1/uploads/{w.upload}/cancel"),
        Attempt("POST", f"/v1/uploads/{w.upload}/complete", {"part_ids": []}),
    ]
    own_t, own_vs = f"/v1/threads/{w.own_thread}", f"/v1/vector_stores/{w.own_store}"
    by_body = [
        Attempt("POST", own_t + "/runs", {"assistant_id": w.assistant}),
        Attempt("POST", "/v1/threads/runs", {"assistant_id": w.assistant}),
        Attempt("POST", own_vs + "/files", {"file_id": w.file}),
        Attempt("POST", own_vs + "/file_batches", {"file_ids": [w.file]}),
        Attempt("POST", "/v1/vector_stores", {"name": "x", "file_ids": [w.file]}),
        Attempt(
            "POST",
            own_t + "/messages",
            {
                "role": "user",
                "content": "read this",
                "attachments": [{"file_id": w.file, "tools": [{"type": "file_search"}]}],
            },
        ),
        Attempt(
            "POST",
            "/v1/threads",
            {"tool_resources": {"file_search": {"vector_store_ids": [w.store]}}},
        ),
        Attempt(
            "POST",
            "/v1/assistants",
            {"model": "gpt-4o", "tool_resources": {"code_interpreter": {"file_ids": [w.file]}}},
        ),
    ]
    chunked = [Attempt(a.method, a.path, a.body, chunked=True) for a in by_body]
    by_cursor = [
        Attempt("GET", f"{own_t}/messages?after={w.message}"),
        Attempt("GET", f"{own_t}/messages?before={w.message}&limit=5"),
        Attempt("GET", f"/v1/assistants?after={w.assistant}"),
        Attempt("GET", f"/v1/files?after={w.file}"),
        Attempt("GET", f"/v1/vector_stores?before={w.store}"),
    ]
    return by_path + by_body + chunked + by_cursor


def send(proxy: RunningProxy, who: str, attempt: Attempt, swap: dict[str, str]) -> httpx.Response:
    """The attempt as ``who``, with each id in ``swap`` replaced (to aim at missing ids)."""
    path, body = attempt.path, json.dumps(attempt.body) if attempt.body is not None else None
    for old, new in swap.items():
        path = path.replace(old, new)
        body = body.replace(old, new) if body is not None else None
    headers = {HEADER: who, "OpenAI-Beta": "assistants=v2", "Authorization": "Bearer sk-test"}
    content: Any = None
    if body is not None:
        headers["Content-Type"] = "application/json"
        raw = body.encode()
        # Sent in two pieces, with no Content-Length: the proxy must read it whole.
        content = iter([raw[: len(raw) // 2], raw[len(raw) // 2 :]]) if attempt.chunked else raw
    return httpx.request(attempt.method, proxy.url + path, headers=headers, content=content)


# Ids and times of objects an accepted request created (the simulator, like some
# upstreams, does not check every id a write names): they differ between any two creates.
CREATED = re.compile(r'"(id|created_at|completed_at)":("[A-Za-z0-9_-]+"|\d+)')


def shown(response: httpx.Response, ids: dict[str, str]) -> tuple[int, str, list[tuple[str, str]]]:
    """Status, body and headers with the aimed-at ids written as their placeholders."""
    text = response.text
    for object_id, placeholder in ids.items():
        text = text.replace(object_id, placeholder)
    text = CREATED.sub(r'"\1":"<new>"', text)
    # every header, in order; values that differ between any two requests as '*'
    headers = [
        (k, "*" if k in VOLATILE or k.startswith(("x-ratelimit-", "x-tollhouse-ratelimit-")) else v)
        for k, v in response.headers.multi_items()
    ]
    return response.status_code, text, headers


def tried_as_missing(
    proxy: RunningProxy, upstream: Recorder, attempt: Attempt, theirs: list[str]
) -> int:
    """``attempt`` by globex answers as it does aimed at ids that exist nowhere, and none of
    acme's ids reaches the upstream; the status it answered."""
    named = [i for i in theirs if i in attempt.path or i in json.dumps(attempt.body)]
    missing = {i: twin(i) for i in named}
    placeholders = {i: f"<{n}>" for n, i in enumerate(named)}
    placeholders.update({missing[i]: f"<{n}>" for n, i in enumerate(named)})
    before = len(upstream.seen)
    foreign = send(proxy, "globex", attempt, {})
    leaked = [line for line in upstream.seen[before:] if any(i.encode() in line for i in named)]
    assert leaked == [], attempt
    absent = send(proxy, "globex", attempt, missing)
    assert shown(foreign, placeholders) == shown(absent, placeholders), attempt
    return foreign.status_code


def test_every_foreign_object_answers_as_a_missing_one(
    isolated: RunningProxy, recorder: tuple[Recorder, ServerThread]
) -> None:
    world = build_world(isolated)
    upstream = recorder[0]
    tried = attempts(world)
    refused = [tried_as_missing(isolated, upstream, a, world.acme_ids()) for a in tried]
    # the simulator, like the reference, keeps unchecked ids in a message's attachments and
    # in tool resources: those six creates succeed either way (the upstream kept the twin)
    assert refused.count(404) + refused.count(400) == len(tried) - 6
    # acme's objects are untouched and still its own
    acme = tenant(isolated, "acme")
    assert acme.beta.assistants.retrieve(world.assistant).instructions == "acme's secret prompt"
    assert acme.beta.threads.retrieve(world.thread).id == world.thread
    assert acme.files.retrieve(world.file).id == world.file
    assert acme.vector_stores.retrieve(world.store).id == world.store
    assert [m.id for m in acme.beta.threads.messages.list(world.thread).data][-1] == world.message
    denied = isolated.sample(
        "tollhouse_isolation_denials_total", tenant="globex", operation="threads.retrieve"
    )
    # GET, HEAD and OPTIONS on the thread, each sent again with an id that exists nowhere,
    # which has no owner and is denied the same way
    assert denied == 6


def test_the_admin_tenant_reaches_everything(isolated: RunningProxy) -> None:
    world = build_world(isolated)
    ops = tenant(isolated, "ops")
    assert ops.beta.assistants.retrieve(world.assistant).id == world.assistant
    assert world.assistant in [a.id for a in ops.beta.assistants.list(limit=100).data]
    assert ops.beta.threads.retrieve(world.thread).id == world.thread


def test_lists_show_only_the_callers_objects(isolated: RunningProxy) -> None:
    world = build_world(isolated)
    globex = tenant(isolated, "globex")
    mine = globex.beta.assistants.create(model="gpt-4o", name="globex's")
    assert [a.id for a in globex.beta.assistants.list()] == [mine.id]
    assert [f.id for f in globex.files.list()] == []
    assert [s.id for s in globex.vector_stores.list()] == [world.own_store]
    pages = isolated.sample("tollhouse_list_upstream_pages_total", tenant="globex")
    assert pages >= 3


@pytest.fixture
def crowded(recorder: tuple[Recorder, ServerThread]) -> Iterator[tuple[RunningProxy, list[str]]]:
    """250 assistants upstream, one in ten acme's and the rest globex's, interleaved."""
    upstream = recorder[1].url + "/v1"
    direct = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    made = [direct.beta.assistants.create(model="gpt-4o", name=str(n)) for n in range(250)]
    direct.close()
    with running_proxy(upstream, policy=POLICY, list_scan_pages=10) as proxy:
        started(proxy)
        acme_ids = [a.id for n, a in enumerate(made) if n % 10 == 3]
        own(proxy.tollhouse.engine, "acme", [(i, Kind.ASSISTANT, 1) for i in acme_ids])
        rest = [a.id for n, a in enumerate(made) if n % 10 != 3]
        own(proxy.tollhouse.engine, "globex", [(i, Kind.ASSISTANT, 1) for i in rest])
        yield proxy, acme_ids


@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("limit", [1, 7, 25, 100])
def test_a_filtered_list_pages_as_if_the_tenant_were_alone(
    crowded: tuple[RunningProxy, list[str]], order: str, limit: int
) -> None:
    proxy, acme_ids = crowded
    acme = tenant(proxy, "acme")
    expected = acme_ids if order == "asc" else acme_ids[::-1]
    forward: list[str] = []
    after: str | None = None
    while True:  # by hand, to see every page the client would
        page = acme.beta.assistants.list(limit=limit, order=order, **_cursor("after", after))
        ids = [a.id for a in page.data]
        assert ids, "an empty page before the end"
        assert (page.first_id, page.last_id) == (ids[0], ids[-1])
        forward += ids
        if not page.has_more:
            break
        after = page.last_id
    assert forward == expected
    backward: list[str] = []
    before: str | None = expected[-1]
    while True:  # and back from the last one with `before`
        page = acme.beta.assistants.list(limit=limit, order=order, before=before)
        ids = [a.id for a in page.data]
        if not ids:
            assert not page.has_more
            break
        backward = ids + backward
        if not page.has_more:
            break
        before = page.first_id
    assert backward == expected[:-1]
    assert [a.id for a in acme.beta.assistants.list(limit=limit, order=order)] == expected


def _cursor(name: str, value: str | None) -> dict[str, str]:
    return {name: value} if value is not None else {}


def test_objects_without_an_owner_follow_the_policy(
    recorder: tuple[Recorder, ServerThread],
) -> None:
    upstream = recorder[1].url + "/v1"
    direct = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    older = direct.beta.assistants.create(model="gpt-4o", name="from before tollhouse")
    direct.close()
    with running_proxy(upstream, policy=POLICY) as proxy:
        with pytest.raises(openai.NotFoundError):
            tenant(proxy, "globex").beta.assistants.retrieve(older.id)
        assert older.id not in [a.id for a in tenant(proxy, "globex").beta.assistants.list()]
        assert tenant(proxy, "ops").beta.assistants.retrieve(older.id).id == older.id
    allowing = parse_policy(
        {"identify": {"mode": "header"}, "tenants": TENANTS, "isolation": {"unowned": "allow"}},
        "test",
    )
    with running_proxy(upstream, policy=allowing) as proxy:
        assert tenant(proxy, "globex").beta.assistants.retrieve(older.id).id == older.id
        assert older.id in [a.id for a in tenant(proxy, "acme").beta.assistants.list()]


def test_objects_seen_under_a_tenants_own_thread_become_its_own(isolated: RunningProxy) -> None:
    acme, globex = tenant(isolated, "acme"), tenant(isolated, "globex")
    assistant = acme.beta.assistants.create(model="gpt-4o")
    thread = acme.beta.threads.create(messages=[{"role": "user", "content": "hello"}])
    run = acme.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    steps = acme.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    replies = [m for m in acme.beta.threads.messages.list(thread.id).data if m.role == "assistant"]
    assert replies
    assert steps
    isolated.flush()
    recorded = owners(isolated.tollhouse.engine, [m.id for m in replies])
    assert recorded == dict.fromkeys([m.id for m in replies], "acme")
    # and the assistant's reply is as unreachable to globex as any missing message
    with pytest.raises(openai.NotFoundError):
        globex.beta.threads.messages.retrieve(replies[0].id, thread_id=thread.id)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/threads/thread_a/../thread_b/messages",
        "/v1/threads/thread_a%2F..%2Fthread_b/messages",
        "/v1//threads/thread_a",
        "/v1/threads/thread_a/./messages",
    ],
)
def test_odd_paths_are_refused_before_anything_else(isolated: RunningProxy, path: str) -> None:
    host, port = isolated.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as connection:  # no client tidies the path
        head = f"GET {path} HTTP/1.1\r\nHost: x\r\n{HEADER}: acme\r\nConnection: close\r\n"
        connection.sendall(head.encode() + b"\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400 ")
    assert json.loads(body)["error"]["code"] == "invalid_path"


def test_bodies_that_cannot_be_checked_are_refused(isolated: RunningProxy) -> None:
    headers = {HEADER: "globex", "Content-Type": "application/json"}
    url = isolated.url + "/v1/threads/runs"
    garbled = httpx.post(url, content=b'{"assistant_id": "asst_x",,', headers=headers)
    assert garbled.status_code == 400
    assert garbled.json()["error"]["message"].startswith("We could not parse the JSON body")
    huge = httpx.post(url, content=b'{"x": "' + b"a" * (9 * 1024 * 1024) + b'"}', headers=headers)
    assert huge.status_code == 413
    assert huge.json()["error"]["code"] == "request_too_large"
    packed = httpx.post(url, content=b"\x1f\x8b", headers={**headers, "Content-Encoding": "gzip"})
    assert packed.status_code == 415


def test_a_duplicate_key_cannot_smuggle_a_foreign_id(
    isolated: RunningProxy, recorder: tuple[Recorder, ServerThread]
) -> None:
    acme, globex = tenant(isolated, "acme"), tenant(isolated, "globex")
    theirs = acme.beta.assistants.create(model="gpt-4o").id
    mine = globex.beta.assistants.create(model="gpt-4o").id
    thread = globex.beta.threads.create().id
    before = len(recorder[0].seen)
    for body in (
        f'{{"assistant_id": "{mine}", "assistant_id": "{theirs}"}}',
        f'{{"assistant_id": "{theirs}", "assistant_id": "{mine}"}}',
        '{"assistant_id": "' + "".join(f"\\u{ord(c):04x}" for c in theirs) + '"}',
    ):
        httpx.post(
            f"{isolated.url}/v1/threads/{thread}/runs",
            content=body.encode(),
            headers={HEADER: "globex", "Content-Type": "application/json"},
        )
    assert not [line for line in recorder[0].seen[before:] if theirs.encode() in line]


def not_found_upstream(delay: float) -> Starlette:
    """An upstream with wording of its own for missing objects, that takes its time."""
    seen: list[str] = []

    async def missing(request: Request) -> Response:
        seen.append(request.url.path)
        await asyncio.sleep(delay)  # the upstream's own lookup time, which refusals must match
        object_id = request.path_params["object_id"]
        return JSONResponse(
            {"error": {"message": f"Resource '{object_id}' was not found in this deployment.",
                       "type": "not_found_error", "param": "id", "code": "resource_missing"}},
            status_code=404,
            headers={"x-upstream": "compatible"},
        )  # fmt: skip

    app = Starlette(routes=[Route("/v1/threads/{object_id}", missing)])
    app.state.seen = seen
    return app


def test_a_refusal_uses_the_upstreams_own_wording_and_time() -> None:
    app = not_found_upstream(0.3)
    with serve(app) as upstream, running_proxy(upstream.url + "/v1", policy=POLICY) as proxy:
        theirs = "thread_" + "a1b2c3d4e5f6" * 2
        started(proxy)
        own(proxy.tollhouse.engine, "acme", [(theirs, Kind.THREAD, 1)])
        began = time.monotonic()
        with pytest.raises(openai.NotFoundError) as caught:
            tenant(proxy, "globex").beta.threads.retrieve(theirs)
        took = time.monotonic() - began
        response = caught.value.response
        assert caught.value.body == {
            "message": f"Resource '{theirs}' was not found in this deployment.",
            "type": "not_found_error",
            "param": "id",
            "code": "resource_missing",
        }
        assert response.headers["x-upstream"] == "compatible"
        assert took >= 0.3  # it waited for the upstream, as a real not-found does
        assert len(app.state.seen) == 1
        assert theirs not in app.state.seen[0]
        assert len(app.state.seen[0]) == len(f"/v1/threads/{theirs}")


def test_a_create_that_echoes_an_object_takes_nothing(
    recorder: tuple[Recorder, ServerThread],
) -> None:
    upstream = recorder[1].url + "/v1"
    direct = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    older = direct.beta.threads.create(messages=[{"role": "user", "content": "old secret"}])
    direct.close()
    with running_proxy(upstream, policy=POLICY) as proxy:
        globex = tenant(proxy, "globex")
        bait = {"x": {"object": "thread", "id": older.id}, "message_id": older.id}
        globex.beta.assistants.create(
            model="gpt-4o",
            tools=[{"type": "function", "function": {"name": "f", "parameters": bait}}],
            metadata={"file_id": older.id},
        )
        proxy.flush()
        assert owners(proxy.tollhouse.engine, [older.id]) == {}
        with pytest.raises(openai.NotFoundError):
            globex.beta.threads.messages.list(older.id)


def test_owners_are_recorded_from_compressed_answers() -> None:
    from starlette.middleware.gzip import GZipMiddleware

    app = GZipMiddleware(create_app(SimulatorConfig()), minimum_size=10)
    with serve(app) as upstream, running_proxy(upstream.url + "/v1", policy=POLICY) as proxy:
        acme = tenant(proxy, "acme")  # the openai client asks for gzip
        made = acme.beta.assistants.create(model="gpt-4o", instructions="x" * 400)
        assert owners(proxy.tollhouse.engine, [made.id]) == {made.id: "acme"}
        assert acme.beta.assistants.retrieve(made.id).id == made.id
        with pytest.raises(openai.NotFoundError):
            tenant(proxy, "globex").beta.assistants.retrieve(made.id)


def test_operations_tollhouse_does_not_know_never_carry_a_foreign_id(
    isolated: RunningProxy, recorder: tuple[Recorder, ServerThread]
) -> None:
    world = build_world(isolated)
    before = len(recorder[0].seen)
    headers = {HEADER: "globex", "Content-Type": "application/json"}
    httpx.post(
        isolated.url + "/v1/batches",
        json={"input_file_id": world.file, "endpoint": "/v1/responses"},
        headers=headers,
    )
    httpx.post(isolated.url + "/v1/fine_tuning/jobs", json={"training_file": world.file},
               headers=headers)  # fmt: skip
    encoded = "%61" + world.assistant[1:]  # 'a' as %61
    httpx.get(f"{isolated.url}/v1/assistants/{encoded}/files", headers=headers)
    httpx.get(f"{isolated.url}/v1/threads/{world.own_thread}/messages?run_id={world.run}",
              headers=headers)  # fmt: skip
    httpx.get(f"{isolated.url}/v1/threads/{world.own_thread}/messages?after=+{world.message}",
              headers=headers)  # fmt: skip
    sent = recorder[0].seen[before:]
    assert len(sent) == 5
    for secret in (world.file, world.assistant, world.run, world.message):
        assert not [line for line in sent if secret.encode() in line]
        assert not [line for line in sent if secret[1:].encode() in line]


def test_head_on_a_shared_list_tells_only_the_callers_length(isolated: RunningProxy) -> None:
    build_world(isolated)
    headers = {HEADER: "globex", "Authorization": "Bearer sk-test", "OpenAI-Beta": "assistants=v2"}
    url = isolated.url + "/v1/assistants?limit=100"
    got = httpx.get(url, headers=headers)
    head = httpx.head(url, headers=headers)
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(got.content))
    assert head.content == b""
    assert [a["id"] for a in got.json()["data"]] == []


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("limit=3&limit=4", "invalid_value"),
        ("limit=0", "integer_below_min_value"),
        ("limit=101", "integer_above_max_value"),
        ("limit=many", "invalid_type"),
        ("after={mine}&before={mine}", "invalid_value"),
    ],
)
def test_shared_lists_judge_their_paging(isolated: RunningProxy, query: str, code: str) -> None:
    mine = tenant(isolated, "globex").beta.assistants.create(model="gpt-4o").id
    url = f"{isolated.url}/v1/assistants?{query.format(mine=mine)}"
    response = httpx.get(url, headers={HEADER: "globex"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code


def test_a_repeated_tenant_header_is_refused(isolated: RunningProxy) -> None:
    response = httpx.get(
        isolated.url + "/v1/assistants", headers=[(HEADER, "acme"), (HEADER, "globex")]
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "ambiguous_tenant"


def test_a_deep_body_naming_a_foreign_id_is_a_clear_error(isolated: RunningProxy) -> None:
    theirs = tenant(isolated, "acme").beta.assistants.create(model="gpt-4o").id
    body = '{"assistant_id": "' + theirs + '", "x": ' + "[" * 600 + "]" * 600 + "}"
    response = httpx.post(
        isolated.url + "/v1/threads/runs",
        content=body.encode(),
        headers={HEADER: "globex", "Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_twinned_stream_still_streams_and_its_creations_are_owned(
    isolated: RunningProxy,
) -> None:
    acme, globex = tenant(isolated, "acme"), tenant(isolated, "globex")
    secret = acme.files.create(file=("s.txt", io.BytesIO(b"acme")), purpose="assistants").id
    assistant = globex.beta.assistants.create(model="gpt-4o").id
    with globex.beta.threads.create_and_run_stream(
        assistant_id=assistant,
        thread={"messages": [{"role": "user", "content": "hi",
                              "attachments": [{"file_id": secret, "tools": []}]}]},
    ) as stream:  # fmt: skip
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "completed"
    isolated.flush()
    assert owners(isolated.tollhouse.engine, [run.thread_id]) == {run.thread_id: "globex"}
    assert globex.beta.threads.retrieve(run.thread_id).id == run.thread_id


def test_an_admin_takes_no_unowned_object_by_naming_it(
    recorder: tuple[Recorder, ServerThread],
) -> None:
    upstream = recorder[1].url + "/v1"
    direct = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    store = direct.vector_stores.create(name="from before tollhouse")
    direct.close()
    with running_proxy(upstream, policy=POLICY) as proxy:
        ops = tenant(proxy, "ops")
        ops.beta.threads.create(tool_resources={"file_search": {"vector_store_ids": [store.id]}})
        proxy.flush()
        assert owners(proxy.tollhouse.engine, [store.id]) == {}


def test_a_sparse_tenant_finds_its_object_far_past_the_bound(
    recorder: tuple[Recorder, ServerThread],
) -> None:
    upstream = recorder[1].url + "/v1"
    direct = openai.OpenAI(base_url=upstream, api_key="sk-test", max_retries=0)
    made = [direct.beta.assistants.create(model="gpt-4o").id for _ in range(450)]
    direct.close()
    with running_proxy(upstream, policy=POLICY, list_scan_pages=1) as proxy:
        started(proxy)
        own(proxy.tollhouse.engine, "acme", [(made[17], Kind.ASSISTANT, 1)])
        own(proxy.tollhouse.engine, "globex", [(i, Kind.ASSISTANT, 1) for i in made[18:]])
        page = tenant(proxy, "acme").beta.assistants.list(limit=5)
        assert [a.id for a in page.data] == [made[17]]
        assert page.has_more is False

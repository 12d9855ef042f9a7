"""The Responses WebSocket mode through tollhouse, with the real openai client's connect()."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest
from sqlmodel import Session
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve, tollhouse_process
from tollhouse.api.errors import ErrorResponse
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.ledger.models import Response
from tollhouse.ledger.store import owners
from tollhouse.metering.sse import SSEParser
from tollhouse.proxy.tenants import hash_key, new_key
from tollhouse.proxy.websocket import as_sse, error_event, sendable
from tollhouse_simulator import Simulator, SimulatorConfig, create_app

HEADER = "X-Tollhouse-Tenant"
ASK = {"type": "response.create", "model": "gpt-4o", "input": "hello there"}
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}
# Fields that differ between any two responses, whatever they say.
VOLATILE = {"id", "item_id", "created_at", "completed_at"}
ACME_KEY = new_key()


class Watched:
    """The simulator, with what reaches its sockets: frames received, disconnects."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.app = create_app(config)
        self.frames: list[str] = []
        self.disconnects: list[int] = []
        self.closed = threading.Event()  # a socket's client left and its handler returned

    @property
    def simulator(self) -> Simulator:
        simulator = self.app.state.simulator
        assert isinstance(simulator, Simulator)
        return simulator

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return

        async def watched() -> Any:
            message = await receive()
            if message["type"] == "websocket.receive":
                self.frames.append(message.get("text") or "")
            elif message["type"] == "websocket.disconnect":
                self.disconnects.append(message.get("code"))
            return message

        await self.app(scope, watched, send)
        if self.disconnects:
            self.closed.set()


def policy(**tenants: dict[str, Any]) -> Policy:
    tenants = {"acme": {}, "globex": {}, **tenants}
    return parse_policy({"identify": {"mode": "header"}, "tenants": tenants}, "test")


@pytest.fixture
def upstream() -> Iterator[tuple[Watched, ServerThread]]:
    watched = Watched(SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05))
    with serve(watched) as server:
        yield watched, server


@pytest.fixture
def proxy(upstream: tuple[Watched, ServerThread]) -> Iterator[RunningProxy]:
    with running_proxy(upstream[1].url + "/v1", policy=policy()) as running:
        yield running


def tenant(proxy: RunningProxy, name: str) -> openai.OpenAI:
    return proxy.client(default_headers={HEADER: name})


def answer(connection: Any) -> list[dict[str, Any]]:
    """The events answering one create, up to its terminal one, as plain JSON."""
    events = []
    for event in connection:
        events.append(event.to_dict())
        if event.type in TERMINAL:
            return events
    raise AssertionError("the socket closed before the response ended")


def created(client: openai.OpenAI, **fields: Any) -> str:
    """A response created over a socket of ``client``; its id."""
    with client.responses.connect() as connection:
        connection.send({**ASK, **fields})
        events = answer(connection)
    assert events[-1]["type"] == "response.completed", events[-1]
    return str(events[-1]["response"]["id"])


def steady(value: Any) -> Any:
    """An event with its ids and times blanked: what two equal answers have in common."""
    if isinstance(value, dict):
        return {k: "*" if k in VOLATILE else steady(v) for k, v in value.items()}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def error_of(events: list[dict[str, Any]]) -> dict[str, Any]:
    assert [e["type"] for e in events] == ["error"], events
    return events[0]


def test_a_response_arrives_event_by_event_as_the_upstream_sends_it(
    proxy: RunningProxy, upstream: tuple[Watched, ServerThread]
) -> None:
    direct = openai.OpenAI(base_url=upstream[1].url + "/v1", api_key="sk-test", max_retries=0)
    event = {**ASK, "stream_id": "lane-1", "metadata": {"k": "v"}}
    with tenant(proxy, "acme").responses.connect() as connection:
        connection.send(event)
        through = answer(connection)
    with direct.responses.connect() as connection:
        connection.send(event)
        directly = answer(connection)
    direct.close()
    assert through[0]["type"] == "response.created"
    assert through[-1]["type"] == "response.completed"
    assert [e["sequence_number"] for e in through] == list(range(len(through)))
    assert {e["stream_id"] for e in through} == {"lane-1"}
    assert steady(through) == steady(directly)


def test_two_creates_on_one_socket_are_answered_in_turn_and_counted(
    proxy: RunningProxy,
) -> None:
    with tenant(proxy, "acme").responses.connect() as connection:
        connection.send({**ASK, "stream_id": "a"})
        first = answer(connection)
        first_id = first[-1]["response"]["id"]
        connection.send({**ASK, "stream_id": "b", "previous_response_id": first_id})
        second = answer(connection)
        connection.send({**ASK, "background": True})  # refused upstream; the socket stays
        refused = error_of(answer(connection))
        connection.send_raw("{not json")  # answered by tollhouse; the socket stays
        unreadable = error_of(answer(connection))
    assert second[-1]["type"] == "response.completed"
    assert second[-1]["response"]["previous_response_id"] == first_id
    assert {e["stream_id"] for e in second} == {"b"}
    assert refused["status"] == 400
    assert refused["error"]["param"] == "background"
    assert unreadable["status"] == 400
    assert unreadable["error"]["message"].startswith("We could not parse the JSON body")
    requests = "tollhouse_requests_total"
    labels = {"tenant": "acme", "class": "RESPONSE_CREATE", "operation": "responses.create"}
    assert proxy.sample(requests, **labels, outcome="forwarded") == 3


def test_the_tenant_is_named_by_the_handshakes_header(
    proxy: RunningProxy, upstream: tuple[Watched, ServerThread]
) -> None:
    response_id = created(tenant(proxy, "globex"))
    proxy.flush()
    assert owners(proxy.tollhouse.engine, [response_id]) == {response_id: "globex"}
    sockets = upstream[0].simulator.counters["websockets"]
    over_http = httpx.get(proxy.url + "/v1/responses/x", headers={HEADER: "nobody"})
    with pytest.raises(InvalidStatus) as refused:
        created(tenant(proxy, "nobody"))
    assert refused.value.response.status_code == over_http.status_code == 403
    assert json.loads(refused.value.response.body) == over_http.json()
    assert upstream[0].simulator.counters["websockets"] == sockets  # never opened upstream


def test_keys_mode_replaces_the_tenants_key_in_the_handshake() -> None:
    watched = Watched(SimulatorConfig(in_progress_seconds=0.05, api_keys=frozenset({"sk-real"})))
    keys = parse_policy(
        {"identify": {"mode": "keys"}, "tenants": {"acme": {"keys": [hash_key(ACME_KEY)]}}},
        "test",
    )
    with (
        serve(watched) as server,
        running_proxy(server.url + "/v1", policy=keys, upstream_api_key="sk-real") as proxy,
    ):
        response_id = created(proxy.client(api_key=ACME_KEY))
        proxy.flush()
        assert owners(proxy.tollhouse.engine, [response_id]) == {response_id: "acme"}
        seen = [r.headers.get("authorization") for r in watched.simulator.requests]
        assert len(seen) == 2  # the handshake and the create
        assert set(seen) == {"Bearer sk-real"}
        with pytest.raises(InvalidStatus) as refused:
            created(proxy.client(api_key="th-not-a-key"))
        assert refused.value.response.status_code == 401
        error = json.loads(refused.value.response.body)["error"]
        assert error["code"] == "invalid_api_key"
        assert len(watched.simulator.requests) == 2  # the refused socket never went upstream


def test_a_path_other_than_responses_is_refused_as_an_invalid_url(proxy: RunningProxy) -> None:
    client = tenant(proxy, "acme")
    client.websocket_base_url = proxy.url.replace("http", "ws") + "/v1/chat"
    with pytest.raises(InvalidStatus) as refused:
        created(client)
    assert refused.value.response.status_code == 404
    message = json.loads(refused.value.response.body)["error"]["message"]
    assert message == "Invalid URL (GET /v1/chat/responses)"


def test_a_tenant_over_its_limit_gets_a_429_event_and_keeps_its_socket(
    upstream: tuple[Watched, ServerThread],
) -> None:
    one = {"RESPONSE_CREATE": {"requests_per_unit": 1, "unit": "hour", "burst": 1}}
    with running_proxy(upstream[1].url + "/v1", policy=policy(acme={"limits": one})) as proxy:
        with tenant(proxy, "acme").responses.connect() as connection:
            connection.send(ASK)
            assert answer(connection)[-1]["type"] == "response.completed"
            creates = upstream[0].simulator.counters["class:POST"]
            connection.send({**ASK, "stream_id": "again"})
            refused = error_of(answer(connection))
            assert upstream[0].simulator.counters["class:POST"] == creates  # never forwarded
            unlimited = {"RESPONSE_CREATE": {"unlimited": True}}
            proxy.tollhouse.apply_policy(policy(acme={"limits": unlimited}))
            connection.send(ASK)
            assert answer(connection)[-1]["type"] == "response.completed"
        assert refused["status"] == 429
        assert refused["stream_id"] == "again"
        assert refused["error"]["code"] == "rate_limit_exceeded"
        assert refused["error"]["type"] == "requests"
        assert "Rate limit reached for tenant 'acme'" in refused["error"]["message"]
        labels = {"tenant": "acme", "class": "RESPONSE_CREATE", "operation": "responses.create"}
        assert proxy.sample("tollhouse_requests_total", **labels, outcome="throttled") == 1


def test_another_tenants_previous_response_is_answered_as_a_missing_one(
    proxy: RunningProxy, upstream: tuple[Watched, ServerThread]
) -> None:
    theirs = created(tenant(proxy, "acme"))
    missing = "resp_" + "0" * (len(theirs) - len("resp_"))
    with tenant(proxy, "globex").responses.connect() as connection:
        connection.send({**ASK, "previous_response_id": theirs})
        foreign = error_of(answer(connection))
        connection.send({**ASK, "previous_response_id": missing})
        absent = error_of(answer(connection))
        connection.send(ASK)  # still usable
        assert answer(connection)[-1]["type"] == "response.completed"
    assert foreign["status"] == absent["status"] == 404
    assert foreign["error"]["message"] == f"Previous response with id '{theirs}' not found."
    assert json.dumps(foreign).replace(theirs, missing) == json.dumps(absent)
    # The upstream never heard acme's id from globex's socket.
    assert sum(theirs in frame for frame in upstream[0].frames) == 0
    # Both were twinned: an id no one owns is not globex's either (the policy's default).
    denials = proxy.sample(
        "tollhouse_isolation_denials_total", tenant="globex", operation="responses.create"
    )
    assert denials == 2


def test_the_response_created_over_a_socket_belongs_to_its_tenant(proxy: RunningProxy) -> None:
    response_id = created(tenant(proxy, "acme"))
    assert tenant(proxy, "acme").responses.retrieve(response_id).id == response_id
    with pytest.raises(openai.NotFoundError) as foreign:
        tenant(proxy, "globex").responses.retrieve(response_id)
    missing = "resp_" + "0" * (len(response_id) - len("resp_"))
    with pytest.raises(openai.NotFoundError) as absent:
        tenant(proxy, "globex").responses.retrieve(missing)
    as_missing = json.dumps(foreign.value.body).replace(response_id, missing)
    assert json.loads(as_missing) == absent.value.body


def test_a_response_created_over_a_socket_is_metered_once(proxy: RunningProxy) -> None:
    acme = tenant(proxy, "acme")
    with acme.responses.connect() as connection:
        connection.send(ASK)
        events = answer(connection)
    final = events[-1]["response"]
    assert acme.responses.retrieve(final["id"]).usage is not None  # seen again over HTTP
    proxy.flush()
    with Session(proxy.tollhouse.engine) as session:
        stored = session.get(Response, final["id"])
    assert stored is not None
    usage = final["usage"]
    assert (stored.tenant, stored.status) == ("acme", "completed")
    assert (stored.input_tokens, stored.output_tokens) == (
        usage["input_tokens"],
        usage["output_tokens"],
    )
    metered = proxy.sample(
        "tollhouse_tokens_total", tenant="acme", model=final["model"], direction="input"
    )
    assert metered == usage["input_tokens"]  # once, though seen over the socket and over HTTP


def test_a_client_that_leaves_mid_response_closes_the_upstream_socket() -> None:
    gate = threading.Event()  # the simulator holds each stream after its first event
    watched = Watched(SimulatorConfig(in_progress_seconds=0.05, stream_gate=gate))
    with serve(watched) as server, running_proxy(server.url + "/v1", policy=policy()) as proxy:
        try:
            with tenant(proxy, "acme").responses.connect() as connection:
                connection.send(ASK)
                first = connection.recv()
                assert first.type == "response.created"
            assert watched.closed.wait(10), "the upstream socket stayed open"
            assert watched.disconnects == [1000]
        finally:
            gate.set()
        proxy.flush()
        response_id = first.response.id  # type: ignore[union-attr]
        assert owners(proxy.tollhouse.engine, [response_id]) == {response_id: "acme"}


def test_tollhouse_serve_speaks_websockets(upstream: tuple[Watched, ServerThread]) -> None:
    with tollhouse_process("--upstream", upstream[1].url + "/v1") as process:
        client = openai.OpenAI(base_url=process.url + "/v1", api_key="sk-test", max_retries=0)
        try:
            response_id = created(client)
        finally:
            client.close()
    assert response_id.startswith("resp_")


async def hang_up(websocket: WebSocket) -> None:
    """An upstream that reads one event and closes the socket with a code of its own."""
    await websocket.accept()
    await websocket.receive_text()
    await websocket.close(4001, "going away now")


def test_the_upstream_closing_closes_the_clients_socket_with_its_code() -> None:
    app = Starlette(routes=[WebSocketRoute("/v1/responses", hang_up)])
    with serve(app) as server, running_proxy(server.url + "/v1", policy=policy()) as proxy:
        with tenant(proxy, "acme").responses.connect() as connection:
            connection.send(ASK)
            with pytest.raises(ConnectionClosed) as closed:
                connection.recv()
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "going away now")
        labels = {"tenant": "acme", "class": "RESPONSE_CREATE", "operation": "responses.create"}
        assert proxy.sample("tollhouse_requests_total", **labels, outcome="upstream_error") == 1
        assert proxy.sample("tollhouse_stream_aborts_total", reason="upstream_error") == 1


async def test_the_async_client_creates_over_the_socket_too(proxy: RunningProxy) -> None:
    async with openai.AsyncOpenAI(
        base_url=proxy.url + "/v1",
        api_key="sk-test",
        max_retries=0,
        default_headers={HEADER: "acme"},
    ) as client:
        async with client.responses.connect() as connection:
            await connection.send({**ASK, "stream_id": "async"})
            kinds = []
            async for event in connection:
                kinds.append(event.type)
                if event.type in TERMINAL:
                    break
    assert kinds[0] == "response.created"
    assert kinds[-1] == "response.completed"


@pytest.mark.parametrize(
    ("received", "otherwise", "sent"),
    [
        (1000, 1011, 1000),
        (4001, 1011, 4001),
        (1012, 1001, 1012),
        (None, 1001, 1001),
        (1005, 1001, 1001),  # no status: may not be sent
        (1006, 1011, 1011),  # abnormal closure: may not be sent
        (1015, 1011, 1011),  # TLS failure: may not be sent
        (999, 1011, 1011),
        (5000, 1011, 1011),
    ],
)
def test_only_close_codes_an_endpoint_may_send_are_passed_on(
    received: int | None, otherwise: int, sent: int
) -> None:
    assert sendable(received, otherwise) == sent


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"response.created","sequence_number":0,"response":{"id":"resp_1"}}',
        '{\n  "type": "response.created",\n  "sequence_number": 0\n}',  # pretty-printed
    ],
)
def test_a_server_event_is_observed_as_the_sse_stream_carries_it(frame: str) -> None:
    event = json.loads(frame)
    [parsed] = SSEParser().feed(as_sse(event["type"], frame, event))
    assert parsed.event == "response.created"
    assert json.loads(parsed.data) == event


def test_a_tollhouse_error_event_is_shaped_like_the_upstreams() -> None:
    error = ErrorResponse(429, "Rate limit reached", "requests", "rate_limit_exceeded")
    assert json.loads(error_event(error, "lane")) == {
        "type": "error",
        "status": 429,
        "error": {
            "message": "Rate limit reached",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        },
        "stream_id": "lane",
    }
    assert "stream_id" not in json.loads(error_event(error, None))

"""The simulator's Responses WebSocket mode: events as a stream sends them, errors per the spec."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from jsonschema.exceptions import best_match

from tests.servers import ServerThread, serve
from tests.test_simulator_responses import SPEC, Spec
from tollhouse_simulator import Simulator, SimulatorConfig, create_app

ASK = {"type": "response.create", "model": "gpt-4o", "input": "hello"}
TERMINAL = {"response.completed", "response.failed", "response.incomplete", "error"}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return Spec(SPEC)


@pytest.fixture
def server() -> Iterator[ServerThread]:
    with serve(create_app(SimulatorConfig(in_progress_seconds=0.05))) as running:
        yield running


@pytest.fixture
def client(server: ServerThread) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as made:
        yield made


def answer(connection: Any) -> list[dict[str, Any]]:
    events = []
    for event in connection:
        events.append(event.to_dict())
        if event.type in TERMINAL:
            return events
    raise AssertionError("the socket closed before the response ended")


def mismatches(spec: Spec, events: list[dict[str, Any]]) -> list[str]:
    validator = spec.validator("#/components/schemas/ResponsesServerEvent")
    found = []
    for event in events:
        error = best_match(validator.iter_errors(event))
        if error is not None:
            found.append(f"{event['type']}: {error.message} at {error.json_path}")
    return found


def test_a_create_gets_the_events_of_a_streamed_create(client: openai.OpenAI, spec: Spec) -> None:
    streamed = [e.type for e in client.responses.create(model="gpt-4o", input="hi", stream=True)]
    with client.responses.connect() as connection:
        connection.send({**ASK, "stream_id": "lane.1"})
        events = answer(connection)
    assert [e["type"] for e in events] == streamed
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert {e["stream_id"] for e in events} == {"lane.1"}
    assert mismatches(spec, events) == []
    assert client.responses.retrieve(events[-1]["response"]["id"]).status == "completed"


@pytest.mark.parametrize(
    ("event", "param", "code"),
    [
        ({**ASK, "background": True}, "background", "unsupported_parameter"),
        ({**ASK, "type": "response.cancel"}, "type", "invalid_value"),
        ({**ASK, "stream_id": "no spaces"}, "stream_id", "invalid_value"),
        ({**ASK, "colour": "blue"}, None, "unknown_parameter"),
        ({**ASK, "previous_response_id": "resp_" + "0" * 48}, "previous_response_id", None),
    ],
)
def test_a_bad_event_gets_an_error_event_and_the_socket_stays_open(
    client: openai.OpenAI, spec: Spec, event: dict[str, Any], param: str | None, code: str | None
) -> None:
    with client.responses.connect() as connection:
        connection.send_raw(json.dumps({"stream_id": "s", **event}))
        refused = answer(connection)
        connection.send(ASK)
        assert answer(connection)[-1]["type"] == "response.completed"
    assert [e["type"] for e in refused] == ["error"]
    assert refused[0]["status"] in (400, 404)
    assert (refused[0]["error"]["param"], refused[0]["error"]["code"]) == (param, code)
    assert mismatches(spec, refused) == []


def test_a_socket_is_a_request_to_the_simulator(
    server: ServerThread, client: openai.OpenAI
) -> None:
    simulator = server_simulator(server)
    with client.responses.connect() as connection:
        connection.send(ASK)
        answer(connection)
        connection.send(ASK)
        answer(connection)
    assert simulator.counters["websockets"] == 1
    assert simulator.counters["class:POST"] == 2
    assert [r.method for r in simulator.requests] == ["GET", "POST", "POST"]


def server_simulator(server: ServerThread) -> Simulator:
    app = server.server.config.app
    simulator = app.state.simulator
    assert isinstance(simulator, Simulator)
    return simulator

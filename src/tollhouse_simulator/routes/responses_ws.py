"""The Responses WebSocket mode: ``response.create`` events on one socket, answered in order.

Each create is what a streamed ``POST /v1/responses`` does, and its events are the
ones that stream would send, one JSON text frame each, echoing the create's
``stream_id``. A bad event gets an ``error`` event (``ResponseWsError``) and the
socket stays open. Creates are answered one after the other (FIFO per connection);
a client that leaves stops the one being answered.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.responses import JSONResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tollhouse_simulator.bodies import Body, json_type
from tollhouse_simulator.errors import INVALID_JSON, SimulatorError, bad_request
from tollhouse_simulator.gate import check_key
from tollhouse_simulator.ratelimit import request_class
from tollhouse_simulator.response_requests import create_response
from tollhouse_simulator.response_settings import RESPONSE_FIELDS
from tollhouse_simulator.responses import ResponseRun
from tollhouse_simulator.sse import GATE_POLL, MAX_IDLE_WAIT
from tollhouse_simulator.state import RecordedRequest, Simulator

PATH = "/v1/responses"
CREATE = "response.create"
STREAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,256}$")
DENIAL = "websocket.http.response"


class EventError(Exception):
    """A client event answered with an ``error`` event."""

    def __init__(self, error: SimulatorError, stream_id: str | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.stream_id = stream_id


def error_event(error: SimulatorError, stream_id: str | None) -> dict[str, Any]:
    """The spec's ``ResponseWsError`` for ``error``."""
    event: dict[str, Any] = {"type": "error", "status": error.status, **error.body()}
    if stream_id is not None:
        event["stream_id"] = stream_id
    return event


def read_event(text: str) -> tuple[Body, str | None]:
    """A ``response.create`` event's body (the fields of ``POST /v1/responses``) and its lane."""
    try:
        data = json.loads(text)
    except ValueError:
        raise EventError(bad_request(INVALID_JSON), None) from None
    if not isinstance(data, dict):
        message = f"Invalid type for event: expected an object, but got {json_type(data)} instead."
        raise EventError(bad_request(message, code="invalid_type"), None)
    stream_id = data.pop("stream_id", None)
    if stream_id is not None and not (isinstance(stream_id, str) and STREAM_ID.match(stream_id)):
        message = (
            f"Invalid 'stream_id': {json.dumps(stream_id)[:64]}. Expected a string of 1 to 256 "
            "letters, digits, '_', '.' or '-'."
        )
        raise EventError(bad_request(message, "stream_id", "invalid_value"), None)
    kind = data.pop("type", None)
    if kind != CREATE:
        if kind is None:
            error = bad_request(
                "Missing required parameter: 'type'.", "type", "missing_required_parameter"
            )
        else:
            error = bad_request(
                f"Invalid value: {json.dumps(kind)[:64]}. Supported values are: '{CREATE}'.",
                "type",
                "invalid_value",
            )
        raise EventError(error, stream_id)
    for key in data:
        if key not in RESPONSE_FIELDS:
            message = f"Unrecognized request argument supplied: {key}"
            raise EventError(bad_request(message, code="unknown_parameter"), stream_id)
    if data.get("background") is True:
        error = bad_request(
            "Background mode is not supported in WebSocket mode: create background "
            "responses with POST /v1/responses.",
            "background",
            "unsupported_parameter",
        )
        raise EventError(error, stream_id)
    data.pop("stream", None)  # implicit over a WebSocket
    return data, stream_id


class Lane:
    """One connection: its creates, answered in order."""

    def __init__(self, sim: Simulator, websocket: WebSocket, headers: dict[str, str]) -> None:
        self.sim = sim
        self.websocket = websocket
        self.headers = headers

    async def send(self, event: dict[str, Any], stream_id: str | None) -> None:
        if stream_id is not None:
            event = {**event, "stream_id": stream_id}
        await self.websocket.send_text(json.dumps(event, separators=(",", ":")))

    async def answer(self, text: str) -> None:
        sim = self.sim
        stream_id = None
        try:
            body, stream_id = read_event(text)
            kind = request_class("POST", PATH)
            sim.record(RecordedRequest("POST", PATH, "", self.headers), kind)
            sim.limiter.admit(kind, sim.now())
            run = create_response(sim, body, sim.now(), stream=True)
        except EventError as exc:
            await self.send(error_event(exc.error, None), exc.stream_id)
            return
        except SimulatorError as exc:
            await self.send(error_event(exc, None), stream_id)
            return
        sim.counters["streams"] += 1
        await self.stream(run, stream_id)

    async def stream(self, run: ResponseRun, stream_id: str | None) -> None:
        """The events of ``run`` as they are due, as the SSE stream paces them."""
        sim, gate = self.sim, self.sim.config.stream_gate
        position = 0
        while True:
            run.advance(sim.now())
            while position < len(run.events):
                await self.send(run.events[position], stream_id)
                if position == 0 and gate is not None:
                    while not await asyncio.to_thread(gate.wait, GATE_POLL):
                        continue
                position += 1
            if run.finished:
                return
            due = run.timeline.next_due()
            wait = MAX_IDLE_WAIT if due is None else due - sim.now()
            await asyncio.sleep(min(max(wait, 0.0), MAX_IDLE_WAIT))


async def _answer_all(lane: Lane, pending: asyncio.Queue[str]) -> None:
    while True:
        await lane.answer(await pending.get())


async def _read_all(websocket: WebSocket, pending: asyncio.Queue[str]) -> None:
    """Queue the client's events until it disconnects."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        text = message.get("text")
        if text is None:
            text = (message.get("bytes") or b"").decode("utf-8", "replace")
        await pending.put(text)


async def _refuse(websocket: WebSocket, error: SimulatorError) -> None:
    if DENIAL in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(error.body(), status_code=error.status))
    else:
        await websocket.close(1008, error.message[:120])


async def socket(websocket: WebSocket) -> None:
    sim = websocket.app.state.simulator
    assert isinstance(sim, Simulator)
    raw_headers = websocket.scope["headers"]
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in raw_headers}
    query = websocket.scope.get("query_string", b"").decode("latin-1")
    sim.record(RecordedRequest("GET", PATH, query, headers), "GET")
    sim.counters["websockets"] += 1
    try:
        check_key(headers.get("authorization"), sim.config.api_keys)
    except SimulatorError as error:
        await _refuse(websocket, error)
        return
    await websocket.accept()
    pending: asyncio.Queue[str] = asyncio.Queue()
    reading = asyncio.create_task(_read_all(websocket, pending))
    answering = asyncio.create_task(_answer_all(Lane(sim, websocket, headers), pending))
    try:
        await asyncio.wait((reading, answering), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reading, answering):
            task.cancel()
        await asyncio.gather(reading, answering, return_exceptions=True)
        sim.counters["websockets_closed"] += 1
    for task in (reading, answering):
        failed = None if task.cancelled() else task.exception()
        # A client gone mid-answer ends the socket; anything else is the simulator's bug.
        if failed is not None and not isinstance(failed, WebSocketDisconnect | OSError):
            raise failed


def routes() -> list[WebSocketRoute]:
    return [WebSocketRoute(PATH, socket)]

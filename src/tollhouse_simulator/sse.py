"""Server-sent events for runs, responses and chat completions: encoding, pacing, the test gate."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.responses import StreamingResponse

from tollhouse_simulator.lifecycle import LEG_ENDS, Run
from tollhouse_simulator.responses import ResponseRun
from tollhouse_simulator.state import Simulator
from tollhouse_simulator.timeline import Event

MAX_IDLE_WAIT = 0.05  # re-read the clock at least this often (an injected clock may jump)
GATE_POLL = 0.25


def encode(event: str, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


DONE = encode("done", "[DONE]")


def run_stream(
    sim: Simulator, run: Run, events: list[Event], prelude: list[Event] | None = None
) -> StreamingResponse:
    """Streams the run's events from the subscription ``events`` until the run stops or waits."""
    sim.counters["streams"] += 1
    return StreamingResponse(
        _events(sim, run, events, prelude or []),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


async def _events(
    sim: Simulator, run: Run, events: list[Event], prelude: list[Event]
) -> AsyncIterator[bytes]:
    gate = sim.config.stream_gate
    thread_id = str(run.obj["thread_id"])
    pending = list(prelude)
    first = True
    try:
        while True:
            now = sim.now()
            run.advance(now)
            sim.advance_thread(thread_id, now)
            pending.extend(events)
            events.clear()
            while pending:
                name, data = pending.pop(0)
                yield encode(name, data)
                if first and gate is not None:
                    await _wait_for(gate)
                first = False
                if name in LEG_ENDS:
                    yield DONE
                    return
            due = run.timeline.next_due()
            wait = MAX_IDLE_WAIT if due is None else due - sim.now()
            await asyncio.sleep(min(max(wait, 0.0), MAX_IDLE_WAIT))
    finally:
        run.timeline.unsubscribe(events)


async def _wait_for(gate: threading.Event) -> None:
    """Waits in a worker thread, in short turns so a closed stream can be cancelled."""
    while not await asyncio.to_thread(gate.wait, GATE_POLL):
        continue


def response_stream(sim: Simulator, run: ResponseRun, after: int | None) -> StreamingResponse:
    """Streams a response's events after sequence number ``after`` (all when None), following
    its schedule until it ends."""
    sim.counters["streams"] += 1
    return StreamingResponse(
        _response_events(sim, run, 0 if after is None else after + 1),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


async def _response_events(sim: Simulator, run: ResponseRun, position: int) -> AsyncIterator[bytes]:
    gate = sim.config.stream_gate
    first = True
    while True:
        run.advance(sim.now())
        while position < len(run.events):
            event = run.events[position]
            position += 1
            yield encode(str(event["type"]), event)
            if first and gate is not None:
                await _wait_for(gate)
            first = False
        if run.finished:
            return
        due = run.timeline.next_due()
        wait = MAX_IDLE_WAIT if due is None else due - sim.now()
        await asyncio.sleep(min(max(wait, 0.0), MAX_IDLE_WAIT))


def chat_stream(sim: Simulator, chunks: list[dict[str, Any]]) -> StreamingResponse:
    """Streams chat.completion.chunk objects as data-only events, then ``[DONE]``."""
    sim.counters["streams"] += 1
    return StreamingResponse(
        _chat_events(sim, chunks),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache"},
    )


async def _chat_events(sim: Simulator, chunks: list[dict[str, Any]]) -> AsyncIterator[bytes]:
    gate = sim.config.stream_gate
    for number, chunk in enumerate(chunks):
        yield b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"
        if number == 0 and gate is not None:
            await _wait_for(gate)
    yield b"data: [DONE]\n\n"

"""Upstreams for the cleaner's tests: the simulator behind a fault-injecting ASGI app, a clock.

``Faults`` passes requests to the simulator app unless a planned fault applies to
it (once): a 500 before or after the simulator carried the request out, a 404 after
it did, or no answer at all (a timeout for the client) before or after. It counts
the DELETEs the simulator carried out per object id, so a test can tell that every
object was deleted exactly once however often it was asked. ``hold_delete`` makes
the n-th DELETE wait, after it was carried out, until ``release`` (a process killed
or a task cancelled mid-request).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import openai
from sqlalchemy import Engine

from tests.servers import ServerThread, serve
from tollhouse.api.classify import Kind
from tollhouse.ledger import store as ledger
from tollhouse.ledger.store import Batch, Owned
from tollhouse.metering.meter import ObjectSeen
from tollhouse_simulator import Simulator, SimulatorConfig, create_app
from tollhouse_simulator.store import new_id
from tollhouse_simulator.threads import thread_object

Send = Callable[[dict[str, Any]], Awaitable[None]]
FAULTS = ("500", "500_after", "404_after", "timeout", "timeout_after")


class Clock:
    """A clock that moves only when told to, or when something sleeps on it."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.during_sleep: Callable[[float, float], Awaitable[None]] | None = None

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """Sleeping moves the clock; ``during_sleep(now, until)`` sees the time go by."""
        until = self.now + seconds
        if self.during_sleep is not None:
            await self.during_sleep(self.now, until)
        self.now = max(self.now, until)


class Faults:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.plan: dict[tuple[str, str], str] = {}  # (method, object id) -> a FAULTS entry
        self.applied: Counter[str] = Counter()  # object id -> DELETEs carried out
        self.hold_delete: int | None = None
        self.held = threading.Event()
        self._released = threading.Event()
        self._deletes = 0

    def fail(self, method: str, object_id: str, fault: str) -> None:
        assert fault in FAULTS
        self.plan[(method, object_id)] = fault

    def release(self) -> None:
        self._released.set()

    async def _hold(self) -> None:
        await asyncio.to_thread(self._released.wait)

    async def _inner(self, scope: Any, receive: Any, send: Send | None) -> int:
        status = 0

        async def capture(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            if send is not None:
                await send(message)

        await self.app(scope, receive, capture)
        if scope["method"] == "DELETE" and 200 <= status < 300:
            self.applied[scope["path"].rstrip("/").rsplit("/", 1)[-1]] += 1
        return status

    async def __call__(self, scope: Any, receive: Any, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        method, object_id = scope["method"], scope["path"].rstrip("/").rsplit("/", 1)[-1]
        fault = self.plan.pop((method, object_id), None)
        if method == "DELETE":
            self._deletes += 1
        if fault in ("500", "timeout"):
            if fault == "timeout":
                await self._hold()
            await _error(send, 500 if fault == "500" else 504)
        elif fault is not None:
            await self._inner(scope, receive, None)
            if fault == "timeout_after":
                await self._hold()
            await _error(send, 404 if fault == "404_after" else 500)
        elif method == "DELETE" and self._deletes == self.hold_delete:
            await self._inner(scope, receive, None)
            self.held.set()
            await self._hold()
            await _error(send, 504)
        else:
            await self._inner(scope, receive, send)


async def _error(send: Send, status: int) -> None:
    body = json.dumps(
        {"error": {"message": f"injected {status}", "type": "server_error", "param": None,
                   "code": None}}
    ).encode()  # fmt: skip
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def own(engine: Engine, tenant: str, objects: Iterable[tuple[str, Kind, int]]) -> None:
    """Record ``(id, kind, created_at)`` objects as the tenant's, as the proxy does."""
    owned = [
        Owned(tenant, ObjectSeen(object_id, kind, None, created_at, False, None, None))
        for object_id, kind, created_at in objects
    ]
    ledger.apply(engine, Batch(owned=owned), max(o.object.created_at for o in owned))


def seeded_threads(sim: Simulator, engine: Engine, tenant: str, count: int) -> list[str]:
    """Many threads at once: put in the simulator's world as its create endpoint does."""
    created_at = int(sim.now())
    made = [thread_object(new_id("thread_"), created_at, None, None) for _ in range(count)]
    for thread in made:
        sim.add_thread(thread)
    own(engine, tenant, [(t["id"], Kind.THREAD, created_at) for t in made])
    return [t["id"] for t in made]


def threads(client: openai.OpenAI, engine: Engine, tenant: str, count: int) -> list[str]:
    """Threads created upstream, owned by ``tenant`` in the ledger."""
    created = [client.beta.threads.create() for _ in range(count)]
    own(engine, tenant, [(t.id, Kind.THREAD, t.created_at) for t in created])
    return [t.id for t in created]


@contextmanager
def faulty_simulator(config: SimulatorConfig) -> Iterator[tuple[ServerThread, Faults, Simulator]]:
    """The simulator behind ``Faults`` on a loopback port: the server, the faults, its state."""
    app = create_app(config)
    faults = Faults(app)
    with serve(faults) as server:
        try:
            yield server, faults, app.state.simulator
        finally:
            faults.release()

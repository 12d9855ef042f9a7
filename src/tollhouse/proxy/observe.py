"""Observing one response: its created objects to ownership, its usage to the ledger.

The proxy calls these hooks while it relays; nothing here changes or holds back
the bytes the client receives. Only a create waits, for its owner to be written.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from opentelemetry.trace import Span

from tollhouse.api.classify import Kind, Operation
from tollhouse.ledger.writer import LedgerWriter
from tollhouse.metering.meter import (
    MAX_JSON_BODY,
    ObjectSeen,
    RunSeen,
    Seen,
    StreamMeter,
    observe_json_all,
    wants_body,
)
from tollhouse.metering.responses import ResponseSeen
from tollhouse.proxy.codings import Undecodable, decode
from tollhouse.proxy.ownership import Ownership
from tollhouse.proxy.sightings import SIGHTING_EVENTS, SIGHTING_OPERATIONS, sightings
from tollhouse.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


def observes(operation: Operation, status: int) -> bool:
    return 200 <= status < 300 and (wants_body(operation) or operation.name in SIGHTING_OPERATIONS)


class Observer:
    """Observations of one response, for one tenant."""

    def __init__(
        self,
        ownership: Ownership,
        writer: LedgerWriter,
        tenant: str,
        operation: Operation,
        span: Span | None = None,
    ) -> None:
        self._ownership = ownership
        self._writer = writer
        self._tenant = tenant
        self._operation = operation
        self._span = span
        self._rest: list[Seen] = []
        self._stream: StreamMeter | None = None
        self._owner_writes: list[asyncio.Task[None]] = []
        self._created: set[str] = set()  # a chat stream names its completion in every chunk
        # The runs and responses the answer showed, in order, once each (for the ledger's
        # record of how runs are followed and what a flow made).
        self.runs: dict[str, None] = {}
        self.responses: dict[str, None] = {}
        self.threads: dict[str, None] = {}  # threads the answer created
        # Set by the proxy when the answer is under a parent the tenant owns (or is a
        # create of its own): objects it holds and the request did not name become its.
        self.sighting = False
        self.named: frozenset[str] = frozenset()
        # How the answer is sent: a JSON body relayed in chunks is gathered (bounded)
        # and read at its end; a compressed one is decoded first.
        self._events = True
        self._coding = b""
        self._gathered: list[bytes] | None = None
        self._gathered_size = 0
        # Told what each body or batch of events reports (the token step settles with it).
        self._watchers: list[Callable[[list[Seen]], None]] = []

    def watch(self, watcher: Callable[[list[Seen]], None]) -> None:
        """Call ``watcher`` with the observations of each body and each batch of events."""
        self._watchers.append(watcher)

    def form(self, content_type: str, coding: bytes) -> None:
        """The answer's media type and content coding, before its body is observed."""
        self._events = content_type == "text/event-stream"
        self._coding = coding

    def _split(self, observations: list[Seen]) -> list[ObjectSeen]:
        if observations:
            for watcher in self._watchers:
                watcher(observations)
        created = []
        for observation in observations:
            if isinstance(observation, ObjectSeen) and self._operation.creates is not None:
                if observation.id not in self._created:
                    self._created.add(observation.id)
                    created.append(observation)
                if observation.kind == Kind.THREAD:
                    self.threads[observation.id] = None
            else:
                self._rest.append(observation)
            if isinstance(observation, RunSeen):
                Tracing.run(self._span, observation)
                self.runs[observation.id] = None
            elif isinstance(observation, ResponseSeen):
                self.responses[observation.id] = None
        return created

    def _sight(self, document: object) -> None:
        created = self._operation.creates is not None

        def owned(thread_id: str) -> bool:
            return self._ownership.known_owner(thread_id) == self._tenant

        seen = [s for s in sightings(document, owned, created) if s.id not in self.named]
        if seen:
            self._ownership.sighted(self._tenant, seen)

    async def whole_body(self, content: bytes, status: int) -> None:
        """Before a complete JSON body is sent: the owners of what it created are written."""
        try:
            content = decode(content, self._coding)
        except Undecodable as exc:
            log.warning("cannot read a %s answer to observe it: %s", self._operation.name, exc)
            return
        created = self._split(observe_json_all(self._operation, status, content))
        if created:
            await self._ownership.record(self._tenant, created)
        if self.sighting and self._operation.name in SIGHTING_OPERATIONS:
            with contextlib.suppress(ValueError, RecursionError):  # not JSON: it names nothing
                self._sight(json.loads(content))

    def chunk(self, chunk: bytes) -> None:
        """A streamed chunk: owners are enforced at once; their write is awaited in ``end``."""
        if not self._events or self._coding:
            self._gather(chunk)
            return
        if self._stream is None:
            self._stream = StreamMeter()
        events = self._stream.feed_events(chunk)
        created = self._split([seen for event in events for seen in self._stream.observe(event)])
        if created:
            self._ownership.claim(self._tenant, created)
            self._owner_writes.append(
                asyncio.ensure_future(self._ownership.record(self._tenant, created))
            )
        if self.sighting:  # after the claims: a new thread's messages are the tenant's
            for event in events:
                if event.event in SIGHTING_EVENTS:
                    with contextlib.suppress(ValueError, RecursionError):  # malformed: nothing
                        self._sight(json.loads(event.data))

    def _gather(self, chunk: bytes) -> None:
        if self._gathered is None:
            self._gathered = []
        self._gathered_size += len(chunk)
        if self._gathered_size <= MAX_JSON_BODY:
            self._gathered.append(chunk)

    async def end(self, status: int = 200) -> None:
        """Before the last bytes of a stream go out: every owner is written."""
        if self._gathered is not None:
            if self._gathered_size > MAX_JSON_BODY:
                log.warning("a %s answer too large to observe", self._operation.name)
            else:
                await self.whole_body(b"".join(self._gathered), status)
            self._gathered = None
        if self._owner_writes:
            await asyncio.gather(*self._owner_writes)

    def hand_over(self) -> None:
        """After the response went out: usage goes to the ledger writer (no waiting).

        A stream, ended or cut short, gives up what it still held (tool items whose
        response it never named, a chat completion streamed without usage)."""
        if self._stream is not None:
            self._split(self._stream.close())
        if self._rest:
            self._writer.add(self._tenant, self._rest)
            self._rest = []

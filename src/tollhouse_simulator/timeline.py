"""A schedule of timestamped actions applied on demand, and the listeners of their events."""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Event = tuple[str, dict[str, Any]]


@dataclass(order=True)
class Action:
    at: float
    seq: int
    apply: Callable[[float], None] = field(compare=False)


class Timeline:
    """Actions run in (time, planning order) when ``advance`` reaches them, never on their own.

    Each action gets its planned time, so what it stamps does not depend on when it is read.
    Events are snapshotted only while someone listens (a stream).
    """

    def __init__(self) -> None:
        self._actions: list[Action] = []
        self._seq = itertools.count()
        self._listeners: list[list[Event]] = []

    def at(self, when: float, apply: Callable[[float], None]) -> None:
        bisect.insort(self._actions, Action(when, next(self._seq), apply))

    def clear(self) -> None:
        self._actions.clear()

    def next_due(self) -> float | None:
        return self._actions[0].at if self._actions else None

    def advance(self, now: float) -> None:
        while self._actions and self._actions[0].at <= now:
            action = self._actions.pop(0)
            action.apply(action.at)

    def subscribe(self) -> list[Event]:
        """A list that receives every event from now on, until unsubscribed."""
        events: list[Event] = []
        self._listeners.append(events)
        return events

    def unsubscribe(self, events: list[Event]) -> None:
        self._listeners = [listener for listener in self._listeners if listener is not events]

    def emit(self, name: str, data: Callable[[], dict[str, Any]]) -> None:
        if self._listeners:
            snapshot = data()
            for events in self._listeners:
                events.append((name, snapshot))

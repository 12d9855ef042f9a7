"""Spend budgets in process memory: one replica's own count of every tenant's spend."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tollhouse.quota.backends import Parked, PeriodKey


@dataclass
class _Counter:
    committed: int = 0
    in_flight: int = 0
    holds: dict[str, tuple[int, float]] = field(default_factory=dict)  # hold -> amount, until
    expires_at: int = 0

    def purge(self, now: float) -> None:
        """Holds past their time stop counting: whoever held them is gone."""
        for hold, (amount, until) in list(self.holds.items()):
            if until <= now:
                del self.holds[hold]
                self.in_flight -= amount

    @property
    def spent(self) -> int:
        return self.committed + self.in_flight


class MemorySpend:
    """Counters in dicts; every method is one synchronous step on the event loop.

    ``clock`` is wall-clock time (Unix seconds): it ends holds that outlive their
    time-to-live and forgets periods past their expiry.
    """

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._counters: dict[str, _Counter] = {}
        self._metered: dict[str, float] = {}  # object id -> until when it is remembered
        self._parked: dict[str, tuple[Parked, float]] = {}

    def _counter(self, key: str, expires_at: int, now: float) -> _Counter:
        counter = self._counters.get(key)
        if counter is None:
            self._forget(now)
            counter = self._counters[key] = _Counter()
        counter.expires_at = max(counter.expires_at, expires_at)
        counter.purge(now)
        return counter

    def _forget(self, now: float) -> None:
        """Drop periods and object marks past their time (when a new period starts)."""
        for key in [k for k, c in self._counters.items() if c.expires_at <= now]:
            del self._counters[key]
        for object_id in [o for o, until in self._metered.items() if until <= now]:
            del self._metered[object_id]
        for object_id in [o for o, (_, until) in self._parked.items() if until <= now]:
            del self._parked[object_id]

    async def reserve(
        self, hold: str, periods: list[PeriodKey], amount: int, ttl: float
    ) -> tuple[int | None, list[int]]:
        now = self._clock()
        counters = [self._counter(key, expires, now) for key, _, expires in periods]
        refused = next(
            (
                index
                for index, (counter, (_, limit, _)) in enumerate(
                    zip(counters, periods, strict=True)
                )
                if counter.spent + amount > limit
            ),
            None,
        )
        if refused is None:
            for counter in counters:
                counter.holds[hold] = (amount, now + ttl)
                counter.in_flight += amount
        return refused, [counter.spent for counter in counters]

    async def release(self, hold: str, keys: list[str]) -> None:
        for key in keys:
            counter = self._counters.get(key)
            if counter is not None and (held := counter.holds.pop(hold, None)) is not None:
                counter.in_flight -= held[0]

    async def park(self, hold: str, keys: list[str], object_id: str, ttl: float) -> bool:
        if object_id in self._metered:
            return False
        self._parked[object_id] = ((hold, keys), self._clock() + ttl)
        return True

    async def commit(
        self, object_id: str, periods: list[PeriodKey], amount: int, ttl: float
    ) -> tuple[bool, Parked | None]:
        now = self._clock()
        if self._metered.get(object_id, 0.0) > now:
            return False, None
        self._metered[object_id] = now + ttl
        for key, _, expires in periods:
            self._counter(key, expires, now).committed += amount
        parked = self._parked.pop(object_id, None)
        return True, parked[0] if parked is not None else None

    async def seed(self, periods: list[PeriodKey], amounts: list[int]) -> None:
        now = self._clock()
        for (key, _, expires), amount in zip(periods, amounts, strict=True):
            counter = self._counter(key, expires, now)
            counter.committed = max(counter.committed, amount)

    async def spent(self, periods: list[PeriodKey]) -> list[int]:
        now = self._clock()
        return [self._counter(key, expires, now).spent for key, _, expires in periods]

    async def close(self) -> None:
        return None

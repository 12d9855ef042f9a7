"""Connections that come back before their ``retry-after`` are held until it has passed.

A client that honours ``retry-after`` (the official clients do) is never held. One that
hammers a refused limit on a keep-alive connection has its next request wait, before
admission, until it should have asked again (at most ``max_hold`` seconds), so a runaway
client costs one admission per wait and connection instead of thousands a second, and the
other tenants keep the CPU. At most ``max_held`` requests are held at once; past that they
are admitted (and refused) at once, so holding never ties up the connection cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable

PRUNE_AT = 10_000  # remembered connections before the expired ones are dropped


class Tarpit:
    def __init__(
        self,
        max_hold: float,
        max_held: int = 1_000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        self._max_hold = max_hold
        self._max_held = max_held
        self._clock = clock
        self._sleep = sleep
        self._not_before: dict[Hashable, float] = {}
        self.held = 0

    def early(self, key: Hashable) -> float:
        """Seconds this request came too soon after a refusal on its connection, capped."""
        if not self._not_before or self.held >= self._max_held:
            return 0.0
        not_before = self._not_before.get(key)
        if not_before is None:
            return 0.0
        return min(max(0.0, not_before - self._clock()), self._max_hold)

    async def hold(self, seconds: float) -> None:
        self.held += 1
        try:
            await self._sleep(seconds)
        finally:
            self.held -= 1

    def refused(self, key: Hashable, wait: float) -> None:
        """The request on ``key`` was refused; it should not ask again for ``wait`` seconds."""
        if self._max_hold <= 0:
            return
        now = self._clock()
        if len(self._not_before) >= PRUNE_AT:
            self._not_before = {k: t for k, t in self._not_before.items() if t > now}
        self._not_before[key] = now + wait

    def admitted(self, key: Hashable) -> None:
        if self._not_before:
            self._not_before.pop(key, None)

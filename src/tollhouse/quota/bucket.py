"""Token-bucket arithmetic: pure functions of a bucket's state, its limit and ``now``.

A bucket holds up to ``capacity`` tokens and gains ``rate`` tokens per second,
continuously. Taking a token may be allowed to dig the bucket below zero by up
to ``max_wait * rate`` tokens: the caller then waits until its token has been
earned. Reservations queue up in the order they were made, which makes shaped
waiting first come, first served without any queue in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Limit:
    """A bucket's shape: refill rate (tokens per second) and capacity (the burst)."""

    rate: float
    capacity: float

    @property
    def seconds_to_full(self) -> float:
        return self.capacity / self.rate


@dataclass(frozen=True, slots=True)
class Level:
    """A bucket's tokens as of ``at`` (seconds on the clock that drives it)."""

    tokens: float
    at: float


@dataclass(frozen=True, slots=True)
class Take:
    """The answer for one token: allowed or not, how long to wait, the new level."""

    allowed: bool
    wait: float  # seconds the caller must wait before proceeding (allowed) or retrying
    level: Level


def full(limit: Limit, now: float) -> Level:
    return Level(limit.capacity, now)


def refill(level: Level, limit: Limit, now: float) -> Level:
    """The level at ``now``. A clock that went backwards adds nothing and is not trusted."""
    elapsed = now - level.at
    if elapsed <= 0:
        return Level(min(level.tokens, limit.capacity), level.at)
    return Level(min(limit.capacity, level.tokens + elapsed * limit.rate), now)


def take(level: Level, limit: Limit, now: float, max_wait: float = 0.0) -> Take:
    """Take one token, waiting at most ``max_wait`` seconds for it."""
    current = refill(level, limit, now)
    after = current.tokens - 1.0
    wait = -after / limit.rate if after < 0 else 0.0
    if wait <= max_wait + 1e-9:
        return Take(True, wait, Level(after, current.at))
    # Refused: the time until one whole token is there again.
    return Take(False, (1.0 - current.tokens) / limit.rate, current)


def give_back(level: Level, limit: Limit) -> Level:
    """Return a token taken for a request that was refused elsewhere."""
    return Level(min(limit.capacity, level.tokens + 1.0), level.at)


def remaining(level: Level) -> int:
    return max(0, math.floor(level.tokens))


def reset_seconds(level: Level, limit: Limit) -> float:
    """Seconds until the bucket is full again."""
    return max(0.0, (limit.capacity - level.tokens) / limit.rate)


@dataclass(frozen=True, slots=True)
class PairTake:
    """One admission against a tenant bucket and the organisation bucket together."""

    allowed: bool
    wait: float
    tenant_refused: bool
    org_refused: bool
    tenant: Level | None
    org: Level | None


def _current(level: Level | None, limit: Limit | None, now: float) -> Level | None:
    if limit is None:
        return None
    return refill(level, limit, now) if level is not None else full(limit, now)


def take_pair(
    tenant: Level | None,
    tenant_limit: Limit | None,
    org: Level | None,
    org_limit: Limit | None,
    now: float,
    max_wait: float = 0.0,
    enforce_tenant: bool = True,
    enforce_org: bool = True,
) -> PairTake:
    """Take a token from both buckets, or from neither.

    A missing limit means no bucket. A refusal that is not enforced (shadow mode)
    is reported but does not block the other bucket; a refused bucket is never
    drawn down, so shadow refusals count exactly what enforcement would refuse.
    """
    t_now, o_now = _current(tenant, tenant_limit, now), _current(org, org_limit, now)
    t = take(t_now, tenant_limit, now, max_wait) if t_now and tenant_limit else None
    o = take(o_now, org_limit, now, max_wait) if o_now and org_limit else None
    t_refused = t is not None and not t.allowed
    o_refused = o is not None and not o.allowed
    if (t_refused and enforce_tenant) or (o_refused and enforce_org):
        wait = max(r.wait for r in (t, o) if r is not None and not r.allowed)
        return PairTake(False, wait, t_refused, o_refused, t_now, o_now)
    wait = max((r.wait for r in (t, o) if r is not None and r.allowed), default=0.0)
    levels = (t.level if t else None, o.level if o else None)
    return PairTake(True, wait, t_refused, o_refused, *levels)

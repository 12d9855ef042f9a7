"""Token-bucket arithmetic: pure functions of a bucket's state, its limit and ``now``.

A bucket holds up to ``capacity`` tokens and gains ``rate`` tokens per second,
continuously. Taking a token may be allowed to dig the bucket below zero by up
to ``max_wait * rate`` tokens: the caller then waits until its token has been
earned. Reservations queue up in the order they were made, which makes shaped
waiting first come, first served without any queue in memory.

A refused caller is told when to come back. Callers refused in the same moment
are spread out over the refill instead of all being told the time of the next
token: the bucket remembers the last retry time it handed out (a virtual queue,
like the theoretical arrival time of a GCRA), and the next refused caller is
given the time one token later, so the k-th caller comes back when k tokens have
been earned. The queue holds no request, no connection and no token: a retry time
is advice, not a reservation, and a token still goes to whoever asks once it is
there, so admitted requests never wait for callers that may not come back. The
queue drains by itself as its times pass, and no time handed out lies more than
``spread`` seconds ahead (unless a single token takes longer to earn).
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


NO_QUEUE = -math.inf
# A token due this close (seconds) counts as there. Seconds since the epoch carry a
# rounding error of a few tenths of a microsecond, so a caller back exactly when told
# could otherwise find its token a hair short and be sent to the back of the queue.
EARLY = 1e-5


@dataclass(frozen=True, slots=True)
class Level:
    """A bucket's tokens as of ``at`` (seconds on the clock that drives it).

    ``queue`` is the last retry time handed out to a refused caller, on the same
    clock; once it has passed (or ``NO_QUEUE``), nobody is queued.
    """

    tokens: float
    at: float
    queue: float = NO_QUEUE


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
        return Level(min(level.tokens, limit.capacity), level.at, level.queue)
    return Level(min(limit.capacity, level.tokens + elapsed * limit.rate), now, level.queue)


def retry_wait(level: Level, limit: Limit, now: float, spread: float = 0.0) -> float:
    """Seconds until a caller refused at ``now`` (``level`` as of ``now``) should retry.

    Without ``spread``: the time until one whole token is there. With it: one token
    after the last retry time handed out, if that is later, but at most ``spread``
    seconds ahead.
    """
    soonest = (1.0 - level.tokens) / limit.rate
    if spread <= 0:
        return soonest
    behind = min(level.queue + 1.0 / limit.rate - now, spread)
    return max(soonest, behind)


def take(
    level: Level, limit: Limit, now: float, max_wait: float = 0.0, spread: float = 0.0
) -> Take:
    """Take one token, waiting at most ``max_wait`` seconds for it.

    A refused caller is queued (``spread`` > 0) or told the time of the next token.
    """
    current = refill(level, limit, now)
    after = current.tokens - 1.0
    wait = -after / limit.rate if after < 0 else 0.0
    if wait <= max_wait + EARLY:
        return Take(True, wait, Level(after, current.at, current.queue))
    wait = retry_wait(current, limit, now, spread)
    queue = now + wait if spread > 0 else current.queue
    return Take(False, wait, Level(current.tokens, current.at, queue))


def give_back(level: Level, limit: Limit) -> Level:
    """Return a token taken for a request that was refused elsewhere."""
    return Level(min(limit.capacity, level.tokens + 1.0), level.at, level.queue)


def remaining(level: Level) -> int:
    return max(0, math.floor(level.tokens))


def reset_seconds(level: Level, limit: Limit) -> float:
    """Seconds until the bucket is full again, once the callers queued have had their tokens.

    The last caller queued takes its token as soon as it is earned, so the bucket
    is empty then and needs a whole capacity's refill after that.
    """
    refilled = max(0.0, (limit.capacity - level.tokens) / limit.rate)
    if level.queue <= level.at:
        return refilled
    return max(refilled, level.queue - level.at + limit.seconds_to_full)


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
    spread: float = 0.0,
) -> PairTake:
    """Take a token from both buckets, or from neither.

    A missing limit means no bucket. A refusal that is not enforced (shadow mode)
    is reported but does not block the other bucket; a refused bucket is never
    drawn down, so shadow refusals count exactly what enforcement would refuse.
    Only the buckets that block a caller queue it (``spread``), and its retry time
    is the later of theirs.
    """
    t_now, o_now = _current(tenant, tenant_limit, now), _current(org, org_limit, now)
    t = take(t_now, tenant_limit, now, max_wait, spread) if t_now and tenant_limit else None
    o = take(o_now, org_limit, now, max_wait, spread) if o_now and org_limit else None
    t_refused = t is not None and not t.allowed
    o_refused = o is not None and not o.allowed
    t_blocks, o_blocks = t_refused and enforce_tenant, o_refused and enforce_org
    if t_blocks or o_blocks:
        blocking = [r.wait for r, blocks in ((t, t_blocks), (o, o_blocks)) if r and blocks]
        levels = (_after(t, t_now, t_blocks), _after(o, o_now, o_blocks))
        return PairTake(False, max(blocking), t_refused, o_refused, *levels)
    wait = max((r.wait for r in (t, o) if r is not None and r.allowed), default=0.0)
    levels = (_after(t, t_now, not t_refused), _after(o, o_now, not o_refused))
    return PairTake(True, wait, t_refused, o_refused, *levels)


def _after(result: Take | None, current: Level | None, changed: bool) -> Level | None:
    """A bucket's level after a pair take: changed by its own take, or as it was."""
    return result.level if result is not None and changed else current

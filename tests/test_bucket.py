"""The bucket arithmetic at its edges, as one table per function; time is a parameter."""

from __future__ import annotations

import pytest

from tollhouse.quota.admission import go_duration
from tollhouse.quota.bucket import Level, Limit, refill, reset_seconds, take, take_pair

PER_MINUTE_200 = Limit(rate=200 / 60, capacity=200)  # one token every 0.3 s
SMALL = Limit(rate=1.0, capacity=3)


@pytest.mark.parametrize(
    ("level", "now", "expected"),
    [
        (Level(0, 100.0), 100.0, Level(0, 100.0)),  # no time, no tokens
        (Level(0, 100.0), 100.3, Level(1.0, 100.3)),  # 200/min gains one token per 0.3 s
        (Level(0, 100.0), 100.15, Level(0.5, 100.15)),  # fractional refill
        (Level(199.5, 100.0), 200.0, Level(200, 200.0)),  # capped at capacity
        (Level(5, 100.0), 90.0, Level(5, 100.0)),  # clock went backwards: nothing added
        (Level(-2, 100.0), 100.3, Level(-1.0, 100.3)),  # a reservation is paid back first
    ],
)
def test_refill(level: Level, now: float, expected: Level) -> None:
    got = refill(level, PER_MINUTE_200, now)
    assert got.tokens == pytest.approx(expected.tokens)
    assert got.at == expected.at


@pytest.mark.parametrize(
    ("level", "now", "max_wait", "allowed", "wait", "tokens_after"),
    [
        (Level(3, 0.0), 0.0, 0.0, True, 0.0, 2),  # full
        (Level(1, 0.0), 0.0, 0.0, True, 0.0, 0),  # last token
        (Level(0, 0.0), 0.0, 0.0, False, 1.0, 0),  # empty: retry in one refill
        (Level(0.25, 0.0), 0.0, 0.0, False, 0.75, 0.25),  # fractional: wait for the rest
        (Level(0, 0.0), 0.5, 0.0, False, 0.5, 0.5),  # half refilled by now
        (Level(0, 0.0), 0.0, 1.0, True, 1.0, -1),  # shaped: reserve and wait one refill
        (Level(-1, 0.0), 0.0, 1.0, False, 2.0, -1),  # shaped queue full up to max_wait
        (Level(-1, 0.0), 0.0, 2.0, True, 2.0, -2),  # second in line waits twice as long
        (Level(2, 10.0), 5.0, 0.0, True, 0.0, 1),  # clock backwards: level as it was
    ],
)
def test_take(
    level: Level, now: float, max_wait: float, allowed: bool, wait: float, tokens_after: float
) -> None:
    result = take(level, SMALL, now, max_wait)
    assert result.allowed is allowed
    assert result.wait == pytest.approx(wait)
    assert result.level.tokens == pytest.approx(tokens_after)


def test_a_full_bucket_admits_exactly_its_capacity_then_one_per_refill() -> None:
    level, admitted = Level(200, 0.0), 0
    for _ in range(250):
        result = take(level, PER_MINUTE_200, 0.0)
        level = result.level
        admitted += result.allowed
    assert admitted == 200
    assert take(level, PER_MINUTE_200, 0.29).allowed is False
    assert take(level, PER_MINUTE_200, 0.3).allowed is True


@pytest.mark.parametrize(
    ("tenant", "org", "enforce_tenant", "allowed", "t_refused", "o_refused", "t_after", "o_after"),
    [
        (Level(3, 0), Level(3, 0), True, True, False, False, 2, 2),
        # the tenant is empty: neither bucket is drawn down
        (Level(0, 0), Level(3, 0), True, False, True, False, 0, 3),
        # the organisation is empty: the tenant's token is not spent either
        (Level(3, 0), Level(0, 0), True, False, False, True, 3, 0),
        # shadow mode: the tenant's refusal is reported, the request goes through
        (Level(0, 0), Level(3, 0), False, True, True, False, 0, 2),
    ],
)
def test_take_pair_takes_from_both_or_neither(
    tenant: Level,
    org: Level,
    enforce_tenant: bool,
    allowed: bool,
    t_refused: bool,
    o_refused: bool,
    t_after: float,
    o_after: float,
) -> None:
    result = take_pair(tenant, SMALL, org, SMALL, 0.0, enforce_tenant=enforce_tenant)
    assert (result.allowed, result.tenant_refused, result.org_refused) == (
        allowed,
        t_refused,
        o_refused,
    )
    assert result.tenant is not None
    assert result.org is not None
    assert (result.tenant.tokens, result.org.tokens) == (t_after, o_after)


def test_take_pair_without_limits_allows_everything() -> None:
    result = take_pair(None, None, None, None, 0.0)
    assert result.allowed
    assert result.wait == 0
    assert result.tenant is None
    assert result.org is None


def test_refusal_waits_for_the_slower_bucket() -> None:
    slow = Limit(rate=0.1, capacity=1)
    result = take_pair(Level(0, 0), SMALL, Level(0, 0), slow, 0.0)
    assert not result.allowed
    assert result.wait == pytest.approx(10.0)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0121, "13ms"),
        (0.3, "300ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.9999, "1m0s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (3725.5, "1h2m5.5s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


# -- refused callers queue up virtually: each is told a retry time of its own ------------

INF = float("inf")
ONE_PER_SECOND = Limit(rate=1.0, capacity=3)


@pytest.mark.parametrize(
    ("level", "now", "spread", "max_wait", "wait", "queue_after"),
    [
        (Level(0, 0.0), 0.0, 60.0, 0.0, 1.0, 1.0),  # nobody queued: the next token
        (Level(0.25, 0.0), 0.0, 60.0, 0.0, 0.75, 0.75),  # ... or what is left of it
        (Level(0, 0.0, 1.0), 0.0, 60.0, 0.0, 2.0, 2.0),  # second in line: two tokens
        (Level(0.25, 0.0, 0.75), 0.0, 60.0, 0.0, 1.75, 1.75),  # one token after the last
        (Level(0, 10.0, 9.0), 10.0, 60.0, 0.0, 1.0, 11.0),  # the queue has drained
        (Level(0, 10.0, 9.5), 10.0, 60.0, 0.0, 1.0, 11.0),  # ... as far as this caller goes
        (Level(0.5, 10.0, 9.8), 10.0, 60.0, 0.0, 0.8, 10.8),  # a caller just due: behind it
        (Level(0, 0.0, 59.5), 0.0, 60.0, 0.0, 60.0, 60.0),  # never beyond the spread
        (Level(0, 0.0, 60.0), 0.0, 60.0, 0.0, 60.0, 60.0),  # a full queue stays full
        (Level(0, 0.0, 5.0), 0.0, 0.0, 0.0, 1.0, 5.0),  # no spread: the next token, unqueued
        (Level(-2, 0.0), 0.0, 60.0, 1.0, 3.0, 3.0),  # shaped callers' tokens come first
        (Level(-1, 0.0, 1.0), 0.0, 60.0, 2.0, 2.0, 1.0),  # shaping admits as it did
    ],
)
def test_take_queues_refused_callers(
    level: Level, now: float, spread: float, max_wait: float, wait: float, queue_after: float
) -> None:
    result = take(level, ONE_PER_SECOND, now, max_wait, spread)
    assert result.wait == pytest.approx(wait)
    assert result.level.queue == pytest.approx(queue_after)
    if not result.allowed:  # a refusal spends nothing
        assert result.level.tokens == pytest.approx(refill(level, ONE_PER_SECOND, now).tokens)


def test_a_slow_bucket_never_promises_a_token_before_it_is_earned() -> None:
    slow = Limit(rate=1 / 100, capacity=1)  # one token every 100 s, spread 60 s
    first = take(Level(0, 0.0), slow, 0.0, spread=60.0)
    second = take(first.level, slow, 0.0, spread=60.0)
    assert (first.wait, second.wait) == (pytest.approx(100.0), pytest.approx(100.0))


def test_the_kth_caller_refused_at_once_comes_back_when_k_tokens_are_there() -> None:
    limit = Limit(rate=5.0, capacity=2)
    level, waits = Level(0.25, 7.0), []
    for _ in range(12):
        result = take(level, limit, 7.0, spread=60.0)
        level = result.level
        waits.append(result.wait)
    assert waits == pytest.approx([(k - 0.25) / 5.0 for k in range(1, 13)])
    assert level.tokens == 0.25  # nothing was taken or held for them


def test_without_spread_every_caller_refused_at_once_is_told_the_same_time() -> None:
    limit = Limit(rate=5.0, capacity=2)
    waits = {take(Level(0.25, 7.0), limit, 7.0).wait for _ in range(12)}
    assert waits == {0.15}


def test_admitted_callers_do_not_wait_for_the_queue() -> None:
    """A retry time is advice, not a reservation: the token goes to whoever asks."""
    level = Level(0, 0.0)
    for _ in range(10):  # ten callers refused and queued; none comes back
        level = take(level, ONE_PER_SECOND, 0.0, spread=60.0).level
    assert level.queue == 10.0
    outcomes = []
    for _ in range(4):  # by 5 s the bucket is full again, queue or not
        result = take(level, ONE_PER_SECOND, 5.0, spread=60.0)
        level = result.level
        outcomes.append(result.allowed)
    assert outcomes == [True, True, True, False]


def test_a_queue_of_callers_who_never_come_back_drains_with_time() -> None:
    level = Level(0, 0.0)
    for _ in range(10):
        level = take(level, ONE_PER_SECOND, 0.0, spread=60.0).level
    # while their times are still ahead, a newly refused caller queues behind them
    while (result := take(level, ONE_PER_SECOND, 5.0, spread=60.0)).allowed:
        level = result.level
    assert result.wait == pytest.approx(6.0)  # behind the one due at 10 s
    # once the times handed out have passed, the queue is gone
    level = result.level
    while (result := take(level, ONE_PER_SECOND, 30.0, spread=60.0)).allowed:
        level = result.level
    assert result.wait == pytest.approx(1.0)


def test_take_pair_queues_the_caller_only_where_it_was_refused() -> None:
    spread = 60.0
    # the tenant refuses, the organisation would have admitted: only the tenant queues
    refused = take_pair(Level(0, 0), SMALL, Level(3, 0), SMALL, 0.0, spread=spread)
    assert refused.tenant is not None
    assert refused.org is not None
    assert (refused.allowed, refused.tenant.queue, refused.org.queue) == (False, 1.0, -INF)
    assert refused.org.tokens == 3  # and nothing is spent there
    # both refuse: each queues it, the caller waits for the later of the two
    slow = Limit(rate=0.5, capacity=1)
    both = take_pair(Level(0, 0, 1.0), SMALL, Level(0, 0), slow, 0.0, spread=spread)
    assert both.tenant is not None
    assert both.org is not None
    assert (both.wait, both.tenant.queue, both.org.queue) == (2.0, 2.0, 2.0)
    # a shadow-mode refusal lets the caller through and queues nobody
    shadow = take_pair(
        Level(0, 0), SMALL, Level(3, 0), SMALL, 0.0, enforce_tenant=False, spread=spread
    )
    assert shadow.tenant is not None
    assert (shadow.allowed, shadow.tenant_refused, shadow.tenant.queue) == (True, True, -INF)


def test_a_shadow_refusal_does_not_lengthen_an_enforced_one() -> None:
    slow = Limit(rate=0.1, capacity=1)  # the shadow bucket would say 10 s
    result = take_pair(Level(0, 0), slow, Level(0, 0), SMALL, 0.0, enforce_tenant=False)
    assert not result.allowed
    assert result.wait == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("level", "seconds"),
    [
        (Level(3, 0.0), 0.0),  # full
        (Level(1, 0.0), 2.0),  # two tokens short
        (Level(0, 0.0, -INF), 3.0),  # nobody queued
        (Level(0, 0.0, 4.0), 7.0),  # the last caller queued takes its token at 4 s
        (Level(0.5, 10.0, 9.0), 2.5),  # a queue that has passed changes nothing
    ],
)
def test_reset_counts_the_callers_told_to_come_back(level: Level, seconds: float) -> None:
    assert reset_seconds(level, ONE_PER_SECOND) == pytest.approx(seconds)


def retries_until_done(limit: Limit, clients: int, spread: float, max_retries: int = 2) -> int:
    """How many of ``clients`` asking at once succeed, each retrying exactly when told.

    What the official clients do on a 429: wait ``retry-after-ms``, without jitter,
    at most ``max_retries`` times. A few milliseconds of latency between clients.
    """
    level = Level(limit.capacity, 0.0)
    pending = sorted((0.001 * n, n, max_retries) for n in range(clients))
    succeeded = 0
    while pending:
        now, client, retries = pending.pop(0)
        result = take(level, limit, now, spread=spread)
        level = result.level
        if result.allowed:
            succeeded += 1
        elif retries:
            pending.append((now + result.wait + 0.002, client, retries - 1))
            pending.sort()
    return succeeded


def test_spread_retries_let_every_client_through_where_one_time_for_all_does_not() -> None:
    limit = Limit(rate=5.0, capacity=2)  # 12 clients, 2 of burst, 5 a second
    assert retries_until_done(limit, 12, spread=60.0) == 12
    assert retries_until_done(limit, 12, spread=0.0) < 12


@pytest.mark.parametrize("start", [0.0, 1_798_991_438.0])  # small clocks and the epoch's
def test_a_caller_back_exactly_when_told_finds_its_token(start: float) -> None:
    limit = Limit(rate=149 / 60, capacity=1)
    level = take(Level(1, start), limit, start, spread=60.0).level
    for _ in range(200):  # one caller, refused and back on the dot, again and again
        refused = take(level, limit, start, spread=60.0)
        assert not refused.allowed
        start += refused.wait
        again = take(refused.level, limit, start, spread=60.0)
        assert again.allowed, start
        assert again.wait == pytest.approx(0.0, abs=1e-5)
        level = again.level

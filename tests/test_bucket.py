"""The bucket arithmetic at its edges, as one table per function; time is a parameter."""

from __future__ import annotations

import pytest

from tollhouse.quota.admission import go_duration
from tollhouse.quota.bucket import Level, Limit, refill, take, take_pair

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

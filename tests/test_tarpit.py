"""A connection that comes back before its retry-after is held until then; others never are."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import pytest

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread
from tests.upstreams import Clock
from tollhouse.config.policy import parse_policy
from tollhouse.proxy.tarpit import PRUNE_AT, Tarpit

HEADERS = {"X-Tollhouse-Tenant": "acme", "Authorization": "Bearer sk-test"}
# One GET a second for acme, no burst: every other request of a hammering client is refused.
POLICY = {
    "identify": {"mode": "header"},
    "tenants": {"acme": {"limits": {"GET": {"requests_per_unit": 1, "unit": "second"}}}},
}


def tarpit(clock: Clock, max_hold: float = 2.0, max_held: int = 10) -> Tarpit:
    return Tarpit(max_hold, max_held, clock=clock, sleep=clock.sleep)


@pytest.mark.parametrize(
    ("wait", "elapsed", "expected"),
    [
        (0.5, 0.0, 0.5),  # back at once: held for the whole wait
        (0.5, 0.2, 0.3),  # back early: held for the rest of it
        (0.5, 0.7, 0.0),  # back after it: never held
        (30.0, 0.0, 2.0),  # never longer than max_hold
    ],
)
def test_a_connection_is_held_for_what_is_left_of_its_wait(
    wait: float, elapsed: float, expected: float
) -> None:
    clock = Clock(100.0)
    pit = tarpit(clock)
    pit.refused("conn", wait)
    clock.advance(elapsed)
    assert pit.early("conn") == pytest.approx(expected)
    assert pit.early("another connection") == 0.0


async def test_an_admission_forgets_the_connection_and_the_held_are_bounded() -> None:
    clock = Clock(100.0)
    pit = tarpit(clock, max_held=1)
    pit.refused("a", 1.0)
    pit.refused("b", 1.0)
    pit.admitted("a")
    assert pit.early("a") == 0.0
    seen: list[float] = []

    async def during(now: float, until: float) -> None:
        seen.append(pit.early("b"))  # one held already: the next is not held

    clock.during_sleep = during
    await pit.hold(pit.early("b"))
    assert seen == [0.0]
    assert pit.held == 0


def test_nothing_is_remembered_when_holding_is_off_and_expired_entries_are_pruned() -> None:
    clock = Clock(100.0)
    off = tarpit(clock, max_hold=0.0)
    off.refused("a", 5.0)
    assert off.early("a") == 0.0
    pit = tarpit(clock)
    for index in range(PRUNE_AT):
        pit.refused(index, 1.0)
    clock.advance(2.0)
    pit.refused("fresh", 1.0)  # the 10,001st: the expired ones go
    assert pit.early(0) == 0.0
    assert pit.early("fresh") == pytest.approx(1.0)


@pytest.fixture
def held_proxy(simulator: ServerThread) -> Iterator[RunningProxy]:
    policy = parse_policy(POLICY, "test")
    with running_proxy(simulator.url + "/v1", policy=policy, early_retry_hold=2.0) as running:
        yield running


def hammer(url: str, times: int) -> list[int]:
    """GETs one after another on one keep-alive connection, ignoring retry-after."""
    with httpx.Client(base_url=url, headers=HEADERS) as client:
        return [client.get("/v1/files?limit=1").status_code for _ in range(times)]


def test_a_client_ignoring_retry_after_is_held_until_it_has_passed(
    held_proxy: RunningProxy,
) -> None:
    # Each refusal says "retry after ~1 s"; the next request on the connection comes at
    # once, is held until then, and by then its token has been earned.
    assert hammer(held_proxy.url, 6) == [200, 429, 200, 429, 200, 429]


def test_without_holding_the_same_client_is_refused_every_time(simulator: ServerThread) -> None:
    policy = parse_policy(POLICY, "test")
    with running_proxy(simulator.url + "/v1", policy=policy, early_retry_hold=0.0) as running:
        assert hammer(running.url, 6) == [200, 429, 429, 429, 429, 429]


def test_a_client_on_another_connection_is_refused_at_once(held_proxy: RunningProxy) -> None:
    """Holding is per connection: a fresh connection is answered straight away."""
    with httpx.Client(base_url=held_proxy.url, headers=HEADERS) as first:
        assert first.get("/v1/files?limit=1").status_code == 200
        assert first.get("/v1/files?limit=1").status_code == 429  # first is now marked
        with httpx.Client(base_url=held_proxy.url, headers=HEADERS) as second:
            refused = second.get("/v1/files?limit=1")
    assert refused.status_code == 429
    assert float(refused.headers["retry-after-ms"]) > 0  # not held: its wait is still ahead

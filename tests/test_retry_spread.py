"""Clients refused at once, retrying with the official client's defaults, all get through.

The official ``openai`` clients wait exactly the ``retry-after-ms`` they are given,
without jitter, and retry twice. Told one time for all, a crowd refused together
comes back together and mostly fails again; told a time each, one token apart,
every client finds its token on the first retry. Both halves run here, so the test
shows the difference rather than assuming it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import redis

from tests.conftest import running_proxy
from tests.servers import ServerThread
from tollhouse.config.policy import parse_policy

HEADER = "X-Tollhouse-Tenant"
CLIENTS = 12
# 2 of burst and 5 a second: the 10 refused need 2 s of refill, well inside their retries
TIGHT = {"requests_per_unit": 5, "unit": "second", "burst": 2}


@pytest.fixture(params=["memory", "redis"])
def buckets_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
        return
    url = request.getfixturevalue("redis_url")
    redis.Redis.from_url(url).flushdb()  # a clean slate on the module's shared server
    yield url


def ask_at_once(clients: list[openai.OpenAI]) -> list[str]:
    """Each client creates one response, all starting together; 'ok' or the error's code."""
    start = threading.Barrier(len(clients))

    def one(client: openai.OpenAI) -> str:
        start.wait()
        try:
            client.responses.create(model="gpt-4o", input="hello")
        except openai.RateLimitError as exc:
            return f"429:{exc.code}"
        return "ok"

    with ThreadPoolExecutor(len(clients)) as pool:
        return list(pool.map(one, clients))


@pytest.mark.parametrize("spread", [True, False], ids=["spread", "one-time-for-all"])
def test_a_crowd_refused_at_once_gets_through_on_the_default_retries(
    simulator: ServerThread, buckets_url: str, spread: bool
) -> None:
    policy = parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"acme": {"limits": {"RESPONSE_CREATE": TIGHT}}},
            "retries": {"spread": spread},
        },
        "test",
    )
    with running_proxy(simulator.url + "/v1", policy=policy, buckets_url=buckets_url) as proxy:
        clients = [
            proxy.client(default_headers={HEADER: "acme"}, max_retries=2)  # the default
            for _ in range(CLIENTS)
        ]
        results = ask_at_once(clients)
        throttled = proxy.sample(
            "tollhouse_requests_total",
            tenant="acme",
            operation="responses.create",
            outcome="throttled",
            **{"class": "RESPONSE_CREATE"},
        )
    assert throttled >= CLIENTS - 4  # most were refused at first, and retried
    if spread:
        assert results == ["ok"] * CLIENTS
    else:
        # the same refill was there, but the crowd came back at once, over and over
        assert set(results) == {"ok", "429:rate_limit_exceeded"}
        assert results.count("ok") < CLIENTS - 2

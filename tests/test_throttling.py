"""Quotas through the real openai client: throttled the way OpenAI throttles."""

from __future__ import annotations

import math
import signal
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, tollhouse_process
from tests.services import redis_server
from tollhouse.config.policy import parse_policy
from tollhouse.proxy.tenants import hash_key, new_key
from tollhouse_simulator import Simulator

HEADER = "X-Tollhouse-Tenant"


def header_policy(**extra: object) -> dict[str, object]:
    policy: dict[str, object] = {
        "identify": {"mode": "header"},
        "tenants": {
            "acme": {"limits": {"RUN_CREATE": {"requests_per_unit": 100, "burst": 100}}},
            "globex": {"limits": {"RUN_CREATE": {"requests_per_unit": 100, "burst": 100}}},
        },
    }
    policy.update(extra)
    return policy


@pytest.fixture
def tenant_proxy(simulator: ServerThread) -> Iterator[RunningProxy]:
    policy = parse_policy(header_policy(), "test")
    with running_proxy(simulator.url + "/v1", policy=policy) as running:
        yield running


def assistant_for(client: openai.OpenAI) -> str:
    return client.beta.assistants.create(model="gpt-4o").id


def create_and_run(client: openai.OpenAI, assistant_id: str) -> str:
    try:
        client.beta.threads.create_and_run(assistant_id=assistant_id)
    except openai.RateLimitError as exc:
        return f"429:{exc.code}:{exc.type}"
    return "ok"


def test_a_burst_of_250_run_creations_admits_the_bucket_capacity(
    tenant_proxy: RunningProxy,
) -> None:
    acme = tenant_proxy.client(default_headers={HEADER: "acme"})
    globex = tenant_proxy.client(default_headers={HEADER: "globex"})
    acme_assistant, globex_assistant = assistant_for(acme), assistant_for(globex)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        noisy = pool.map(lambda _: create_and_run(acme, acme_assistant), range(250))
        quiet = pool.map(lambda _: create_and_run(globex, globex_assistant), range(20))
        acme_results, globex_results = list(noisy), list(quiet)
    elapsed = time.monotonic() - started
    admitted = acme_results.count("ok")
    # 100 of burst, plus whatever 100/min refilled while the burst ran
    assert 100 <= admitted <= 100 + math.ceil(elapsed * 100 / 60) + 1
    assert set(acme_results) == {"ok", "429:rate_limit_exceeded:requests"}
    assert globex_results == ["ok"] * 20  # the other tenant is served meanwhile
    throttled = tenant_proxy.sample(
        "tollhouse_requests_total",
        tenant="acme",
        operation="threads.create_and_run",
        outcome="throttled",
        **{"class": "RUN_CREATE"},
    )
    assert throttled == 250 - admitted


def test_the_429_is_shaped_like_openais(tenant_proxy: RunningProxy) -> None:
    policy = parse_policy(
        header_policy(tenants={"acme": {"limits": {"POST": {"requests_per_unit": 2}}}}), "test"
    )
    tenant_proxy.tollhouse.apply_policy(policy)
    acme = tenant_proxy.client(default_headers={HEADER: "acme"})
    ok = acme.beta.threads.with_raw_response.create()
    assert ok.headers["x-tollhouse-ratelimit-limit-requests"] == "2"
    assert ok.headers["x-tollhouse-ratelimit-remaining-requests"] == "1"
    acme.beta.threads.create()
    with pytest.raises(openai.RateLimitError) as caught:
        acme.beta.threads.create()
    error = caught.value
    assert error.code == "rate_limit_exceeded"
    assert error.type == "requests"
    assert error.param is None
    assert "tenant 'acme'" in error.message
    assert "POST" in error.message
    assert "limit 2 per minute" in error.message
    headers = error.response.headers
    assert headers["retry-after"] == "30"  # 2/min: one token every 30 s
    assert 29_000 < int(headers["retry-after-ms"]) <= 30_000
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"].endswith("s")


def test_the_organisation_bucket_caps_the_sum_of_all_tenants(simulator: ServerThread) -> None:
    policy = parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"a": {}, "b": {}, "c": {}},
            "organization": {"POST": {"requests_per_unit": 30}},
        },
        "test",
    )
    with running_proxy(simulator.url + "/v1", policy=policy) as proxy:
        clients = [proxy.client(default_headers={HEADER: t}) for t in ("a", "b", "c")]
        refusals: list[str] = []

        def threads(client: openai.OpenAI) -> int:
            created = 0
            for _ in range(20):
                try:
                    client.beta.threads.create()
                    created += 1
                except openai.RateLimitError as exc:
                    refusals.append(exc.message)
            return created

        with ThreadPoolExecutor(3) as pool:
            total = sum(pool.map(threads, clients))
    assert 30 <= total <= 32
    assert len(refusals) == 60 - total
    assert all("the organization" in message for message in refusals)


def test_default_retries_absorb_a_burst_that_fits_the_retry_window(
    tenant_proxy: RunningProxy,
) -> None:
    policy = parse_policy(
        header_policy(tenants={"acme": {"limits": {"POST": {"requests_per_unit": 120}}}}), "test"
    )
    tenant_proxy.tollhouse.apply_policy(policy)
    acme = tenant_proxy.client(default_headers={HEADER: "acme"}, max_retries=2)
    # 125 creates against a bucket of 120 refilling 2/s: the last few are refused
    # once, wait the retry-after-ms they were given, and go through on retry.
    created = [acme.beta.threads.create().id for _ in range(125)]
    assert len(set(created)) == 125
    throttled = tenant_proxy.sample(
        "tollhouse_requests_total",
        tenant="acme",
        operation="threads.create",
        outcome="throttled",
        **{"class": "POST"},
    )
    assert throttled >= 1


def test_shadow_mode_lets_refusals_through_and_counts_them(tenant_proxy: RunningProxy) -> None:
    policy = parse_policy(
        header_policy(
            tenants={"acme": {"shadow_mode": True, "limits": {"POST": {"requests_per_unit": 3}}}}
        ),
        "test",
    )
    tenant_proxy.tollhouse.apply_policy(policy)
    acme = tenant_proxy.client(default_headers={HEADER: "acme"})
    for _ in range(6):
        acme.beta.threads.create()
    shadow = tenant_proxy.sample(
        "tollhouse_requests_total",
        tenant="acme",
        operation="threads.create",
        outcome="shadow_throttled",
        **{"class": "POST"},
    )
    assert shadow == 3


def test_an_unknown_key_gets_401_and_nothing_reaches_the_upstream(
    simulator: ServerThread,
) -> None:
    key = new_key()
    policy = parse_policy(
        {"identify": {"mode": "keys"}, "tenants": {"acme": {"keys": [hash_key(key)]}}}, "test"
    )
    state: Simulator = simulator.server.config.app.state.simulator  # type: ignore[attr-defined]
    with running_proxy(simulator.url + "/v1", policy=policy, upstream_api_key="sk-real") as proxy:
        before = len(state.requests)
        with pytest.raises(openai.AuthenticationError) as caught:
            proxy.client(api_key="th-not-a-real-key").beta.assistants.list()
        assert caught.value.code == "invalid_api_key"
        assert len(state.requests) == before
        # the issued key works, and the upstream sees the real key in its place
        proxy.client(api_key=key).beta.assistants.list()
        assert state.requests[-1].headers["authorization"] == "Bearer sk-real"
        exposition = httpx.get(proxy.admin.url + "/metrics").text
    assert key not in exposition
    assert "sk-real" not in exposition


def write_policy(path: Path, post_limit: int) -> None:
    path.write_text(
        "identify: {mode: header}\n"
        f"tenants:\n  acme:\n    limits:\n      POST: {{requests_per_unit: {post_limit}}}\n"
    )


def remaining_after_create(url: str) -> str:
    response = httpx.post(
        url + "/v1/threads",
        json={},
        headers={HEADER: "acme", "OpenAI-Beta": "assistants=v2", "Authorization": "Bearer x"},
    )
    if response.status_code == 429:
        return "429"
    return response.headers["x-tollhouse-ratelimit-remaining-requests"]


def test_sighup_reloads_the_policy_and_keeps_bucket_levels(
    simulator: ServerThread, tmp_path: Path
) -> None:
    policy_file = tmp_path / "policy.yaml"
    write_policy(policy_file, post_limit=10)
    with tollhouse_process(
        "--upstream", simulator.url + "/v1", "--policy", str(policy_file)
    ) as process:
        seen = [remaining_after_create(process.url) for _ in range(4)]
        assert seen == ["9", "8", "7", "6"]
        write_policy(policy_file, post_limit=20)
        process.signal(signal.SIGHUP)
        assert process.wait_for_log("policy reloaded")
        # the bucket keeps its 6 tokens (not refilled to the new burst of 20)
        assert remaining_after_create(process.url) == "5"
        policy_file.write_text("tenants: [broken")
        process.signal(signal.SIGHUP)
        assert process.wait_for_log("policy reload refused")
        assert remaining_after_create(process.url) == "4"


def test_three_processes_sharing_redis_admit_one_bucket(simulator: ServerThread) -> None:
    with redis_server() as redis_url:
        env = {"TOLLHOUSE_BUCKETS_URL": redis_url}
        policy = (
            "identify: {mode: header}\n"
            "tenants:\n  acme:\n    limits:\n      POST: {requests_per_unit: 30}\n"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as policy_file:
            policy_file.write(policy)
            policy_file.flush()
            args = ("--upstream", simulator.url + "/v1", "--policy", policy_file.name)
            with (
                tollhouse_process(*args, env=env) as one,
                tollhouse_process(*args, env=env) as two,
                tollhouse_process(*args, env=env) as three,
            ):
                urls = [one.url, two.url, three.url] * 20
                started = time.monotonic()
                with ThreadPoolExecutor(6) as pool:
                    results = list(pool.map(remaining_after_create, urls))
                refilled = (time.monotonic() - started) / 2  # 30 a minute: one token per 2 s
    admitted = sum(result != "429" for result in results)
    # 60 requests at one tenant across three replicas: one bucket of 30 plus what refilled
    # while they ran (three buckets would admit all 60)
    assert 30 <= admitted <= 30 + math.ceil(refilled)

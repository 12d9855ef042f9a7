"""Tokens per minute through the real client: estimates, reservations, refusals shaped like
OpenAI's, settlement with the simulator's usage (refunds, debt, streams), one organisation
budget held by three instances on one Redis, and each answer's cost in a header.

Limits are per day in most tests, so that the refill during a test is a small fraction of a
token and the headers can be compared with sums of the simulator's usage.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import redis
from click.testing import CliRunner

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve, tollhouse_process
from tollhouse.api.classify import RequestClass
from tollhouse.cli.main import main
from tollhouse.config.policy import Policy, TokenRate, load_policy, parse_policy
from tollhouse.quota.bucket import Level, Limit
from tollhouse.quota.tokens import TokenDecision, TokenView, token_limit

HEADER = "X-Tollhouse-Tenant"
# Words o200k_base splits into one token and into two: two of the first and one of the
# second make three words of four tokens, as the simulator counts them (4 per 3 words).
ONE = ("reservation", "refundable", "organisation", "replicas", "debts", "tokens", "minute")
TWO = ("tollhouse", "sidecar", "throttled", "overcharged")
# gpt-4o's price from 2024-10-02 in src/tollhouse/metering/pricing.yaml, per million tokens
GPT_4O = {"input": Decimal("2.50"), "cached_input": Decimal("1.25"), "output": Decimal("10.00")}


def text_of(size: int, seed: int = 1) -> str:
    """About ``size`` bytes of words."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < size:
        group = [rng.choice(ONE), rng.choice(ONE), rng.choice(TWO)]
        words += group
        length += sum(len(w) + 1 for w in group)
    return " ".join(words)


def policy(
    tenant_tokens: dict[str, Any] | None = None,
    org_tokens: dict[str, Any] | None = None,
    **extra: Any,
) -> Policy:
    document: dict[str, Any] = {
        "identify": {"mode": "header"},
        "tenants": {"acme": {}, "globex": {}},
        **extra,
    }
    if tenant_tokens is not None:
        document["tenants"]["acme"] = {"limits": {"tokens": tenant_tokens}}
    if org_tokens is not None:
        document["organization"] = {"tokens": org_tokens}
    return parse_policy(document, "test policy")


def per_day(tokens: int) -> dict[str, Any]:
    return {"tokens_per_unit": tokens, "unit": "day"}


@pytest.fixture(params=["memory", "redis"])
def buckets_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    with redis.Redis.from_url(url) as connection:  # each test starts with full buckets
        connection.flushdb()
    return url


@pytest.fixture
def proxies(simulator: ServerThread, buckets_url: str) -> Iterator[Any]:
    """Start a proxy under a policy, on the parametrized buckets; all stop with the test."""
    with ExitStack() as stack:

        def start(rules: Policy, url: str = buckets_url) -> RunningProxy:
            return stack.enter_context(
                running_proxy(simulator.url + "/v1", policy=rules, buckets_url=url)
            )

        yield start


def client(proxy: RunningProxy, tenant: str = "acme") -> openai.OpenAI:
    return proxy.client(default_headers={HEADER: tenant})


def seconds(duration: str) -> float:
    """``33h36m0s`` (OpenAI's reset format) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:([\d.]+)s)?", duration)
    assert parts is not None, duration
    hours, minutes, secs = (float(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + secs


def settled(proxy: RunningProxy) -> None:
    """Wait for the settlements the proxy started (they run after the answer went out)."""
    proxy.run(proxy.tollhouse.tokens.settled())


def probe(proxy: RunningProxy, limit: int) -> tuple[int, openai.RateLimitError]:
    """The tokens left for acme's gpt-4o calls, read from the refusal of a call too large
    to ever fit (it reserves nothing)."""
    with pytest.raises(openai.RateLimitError) as refused:
        client(proxy).responses.create(model="gpt-4o", input="hi", max_output_tokens=limit)
    assert refused.value.response.headers["x-should-retry"] == "false"
    return int(refused.value.response.headers["x-ratelimit-remaining-tokens"]), refused.value


# -- estimates ----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4 * 1024, 64 * 1024], ids=["4KB", "64KB"])
def test_an_inputs_estimate_is_close_to_the_upstreams_count(proxies: Any, size: int) -> None:
    limit = 100_000
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(limit)}))
    raw = client(proxy).responses.with_raw_response.create(
        model="gpt-4o", input=text_of(size), max_output_tokens=100
    )
    response = raw.parse()
    assert response.usage is not None
    estimated = limit - int(raw.headers["x-ratelimit-remaining-tokens"]) - 100
    counted = response.usage.input_tokens
    assert abs(estimated - counted) <= 0.02 * counted, (estimated, counted)
    assert proxy.sample("tollhouse_tokens_reserved_total", tenant="acme") == estimated + 100


# -- reservations and refusals ------------------------------------------------------------


def test_a_call_over_the_limit_gets_openais_429_for_tokens(proxies: Any) -> None:
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(1000)}))
    acme = client(proxy)
    # in the background: the answer carries no usage, so the reservation stands as drawn
    first = acme.responses.with_raw_response.create(
        model="gpt-4o", input="Tell me about toll roads", max_output_tokens=600, background=True
    )
    assert first.http_response.status_code == 200
    reserved = 1000 - int(first.headers["x-ratelimit-remaining-tokens"])
    assert reserved > 600
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    with pytest.raises(openai.RateLimitError) as refused:
        acme.responses.create(model="gpt-4o", input="And in Italy?", max_output_tokens=600)
    error = refused.value
    body = error.response.json()["error"]
    assert (body["type"], body["code"], body["param"]) == ("tokens", "rate_limit_exceeded", None)
    match = re.fullmatch(
        r"Rate limit reached for gpt-4o for tenant 'acme' on tokens per day \(TPD\): "
        r"Limit 1000, Used (\d+), Requested (\d+)\. Please try again in ([\dhms.]+)\.",
        body["message"],
    )
    assert match is not None, body["message"]
    used, requested = int(match[1]), int(match[2])
    assert requested > 600
    headers = error.response.headers
    remaining = int(headers["x-ratelimit-remaining-tokens"])
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert used == 1000 - remaining
    # the wait is the time to refill what is missing, at 1000 tokens a day
    wait = (requested - remaining) * 86.4
    assert int(headers["retry-after-ms"]) == pytest.approx(wait * 1000, abs=86.4 * 1000)
    assert int(headers["retry-after"]) == math.ceil(int(headers["retry-after-ms"]) / 1000)
    assert headers["x-ratelimit-reset-tokens"].endswith("s")
    assert proxy.sample("tollhouse_token_reservations_total", tenant="acme", outcome="throttled")
    # another tenant, unlimited, is not refused
    assert client(proxy, "globex").responses.create(model="gpt-4o", input="hi").status


def test_a_call_that_can_never_fit_is_told_not_to_retry(proxies: Any) -> None:
    proxy = proxies(policy(org_tokens={"default": per_day(500)}))
    with pytest.raises(openai.RateLimitError) as refused:
        client(proxy).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=800
        )
    error = refused.value
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    message = error.response.json()["error"]["message"]
    assert message.startswith(
        "Request too large for gpt-4o-mini in the organization (shared by all tenants) on "
        "tokens per day (TPD): Limit 500, Requested 8"
    )
    assert proxy.sample("tollhouse_token_reservations_total", tenant="acme", outcome="too_large")


def test_a_model_without_a_limit_is_not_reserved_for(proxies: Any) -> None:
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(10)}))
    raw = client(proxy).responses.with_raw_response.create(model="gpt-4.1", input="hi")
    assert "x-ratelimit-remaining-tokens" not in raw.headers
    assert raw.parse().status == "completed"


# -- settlement -----------------------------------------------------------------------------


def test_settlement_refunds_what_the_estimate_held_beyond_the_usage(proxies: Any) -> None:
    limit = 5000
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(limit)}))
    raw = client(proxy).responses.with_raw_response.create(
        model="gpt-4o", input="How do token buckets refill?", max_output_tokens=2000
    )
    estimate = limit - int(raw.headers["x-ratelimit-remaining-tokens"])
    usage = raw.parse().usage
    assert usage is not None
    settled(proxy)
    left, _ = probe(proxy, limit + 1)
    assert left == pytest.approx(limit - usage.total_tokens, abs=1)
    assert left > limit - estimate + 1000  # the unused output allowance came back
    refunded = estimate - usage.total_tokens
    assert proxy.sample("tollhouse_tokens_settled_difference_total", direction="refunded") == (
        refunded
    )
    assert proxy.sample("tollhouse_token_settlements_total", outcome="settled") == 1


def test_usage_beyond_the_estimate_is_charged_into_debt(proxies: Any) -> None:
    limit = 15
    rules = policy(
        tenant_tokens={"gpt-4o": per_day(limit)}, token_estimates={"default_output_tokens": 1}
    )
    proxy = proxies(rules)
    raw = client(proxy).responses.with_raw_response.create(model="gpt-4o", input="hi")
    estimate = limit - int(raw.headers["x-ratelimit-remaining-tokens"])
    usage = raw.parse().usage
    assert usage is not None
    assert usage.total_tokens > limit > estimate  # admitted on the estimate, used more
    settled(proxy)
    with pytest.raises(openai.RateLimitError) as refused:  # in debt: the debt is paid first
        client(proxy).responses.create(model="gpt-4o", input="hi")
    refusal = refused.value
    assert refusal.response.headers["x-ratelimit-remaining-tokens"] == "0"
    message = refusal.response.json()["error"]["message"]
    assert f"Limit {limit}, Used {usage.total_tokens}, Requested {estimate}." in message
    reset = refusal.response.headers["x-ratelimit-reset-tokens"]
    # the debt and the bucket's capacity are earned back first, at 15 tokens a day
    assert seconds(reset) == pytest.approx(usage.total_tokens * 86400 / limit, abs=60)
    charged = usage.total_tokens - estimate
    assert proxy.sample("tollhouse_tokens_settled_difference_total", direction="charged") == (
        charged
    )


def test_a_streamed_response_is_settled_from_response_completed(proxies: Any) -> None:
    limit = 5000
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(limit)}))
    events = list(
        client(proxy).responses.create(
            model="gpt-4o", input="Stream me a haiku", max_output_tokens=2000, stream=True
        )
    )
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    usage = completed[0].response.usage
    assert usage is not None
    settled(proxy)
    left, _ = probe(proxy, limit + 1)
    assert left == pytest.approx(limit - usage.total_tokens, abs=1)


def test_a_chat_completion_is_settled_and_a_stream_without_usage_keeps_its_reservation(
    proxies: Any,
) -> None:
    limit = 5000
    proxy = proxies(policy(tenant_tokens={"default": per_day(limit)}))
    acme = client(proxy)
    messages = [{"role": "user", "content": "What is a tollhouse?"}]
    completion = acme.chat.completions.create(model="gpt-4o", messages=messages, max_tokens=500)
    assert completion.usage is not None
    settled(proxy)
    left, _ = probe(proxy, limit + 1)
    assert left == pytest.approx(limit - completion.usage.total_tokens, abs=1)
    stream = acme.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=messages, max_tokens=500, stream=True
    )
    held = left - int(stream.headers["x-ratelimit-remaining-tokens"])
    assert held > 500
    assert list(stream.parse())  # streamed without include_usage: no usage is ever reported
    settled(proxy)
    after, _ = probe(proxy, limit + 1)
    assert after == pytest.approx(left - held, abs=1)
    assert proxy.sample("tollhouse_token_settlements_total", outcome="kept") == 1


def test_a_background_response_is_settled_when_a_poll_shows_its_usage(proxies: Any) -> None:
    limit = 5000
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(limit)}))
    acme = client(proxy)
    started = acme.responses.create(
        model="gpt-4o", input="Take your time", max_output_tokens=2000, background=True
    )
    assert started.usage is None
    settled(proxy)
    held, _ = probe(proxy, limit + 1)
    assert held < limit - 2000  # the whole estimate stays reserved while it runs
    response = started
    while response.status in ("queued", "in_progress"):
        response = acme.responses.retrieve(started.id)
    assert response.usage is not None
    settled(proxy)
    left, _ = probe(proxy, limit + 1)
    assert left == pytest.approx(limit - response.usage.total_tokens, abs=1)
    assert proxy.sample("tollhouse_token_settlements_total", outcome="settled") == 1


def test_a_chat_stream_with_usage_is_settled_from_its_usage_chunk(proxies: Any) -> None:
    limit = 5000
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(limit)}))
    chunks = list(
        client(proxy).chat.completions.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "Stream me a limerick"}],
            max_completion_tokens=2000,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    settled(proxy)
    left, _ = probe(proxy, limit + 1)
    assert left == pytest.approx(limit - usage.total_tokens, abs=1)


def test_an_upstream_error_gives_the_reservation_back(proxies: Any) -> None:
    limit = 5000
    proxy = proxies(policy(tenant_tokens={"default": per_day(limit)}))
    with pytest.raises(openai.NotFoundError):
        client(proxy).responses.create(
            model="gpt-4o", input="hi", max_output_tokens=900, previous_response_id="resp_nope"
        )
    settled(proxy)
    left, _ = probe(proxy, limit + 1)
    assert left == pytest.approx(limit, abs=1)
    assert proxy.sample("tollhouse_token_settlements_total", outcome="refunded") == 1


# -- replicas ---------------------------------------------------------------------------------


def test_three_instances_on_one_redis_hold_one_organisation_budget(
    simulator: ServerThread, redis_url: str, stack: ExitStack, tmp_path: Path
) -> None:
    with redis.Redis.from_url(redis_url) as connection:
        connection.flushdb()
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "identify: {mode: header}\n"
        "tenants: {acme: {}, globex: {}}\n"
        "organization: {tokens: {gpt-4o: {tokens_per_unit: 3000, unit: day}}}\n"
    )
    arguments = ("--upstream", simulator.url + "/v1", "--policy", str(policy_file))
    environment = {"TOLLHOUSE_BUCKETS_URL": redis_url}
    instances = [
        stack.enter_context(tollhouse_process(*arguments, env=environment)) for _ in range(3)
    ]
    outcomes: list[str] = []
    for round_ in range(2):
        for index, proxy in enumerate(instances):
            # background: the answer carries no usage yet, so each keeps what it reserved
            headers = {HEADER: ("acme", "globex")[index % 2]}
            url = proxy.url + "/v1"
            with openai.OpenAI(base_url=url, api_key="sk-test", default_headers=headers) as one:
                try:
                    one.with_options(max_retries=0).responses.create(
                        model="gpt-4o",
                        input=f"round {round_}",
                        max_output_tokens=900,
                        background=True,
                    )
                    outcomes.append("admitted")
                except openai.RateLimitError as exc:
                    outcomes.append(exc.response.json()["error"]["message"].split(" on ")[0])
    # about 910 tokens each: three fit in 3,000 once, not once per instance
    refused = "Rate limit reached for gpt-4o in the organization (shared by all tenants)"
    assert outcomes == ["admitted"] * 3 + [refused] * 3


def test_with_redis_away_tokens_are_reserved_and_settled_in_local_buckets(
    simulator: ServerThread, stack: ExitStack
) -> None:
    rules = policy(tenant_tokens={"gpt-4o": per_day(6000)})
    away = "redis://127.0.0.1:9/0"  # the discard port: nothing answers
    proxy = stack.enter_context(
        running_proxy(simulator.url + "/v1", policy=rules, buckets_url=away, replicas=3)
    )
    response = client(proxy).responses.create(model="gpt-4o", input="hi", max_output_tokens=900)
    assert response.usage is not None
    assert proxy.sample("tollhouse_buckets_fallback") == 1
    settled(proxy)
    left, refusal = probe(proxy, 6001)
    # this replica's share: a third of the limit, settled where it was drawn
    assert refusal.response.headers["x-ratelimit-limit-tokens"] == "6000"
    assert left == pytest.approx(2000 - response.usage.total_tokens, abs=1)
    assert proxy.sample("tollhouse_token_settlements_total", outcome="settled") == 1


# -- the cost of an answer --------------------------------------------------------------------


def hand_cost(prompt: int, cached: int, output: int) -> Decimal:
    per_million = (
        (prompt - cached) * GPT_4O["input"]
        + cached * GPT_4O["cached_input"]
        + output * GPT_4O["output"]
    )
    return per_million / Decimal(1_000_000)


def test_json_answers_with_final_usage_carry_their_cost(proxies: Any) -> None:
    proxy = proxies(policy())
    acme = client(proxy)
    raw = acme.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "What does a toll cost?"}]
    )
    usage = raw.parse().usage
    assert usage is not None
    cached = usage.prompt_tokens_details.cached_tokens if usage.prompt_tokens_details else 0
    expected = hand_cost(usage.prompt_tokens, cached or 0, usage.completion_tokens)
    assert Decimal(raw.headers["x-tollhouse-cost-usd"]) == expected
    first = acme.responses.create(model="gpt-4o", input="Tell me about toll roads in France")
    raw = acme.responses.with_raw_response.create(
        model="gpt-4o", input="And in Italy?", previous_response_id=first.id
    )
    usage_ = raw.parse().usage
    assert usage_ is not None
    cached = usage_.input_tokens_details.cached_tokens
    assert cached > 0  # the previous response's input is read from the cache
    expected = hand_cost(usage_.input_tokens, cached, usage_.output_tokens)
    assert Decimal(raw.headers["x-tollhouse-cost-usd"]) == expected


def test_answers_without_final_usage_carry_no_cost(proxies: Any) -> None:
    proxy = proxies(policy())
    acme = client(proxy)
    started = acme.responses.with_raw_response.create(
        model="gpt-4o", input="Take your time", background=True
    )
    assert "x-tollhouse-cost-usd" not in started.headers  # queued: no usage yet
    stream = acme.responses.with_raw_response.create(model="gpt-4o", input="hi", stream=True)
    assert "x-tollhouse-cost-usd" not in stream.headers  # headers go before the usage
    assert list(stream.parse())
    listed = acme.responses.input_items.with_raw_response.list(started.parse().id)
    assert "x-tollhouse-cost-usd" not in listed.headers


def test_a_terminal_run_retrieved_carries_its_cost(proxies: Any) -> None:
    proxy = proxies(policy())
    acme = client(proxy)
    assistant = acme.beta.assistants.create(model="gpt-4o", instructions="Be brief.")
    run = acme.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={"messages": [{"role": "user", "content": "What is a tollhouse?"}]},
        poll_interval_ms=20,
    )
    assert run.status == "completed"
    raw = acme.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=run.thread_id)
    usage = raw.parse().usage
    assert usage is not None
    # run usage has no cached split: the prompt is priced at the full input rate
    expected = hand_cost(usage.prompt_tokens, 0, usage.completion_tokens)
    assert Decimal(raw.headers["x-tollhouse-cost-usd"]) == expected


# -- the policy -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "model", "found"),
    [
        ("acme", "gpt-4o", ("gpt-4o", 100)),  # its own entry
        ("acme", "gpt-4o-2024-08-06", ("gpt-4o", 100)),  # a dated snapshot: its model's
        ("acme", "gpt-4.1", ("default", 200)),  # its own default, shared by unlisted models
        ("globex", "gpt-4o", ("gpt-4o", 300)),  # no tokens of its own: default_limits'
        ("globex", "gpt-5", None),  # nothing for that model anywhere
        ("initech", "gpt-4o", None),  # its own unlimited entry wins over default_limits
    ],
)
def test_which_token_limit_a_call_meets(
    tenant: str, model: str, found: tuple[str, int] | None
) -> None:
    rules = parse_policy(
        {
            "tenants": {
                "acme": {
                    "limits": {
                        "tokens": {
                            "gpt-4o": {"tokens_per_unit": 100},
                            "default": {"tokens_per_unit": 200},
                        }
                    }
                },
                "globex": {},
                "initech": {"limits": {"tokens": {"gpt-4o": {"unlimited": True}}}},
            },
            "default_limits": {"tokens": {"gpt-4o": {"tokens_per_unit": 300}}},
        },
        "test policy",
    )
    rule = rules.tenant_tokens(tenant, model)
    shown = None if rule is None or rule[1].unlimited else (rule[0], rule[1].tokens_per_unit)
    assert shown == found
    assert rules.organization_token_limit(model) is None  # unset: unlimited, as before


def test_check_policy_accepts_token_limits(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "organization:\n"
        "  RUN_CREATE: {requests_per_unit: 200}\n"
        "  tokens:\n"
        "    gpt-4o: {tokens_per_unit: 30000, unit: minute}\n"
        "    default: {tokens_per_unit: 10000, unit: minute, burst: 20000}\n"
        "default_limits:\n"
        "  tokens: {default: {tokens_per_unit: 5000}}\n"
        "tenants:\n"
        "  acme:\n"
        "    limits:\n"
        "      POST: {requests_per_unit: 60}\n"
        "      tokens: {gpt-4o: {tokens_per_unit: 20000}, o3: {unlimited: true}}\n"
        "token_estimates: {default_output_tokens: 2048}\n"
    )
    result = CliRunner().invoke(main, ["check-policy", str(path)])
    assert result.exit_code == 0, result.output
    rules = load_policy(path)
    assert rules.organization[RequestClass.RUN_CREATE].requests_per_unit == 200
    assert rules.tenants["acme"].limits[RequestClass.POST].requests_per_unit == 60
    assert rules.token_estimates.default_output_tokens == 2048


def test_a_tenant_in_shadow_mode_is_let_through_and_counted(proxies: Any) -> None:
    rules = parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {
                "acme": {"shadow_mode": True, "limits": {"tokens": {"gpt-4o": per_day(100)}}}
            },
        },
        "test policy",
    )
    proxy = proxies(rules)
    response = client(proxy).responses.create(model="gpt-4o", input="hi", max_output_tokens=500)
    assert response.status == "completed"
    reservations = "tollhouse_token_reservations_total"
    assert proxy.sample(reservations, tenant="acme", outcome="shadow_throttled") == 1


# -- answers of unknown length ----------------------------------------------------------------


def chunked_upstream(content: str) -> Any:
    """An upstream that answers every chat completion in pieces, without a length."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        completion = {
            "id": "chatcmpl-chunked",
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": "gpt-4o",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 200, "total_tokens": 1200},
        }
        body = json.dumps(completion).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        step = max(1, len(body) // 5)
        for start in range(0, len(body), step):
            piece = body[start : start + step]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    return app


@pytest.mark.parametrize(
    ("content", "costed"),
    [("A short answer.", True), ("x" * (1024 * 1024 + 1), False)],
    ids=["small", "past-1MiB"],
)
def test_an_answer_of_unknown_length_is_gathered_up_to_a_bound_for_its_cost(
    content: str, costed: bool, stack: ExitStack
) -> None:
    upstream = stack.enter_context(serve(chunked_upstream(content)))
    rules = policy(tenant_tokens={"gpt-4o": per_day(10_000)})
    proxy = stack.enter_context(running_proxy(upstream.url + "/v1", policy=rules))
    raw = client(proxy).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], max_tokens=100
    )
    assert raw.parse().choices[0].message.content == content  # relayed whole either way
    cost = raw.headers.get("x-tollhouse-cost-usd")
    assert cost == (str(hand_cost(1000, 0, 200)) if costed else None)
    settled(proxy)  # read at its end all the same: settled with its usage
    left, _ = probe(proxy, 10_001)
    assert left == pytest.approx(10_000 - 1200, abs=1)


def test_a_reload_that_turns_token_limits_on_applies_them(simulator: ServerThread) -> None:
    with running_proxy(simulator.url + "/v1", policy=policy()) as proxy:
        acme = client(proxy)
        raw = acme.responses.with_raw_response.create(model="gpt-4o", input="hi")
        assert "x-ratelimit-limit-tokens" not in raw.headers
        proxy.tollhouse.current.swap(policy(tenant_tokens={"gpt-4o": per_day(1000)}))
        raw = acme.responses.with_raw_response.create(
            model="gpt-4o", input="hi", max_output_tokens=16
        )
        assert raw.headers["x-ratelimit-limit-tokens"] == "1000"
        with pytest.raises(openai.RateLimitError):
            acme.responses.create(model="gpt-4o", input="hi", max_output_tokens=1000)
        proxy.run(proxy.tollhouse.tokens.prepare())  # the encoding, loaded meanwhile


# -- the decision, as a client reads it --------------------------------------------------------


def decision(**overrides: Any) -> TokenDecision:
    """A refusal by the organisation's 30,000 TPM bucket, 1,000 tokens short."""
    rule = TokenRate(tokens_per_unit=30_000)
    limit = token_limit(rule)
    assert limit is not None
    fields: dict[str, Any] = {
        "tenant": "acme",
        "model": "gpt-4o",
        "requested": 1200,
        "allowed": False,
        "shadow": False,
        "wait": 0.4,
        "refused_by": "organization",
        "tenant_view": TokenView(
            TokenRate(tokens_per_unit=10_000), Limit(10_000 / 60, 10_000), Level(9000, 0)
        ),
        "org_view": TokenView(rule, limit, Level(200, 0)),
        "reservation": None,
    }
    return TokenDecision(**{**fields, **overrides})


def test_a_refusal_reads_like_openais() -> None:
    refusal = decision().refusal()
    assert (refusal.status, refusal.type, refusal.code) == (429, "tokens", "rate_limit_exceeded")
    assert refusal.message == (
        "Rate limit reached for gpt-4o in the organization (shared by all tenants) on tokens "
        "per min (TPM): Limit 30000, Used 29800, Requested 1200. Please try again in 400ms."
    )
    assert dict(refusal.headers) == {
        b"retry-after": b"1",
        b"retry-after-ms": b"400",
        b"x-ratelimit-limit-tokens": b"30000",
        b"x-ratelimit-remaining-tokens": b"200",
        b"x-ratelimit-reset-tokens": b"59.6s",
    }


def test_an_admitted_answer_shows_the_tighter_bucket() -> None:
    admitted = decision(allowed=True, wait=0.0, refused_by=None)
    assert dict(admitted.headers())[b"x-ratelimit-remaining-tokens"] == b"200"  # the org's
    roomy = decision(allowed=True, wait=0.0, refused_by=None, org_view=None)
    assert dict(roomy.headers())[b"x-ratelimit-limit-tokens"] == b"10000"  # the tenant's
    assert decision(allowed=True, tenant_view=None, org_view=None).headers() == []


def test_an_azure_deployment_stands_for_the_model_its_body_does_not_name(proxies: Any) -> None:
    proxy = proxies(policy(tenant_tokens={"gpt-4o": per_day(100)}))
    answer = httpx.post(
        proxy.url + "/openai/deployments/gpt-4o/chat/completions?api-version=2024-05-01-preview",
        headers={HEADER: "acme", "api-key": "sk-test"},
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 500},
    )
    assert answer.status_code == 429
    assert answer.json()["error"]["message"].startswith(
        "Request too large for gpt-4o for tenant 'acme' on tokens per day (TPD): Limit 100"
    )

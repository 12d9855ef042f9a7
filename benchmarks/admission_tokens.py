"""What admission in tokens costs a model call: parse, estimate and reserve, per request body.

Runs tollhouse's token step (``TokenStep.admit``: the JSON body parsed, its tokens counted
with ``o200k_base``, the estimate reserved from the tenant's and the organisation's token
buckets) on Responses bodies whose input is about 4 KB and about 64 KB, and reports per
call the median and p90 of:

- the time the request waits for its admission (what it adds to the call's latency);
- the longest the event loop was held up meanwhile: a 4 KB body is counted on the loop,
  a larger one in a worker thread, so other requests keep being served.

Memory buckets always; Redis buckets too when ``--redis URL`` is given (a reservation is
then one round trip to it). Each admitted reservation is settled before the next call, so
the buckets never run dry. From the repository root:

    python3 benchmarks/admission_tokens.py [--rounds 300] [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from prometheus_client import CollectorRegistry

from estimate import text_of
from tollhouse.api.classify import classify
from tollhouse.config.policy import parse_policy
from tollhouse.metering.estimate import load_o200k
from tollhouse.metering.pricing import load_pricing
from tollhouse.proxy.tokens import TokenStep
from tollhouse.quota.backends import buckets_from_url
from tollhouse.quota.tokens import TokenQuota
from tollhouse.telemetry.metrics import Metrics

POLICY = {
    "identify": {"mode": "header"},
    "tenants": {"acme": {"limits": {"tokens": {"gpt-4o": {"tokens_per_unit": 10**9}}}}},
    "organization": {"tokens": {"default": {"tokens_per_unit": 10**10}}},
}


def body_of(size: int) -> bytes:
    document = {"model": "gpt-4o", "input": text_of(size), "max_output_tokens": 1024}
    return json.dumps(document).encode()


async def lag_probe(stop: asyncio.Event, worst: list[float]) -> None:
    """The longest gap between turns of a task that yields at once: how long the loop was
    held up by anything else."""
    while not stop.is_set():
        due = time.perf_counter()
        await asyncio.sleep(0)
        worst[0] = max(worst[0], time.perf_counter() - due)


async def admit_once(step: TokenStep, body: bytes, probe: bool) -> tuple[float, float]:
    """One admission: how long it took, and the longest the loop was held up meanwhile."""
    operation = classify("POST", "/v1/responses")
    worst = [0.0]
    stop = asyncio.Event()
    lag = asyncio.ensure_future(lag_probe(stop, worst)) if probe else None
    await asyncio.sleep(0)
    started = time.perf_counter()
    call = await step.admit("acme", operation, body)
    waited = time.perf_counter() - started
    stop.set()
    if lag is not None:
        await lag
    assert call is not None
    assert call.decision.allowed
    call.ended(500)  # settled (refunded) so that the buckets stay full
    await step.settled()
    return waited, worst[0]


async def measure(step: TokenStep, body: bytes, rounds: int) -> dict[str, Any]:
    """The wait alone (nothing else on the loop), then the loop's lag with a probe on it."""
    waits = sorted([(await admit_once(step, body, False))[0] for _ in range(rounds + 10)][10:])
    lags = sorted([(await admit_once(step, body, True))[1] for _ in range(rounds + 10)][10:])
    return {
        "wait_median_us": round(statistics.median(waits) * 1e6, 1),
        "wait_p90_us": round(waits[int(len(waits) * 0.9)] * 1e6, 1),
        "loop_held_median_us": round(statistics.median(lags) * 1e6, 1),
        "loop_held_p90_us": round(lags[int(len(lags) * 0.9)] * 1e6, 1),
    }


async def run(options: argparse.Namespace) -> dict[str, Any]:
    policy = parse_policy(POLICY, "benchmark policy")
    encoding = load_o200k()
    results: dict[str, Any] = {"cases": []}
    urls = ["memory://"] + ([options.redis] if options.redis else [])
    print(f"{'buckets':<10}{'input':<8}{'wait p50':>10}{'p90':>9}{'loop held p50':>15}{'p90':>9}")
    for url in urls:
        buckets = buckets_from_url(url)
        metrics = Metrics(CollectorRegistry(), ["acme"])
        quota = TokenQuota(buckets, lambda: policy)
        step = TokenStep(quota, lambda: policy, load_pricing(None), metrics, str, encoding)
        for size, label in ((4 * 1024, "4 KB"), (64 * 1024, "64 KB")):
            row = await measure(step, body_of(size), options.rounds)
            results["cases"].append({"buckets": url.split(":")[0], "input": label, **row})
            print(
                f"{url.split(':')[0]:<10}{label:<8}{row['wait_median_us']:>10}"
                f"{row['wait_p90_us']:>9}{row['loop_held_median_us']:>15}"
                f"{row['loop_held_p90_us']:>9}"
            )
        await buckets.close()
    print("(microseconds per call)")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--redis", help="also measure Redis buckets at this URL")
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()
    results = asyncio.run(run(options))
    if options.json:
        with open(options.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()

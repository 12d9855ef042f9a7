"""What estimating a model call's tokens costs, per request body, before it is sent.

Builds a Responses body and a Chat Completions body whose text is about 4 KB and
about 64 KB (prose, code and a little non-Latin text, a tool definition, a few
turns), and times ``Estimator.estimate`` on each: with the shipped ``o200k_base``
encoding (GPT-4o, GPT-4.1, GPT-5, o-series) and with the bytes/4 fallback. Also
times loading the encoding once (a start-up cost). Prints the median and p90 per
call over ``--rounds`` rounds; from the repository root:

    python3 benchmarks/estimate.py [--rounds 200] [--json estimate.json]

The estimate runs on the event loop unless the caller hands it to a thread; a
median of a few hundred microseconds at 64 KB is what one request waits for it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from tollhouse.metering.estimate import Estimator, load_o200k

PROSE = (
    "Tenants share one organisation's limits, so each gets a budget of its own; a call "
    "that would overspend is refused with the time after which it would fit. "
)
CODE = 'def refill(level, rate, now):\n    return min(cap, level + (now - at) * rate)  # "tokens"\n'
OTHER = "東京の天気は晴れです。¿Qué tal la cuota? Привет, мир! "
TOOL = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order by its number and return its status.",
    "parameters": {
        "type": "object",
        "properties": {"order": {"type": "string", "description": "The order number."}},
        "required": ["order"],
    },
}


def text_of(size: int) -> str:
    block = PROSE * 4 + CODE * 2 + OTHER
    return (block * (size // len(block.encode()) + 1)).encode()[:size].decode(errors="ignore")


def bodies(size: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """A Responses body and a Chat body, each carrying about ``size`` bytes of text."""
    turns = [text_of(size // 4) for _ in range(4)]
    responses = {
        "model": "gpt-4.1",
        "instructions": "Answer briefly.",
        "input": [
            {"role": "user" if n % 2 == 0 else "assistant", "content": turn}
            for n, turn in enumerate(turns)
        ],
        "tools": [TOOL],
        "max_output_tokens": 1024,
    }
    chat = {
        "model": "gpt-4o",
        "messages": [{"role": "system", "content": "Answer briefly."}]
        + [{"role": "user", "content": [{"type": "text", "text": turn}]} for turn in turns],
        "tools": [{"type": "function", "function": TOOL}],
        "max_completion_tokens": 1024,
    }
    return {"responses": ("responses", responses), "chat": ("chat", chat)}


def timed(estimator: Estimator, api: Any, body: dict[str, Any], rounds: int) -> dict[str, Any]:
    estimate = estimator.estimate(body, api)  # warm up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        estimator.estimate(body, api)
        times.append(time.perf_counter() - started)
    times.sort()
    return {
        "input_tokens": estimate.input_tokens,
        "exact": estimate.exact,
        "median_us": round(statistics.median(times) * 1e6, 1),
        "p90_us": round(times[int(len(times) * 0.9)] * 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args()
    started = time.perf_counter()
    o200k = load_o200k()
    load_ms = (time.perf_counter() - started) * 1000
    print(f"loading o200k_base: {load_ms:.0f} ms (once, at start-up)")
    results: dict[str, Any] = {"load_ms": round(load_ms, 1), "cases": []}
    print(f"{'body':<24}{'counter':<10}{'tokens':>8}{'median us':>12}{'p90 us':>10}")
    for size, label in ((4 * 1024, "4 KB"), (64 * 1024, "64 KB")):
        for name, (api, body) in bodies(size).items():
            for counter, estimator in (("o200k", Estimator(o200k)), ("bytes/4", Estimator(None))):
                row = timed(estimator, api, body, options.rounds)
                results["cases"].append({"body": f"{name} {label}", "counter": counter, **row})
                print(
                    f"{name + ' ' + label:<24}{counter:<10}{row['input_tokens']:>8}"
                    f"{row['median_us']:>12}{row['p90_us']:>10}"
                )
    if options.json:
        with open(options.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()

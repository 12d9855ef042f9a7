"""The targets tollhouse is held to, and the results table."""

from __future__ import annotations

from typing import Any

# Upper bounds, except the floors THROUGH_RPS_C32, REFERENCE_RPS_RATIO and REFUSED_PER_S.
ADDED_P50_C1_MS = 0.5
ADDED_P99_C1_MS = 2.0
THROUGH_RPS_C32 = 3000.0
# Against the bare Starlette + aiohttp reference proxy: at least this many times its
# requests/s at c=32, and latencies (c=1 p50 and p99, first SSE event) no worse than its.
REFERENCE_RPS_RATIO = 1.3
REFUSED_PER_S = 5000.0
SSE_ADDED_MS = 1.0
UPLOAD_RSS_RISE_MB = 30.0
RSS_AFTER_RUN_MB = 100.0
# Other processes using more than this share of a core make a measurement noisy.
NOISY_CPU = 0.10


def _target(name: str, value: float, threshold: float, unit: str, at_least: bool = False) -> Any:
    return {
        "target": name,
        "value": round(value, 3),
        "threshold": threshold,
        "unit": unit,
        "comparison": ">=" if at_least else "<=",
        "pass": value >= threshold if at_least else value <= threshold,
    }


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for row in results["small_json"]:
        direct, through, name = row["direct"], row["through"], row["scenario"]
        reference = row["reference"]
        if row["concurrency"] == 1:
            added_p50 = through["p50_ms"] - direct["p50_ms"]
            added_p99 = through["p99_ms"] - direct["p99_ms"]
            found.append(_target(f"{name}: added p50, c=1", added_p50, ADDED_P50_C1_MS, "ms"))
            found.append(_target(f"{name}: added p99, c=1", added_p99, ADDED_P99_C1_MS, "ms"))
            for key in ("p50_ms", "p99_ms"):
                over = through[key] - reference[key]
                found.append(_target(f"{name}: {key[:3]} - reference's, c=1", over, 0.0, "ms"))
        if row["concurrency"] == 32:
            rps = through["rps"]
            found.append(
                _target(f"{name}: req/s through, c=32", rps, THROUGH_RPS_C32, "req/s", True)
            )
            ratio = rps / reference["rps"]
            found.append(
                _target(f"{name}: req/s / reference's, c=32", ratio, REFERENCE_RPS_RATIO, "x", True)
            )
    for key, what in (("sse_first_event", "run"), ("sse_first_event_response", "response")):
        sse = results.get(key)
        if sse is None:  # results from before responses were measured
            continue
        added = sse["through"]["p50_ms"] - sse["direct"]["p50_ms"]
        found.append(_target(f"first SSE event ({what}): added p50", added, SSE_ADDED_MS, "ms"))
        over = sse["through"]["p50_ms"] - sse["reference"]["p50_ms"]
        found.append(_target(f"first SSE event ({what}): p50 - reference's", over, 0.0, "ms"))
    hammered = results["runaway"]
    found.append(
        _target(
            "runaway tenant: refusals/s", hammered["refused_per_s"], REFUSED_PER_S, "req/s", True
        )
    )
    for key, limit in (("p50_ms", ADDED_P50_C1_MS), ("p99_ms", ADDED_P99_C1_MS)):
        added = hammered["calm"][key] - hammered["direct"][key]
        found.append(_target(f"other tenant while hammered: added {key[:3]}", added, limit, "ms"))
    upload = results["transfers"]["upload"]
    what = f"{results['settings']['transfer_mb']} MB upload: RSS rise"
    found.append(_target(what, upload["rss_rise_mb"], UPLOAD_RSS_RISE_MB, "MB"))
    after = results["memory"]["after_run_mb"]
    found.append(_target("RSS after the run", after, RSS_AFTER_RUN_MB, "MB"))
    return found


def _noisy(share: float) -> str:
    return "  (noisy)" if share > NOISY_CPU else ""


def _small_json(results: dict[str, Any]) -> None:
    settings = results["settings"]
    print(
        f"\nSmall JSON requests: wrk, median of {settings['repeat']} runs of "
        f"{settings['duration_s']:g} s after {settings['warmup_s']:g} s of warm-up"
    )
    print(f"{'':<18}{'req/s':^23}{'p50 ms':^25}{'p99 ms':^25}  tollhouse CPU  others")
    head = f"{'direct':>8}{'through':>9}{'added':>8}"
    rates = f"{'direct':>9}{'through':>8}{'ratio':>6}"
    print(f"{'scenario':<13}{'conc':>5}{rates} {head} {head}  busy  us/req     CPU")
    for row in results["small_json"]:
        direct, through = row["direct"], row["through"]
        cells = f"{row['scenario']:<13}{row['concurrency']:>5}"
        cells += (
            f"{direct['rps']:>9,.0f}{through['rps']:>8,.0f}{through['rps'] / direct['rps']:>6.2f} "
        )
        for key in ("p50_ms", "p99_ms"):
            added = through[key] - direct[key]
            cells += f"{direct[key]:>8.3f}{through[key]:>9.3f}{added:>+8.3f} "
        busy, per_request = through["busy"], through["cpu_us_per_request"]
        cells += f"{busy:>6.0%}{per_request:>8.0f}"
        cells += f"{row['background_cpu']:>8.0%}"
        print(cells + _noisy(row["background_cpu"]))
    floors = [
        f"{row['scenario']} p50 {row['cross_core']['p50_ms']:.3f} / p99 "
        f"{row['cross_core']['p99_ms']:.3f} ms"
        for row in results["small_json"]
        if "cross_core" in row
    ]
    print("Cross-core floor, c=1 (the fast upstream on tollhouse's core): " + "; ".join(floors))
    capacity = [
        f"{row['scenario']} {1e6 / row['through']['cpu_us_per_request']:,.0f} req/s"
        for row in results["small_json"]
        if row["concurrency"] > 1
    ]
    print("One core's capacity from tollhouse's CPU time per request: " + "; ".join(capacity))


def _reference(results: dict[str, Any]) -> None:
    print("\nAgainst the reference proxy (bare Starlette + aiohttp, same core, same upstream)")
    pair = f"{'reference':>10}{'through':>9}"
    print(f"{'scenario':<13}{'conc':>5}{pair}{'ratio':>6} {pair} {pair} {pair}")
    print(f"{'':<18}{'req/s':^25} {'p50 ms':^19} {'p99 ms':^19} {'CPU us/req':^19}")
    for row in results["small_json"]:
        reference, through = row["reference"], row["through"]
        cells = f"{row['scenario']:<13}{row['concurrency']:>5}"
        ratio = through["rps"] / reference["rps"]
        cells += f"{reference['rps']:>10,.0f}{through['rps']:>9,.0f}{ratio:>6.2f} "
        for key in ("p50_ms", "p99_ms"):
            cells += f"{reference[key]:>10.3f}{through[key]:>9.3f} "
        cells += f"{reference['cpu_us_per_request']:>10.0f}{through['cpu_us_per_request']:>9.0f}"
        print(cells + _noisy(row["background_cpu"]))


def _first_event(results: dict[str, Any], key: str = "sse_first_event") -> None:
    sse = results.get(key)
    if sse is None:
        return
    what = sse.get("stream", "run")
    print(
        f"\nTime to first SSE event: {sse['requests']} streamed {what} creations each, "
        "one at a time"
    )
    print(f"{'':<12}{'p50 ms':>9}{'p99 ms':>9}")
    for name in ("direct", "through", "reference", "cross_core"):
        print(f"{name:<12}{sse[name]['p50_ms']:>9.3f}{sse[name]['p99_ms']:>9.3f}")
    added = [sse["through"][key] - sse["direct"][key] for key in ("p50_ms", "p99_ms")]
    print(f"{'added':<12}{added[0]:>+9.3f}{added[1]:>+9.3f}{_noisy(sse['background_cpu'])}")


def _transfers(results: dict[str, Any]) -> None:
    print(f"\n{results['settings']['transfer_mb']} MB bodies, one at a time; tollhouse RSS in MB")
    rss = f"{'before':>8}{'peak':>8}{'rise':>7}{'after':>8}"
    print(f"{'':<10}{'direct MB/s':>12}{'through MB/s':>13}{rss}")
    for name, row in results["transfers"].items():
        print(
            f"{name:<10}{row['direct_mb_s']:>12,.0f}{row['through_mb_s']:>13,.0f}"
            f"{row['rss_before_mb']:>8.1f}{row['rss_peak_mb']:>8.1f}"
            f"{row['rss_rise_mb']:>+7.1f}{row['rss_after_mb']:>8.1f}"
        )


def print_report(results: dict[str, Any]) -> None:
    machine = results["machine"]
    print(
        f"\ntollhouse benchmark: {machine['cpus']} CPUs; tollhouse on CPU {machine['proxy_cpu']}, "
        f"the upstream and the load generators on CPU {machine['load_cpu']}; "
        f"Python {machine['python']}"
    )
    _small_json(results)
    _reference(results)
    _first_event(results)
    _first_event(results, "sse_first_event_response")
    _transfers(results)
    memory, process = results["memory"], results["tollhouse"]
    print(
        f"\ntollhouse RSS: {memory['started_mb']:.1f} MB when ready, peak {memory['peak_mb']:.1f} "
        f"MB, {memory['after_run_mb']:.1f} MB after the run. Ready in {process['ready_s']:.2f} s; "
        f"SIGINT: exit code {process['sigint_exit_code']} after {process['sigint_stop_s']:.2f} s"
    )
    background = results["background_cpu"]
    print(
        f"Other processes on the machine used {background:.0%} of a core on average during the "
        f"run{_noisy(background)}; {results['waited_for_quiet_s']:.0f} s spent waiting for quiet"
    )
    print("\nTargets")
    for target in results["targets"]:
        verdict = "PASS" if target["pass"] else "MISS"
        print(
            f"{verdict}  {target['target']:<34}{target['value']:>10,.3f} {target['unit']:<6}"
            f"(target {target['comparison']} {target['threshold']:g})"
        )

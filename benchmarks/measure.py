"""The measurements: small JSON requests, time to first SSE event, large bodies.

Each one runs against every target in turn, interleaved, so that a burst of
load from elsewhere on the machine hits all of them alike:

- ``direct``: the fast upstream, on the load generator's core;
- ``through``: tollhouse (on its own core) in front of that upstream;
- ``cross_core``: a second fast upstream on tollhouse's core, without tollhouse,
  for the cost of crossing cores alone (the floor of any proxy on another core);
- ``reference``: a bare Starlette + aiohttp proxy (``reference.py``) on tollhouse's
  core, in front of the same upstream: what forwarding alone costs, written plainly.
"""

from __future__ import annotations

import contextlib
import json
import math
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

from client import Connection, multipart_upload
from loadgen import LoadError, LoadResult, run_wrk
from processes import MB, CpuMeter, PortProcess, Reference, RssSampler, Tollhouse, Upstream

# What a streamed creation is, per API: its path and body.
STREAMS = {
    "run": ("/v1/threads/thread_abc/runs", b'{"assistant_id":"asst_abc","stream":true}'),
    "response": ("/v1/responses", b'{"model":"gpt-4o-mini","input":"Weather?","stream":true}'),
}
SSE_HEADERS = {"Content-Type": "application/json", "Accept": "text/event-stream"}


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    method: str
    path: str
    body: str = ""


SCENARIOS = (
    Scenario("GET run", "GET", "/v1/threads/thread_abc/runs/run_abc"),
    Scenario(
        "POST message",
        "POST",
        "/v1/threads/thread_abc/messages",
        '{"role":"user","content":"What is the weather like in Paris today?"}',
    ),
    Scenario(
        "POST response",
        "POST",
        "/v1/responses",
        '{"model":"gpt-4o-mini","input":"What is the weather like in Paris today?"}',
    ),
)
CONCURRENCY = (1, 32)


@dataclass(frozen=True, slots=True)
class Setup:
    upstream: Upstream
    cross_core: Upstream
    tollhouse: Tollhouse
    reference: Reference
    meter: CpuMeter
    duration: float
    warmup: float
    repeat: int
    settle: float  # at most this many seconds of waiting for a quiet machine per case

    def urls(self, with_cross_core: bool) -> dict[str, str]:
        urls = {
            "direct": self.upstream.url,
            "through": self.tollhouse.url,
            "reference": self.reference.url,
        }
        if with_cross_core:
            urls["cross_core"] = self.cross_core.url
        return urls

    def ports(self) -> dict[str, int]:
        return {
            "direct": self.upstream.port,
            "through": self.tollhouse.port,
            "reference": self.reference.port,
            "cross_core": self.cross_core.port,
        }

    def proxy(self, name: str) -> Tollhouse | PortProcess | None:
        """The proxy process behind a target, whose CPU time is measured."""
        return {"through": self.tollhouse, "reference": self.reference}.get(name)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def _load(url: str, scenario: Scenario, connections: int, seconds: float) -> LoadResult:
    result = run_wrk(url + scenario.path, connections, seconds, scenario.method, scenario.body)
    if result.errors:
        raise LoadError(f"{result.errors} failed requests for {scenario.name} at {url}")
    return result


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _small_json_row(setup: Setup, scenario: Scenario, connections: int) -> dict[str, Any]:
    urls = setup.urls(with_cross_core=connections == 1)
    setup.meter.settle(setup.settle)
    for url in urls.values():
        _load(url, scenario, connections, setup.warmup)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in urls}
    case = setup.meter.mark()
    for _ in range(setup.repeat):
        for name, url in urls.items():
            proxy = setup.proxy(name)
            cpu = proxy.cpu_seconds() if proxy is not None else 0.0
            wall, mark = time.monotonic(), setup.meter.mark()
            result = _load(url, scenario, connections, setup.duration)
            run = {"rps": result.rps, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}
            run["background_cpu"] = setup.meter.background(mark)
            if proxy is not None:
                cpu = proxy.cpu_seconds() - cpu
                run["busy"] = cpu / (time.monotonic() - wall)
                # CPU time per request hardly depends on other load on the machine: its
                # inverse is what one core can forward, however noisy the clock times are.
                run["cpu_us_per_request"] = cpu / result.requests * 1e6
            runs[name].append(run)
    row: dict[str, Any] = {"scenario": scenario.name, "concurrency": connections}
    row |= {name: _median(results) for name, results in runs.items()}
    row["background_cpu"] = setup.meter.background(case)
    row["runs"] = runs
    return row


def small_json(setup: Setup) -> list[dict[str, Any]]:
    rows = []
    for scenario in SCENARIOS:
        for connections in CONCURRENCY:
            row = _small_json_row(setup, scenario, connections)
            direct, through, reference = row["direct"], row["through"], row["reference"]
            print(
                f"  {scenario.name:<13} c={connections:<3} req/s {direct['rps']:>7,.0f} -> "
                f"{through['rps']:>6,.0f} (reference {reference['rps']:,.0f})  p50 "
                f"{direct['p50_ms']:.3f} -> {through['p50_ms']:.3f} ({reference['p50_ms']:.3f}) "
                f"ms  p99 {direct['p99_ms']:.3f} -> {through['p99_ms']:.3f} "
                f"({reference['p99_ms']:.3f}) ms",
                flush=True,
            )
            rows.append(row)
    return rows


def first_events(setup: Setup, requests: int, stream: str = "run") -> dict[str, Any]:
    """Time to the first SSE event of a streamed creation, one at a time per target."""
    path, body = STREAMS[stream]
    warmup = max(10, requests // 10)
    seconds: dict[str, list[float]] = {name: [] for name in setup.ports()}
    setup.meter.settle(setup.settle)
    mark = setup.meter.mark()
    with contextlib.ExitStack() as stack:
        connections = {
            name: stack.enter_context(Connection(port)) for name, port in setup.ports().items()
        }
        for index in range(warmup + requests):
            for name, connection in connections.items():
                response = connection.request("POST", path, SSE_HEADERS, body)
                if response.status != 200 or response.first_event_seconds is None:
                    raise LoadError(
                        f"streamed {stream} creation failed ({name}): {response.status}"
                    )
                if index >= warmup:
                    seconds[name].append(response.first_event_seconds)
    result: dict[str, Any] = {
        name: {"p50_ms": percentile(values, 50) * 1000, "p99_ms": percentile(values, 99) * 1000}
        for name, values in seconds.items()
    }
    result |= {"requests": requests, "stream": stream}
    result["background_cpu"] = setup.meter.background(mark)
    direct, through, reference = result["direct"], result["through"], result["reference"]
    print(
        f"  first SSE event of a {stream}: p50 {direct['p50_ms']:.3f} -> "
        f"{through['p50_ms']:.3f} ms "
        f"(reference {reference['p50_ms']:.3f}), p99 {direct['p99_ms']:.3f} -> "
        f"{through['p99_ms']:.3f} ms (reference {reference['p99_ms']:.3f})",
        flush=True,
    )
    return result


def _upload(port: int, size: int) -> float:
    """Seconds to POST a ``size``-byte multipart file that the upstream receives whole."""
    headers, length, body = multipart_upload(size)
    with Connection(port) as connection:
        response = connection.request("POST", "/v1/files", headers, body, length)
    if response.status != 200 or json.loads(response.head).get("bytes") != length:
        raise LoadError(f"upload failed: {response.status} {response.head[:200]!r}")
    return response.total_seconds


def _download(port: int, size: int) -> float:
    with Connection(port) as connection:
        response = connection.request("GET", "/v1/files/file-abc/content")
    if response.status != 200 or response.body_bytes != size:
        raise LoadError(f"download failed: {response.status}, {response.body_bytes} bytes")
    return response.total_seconds


def transfers(setup: Setup, size: int) -> dict[str, Any]:
    """One upload and one download of ``size`` bytes, watching tollhouse's memory."""
    results = {}
    tollhouse = setup.tollhouse
    for name, transfer in (("upload", _upload), ("download", _download)):
        setup.meter.settle(setup.settle)
        direct = transfer(setup.upstream.port, size)
        before = tollhouse.rss_mb()
        with RssSampler(tollhouse) as sampler:
            through = transfer(tollhouse.port, size)
            time.sleep(0.5)  # memory released late, or not at all, shows here
        results[name] = {
            "bytes": size,
            "direct_mb_s": size / MB / direct,
            "through_mb_s": size / MB / through,
            "rss_before_mb": before,
            "rss_peak_mb": sampler.peak_mb,
            "rss_after_mb": tollhouse.rss_mb(),
            "rss_rise_mb": sampler.peak_mb - before,
        }
        print(
            f"  {name:<8} {size / MB:g} MB: {size / MB / direct:,.0f} -> "
            f"{size / MB / through:,.0f} MB/s, tollhouse RSS {before:.1f} -> peak "
            f"{sampler.peak_mb:.1f} MB",
            flush=True,
        )
    return results


RUNAWAY = "X-Tollhouse-Tenant: runaway"
CALM = "X-Tollhouse-Tenant: calm"


def runaway(setup: Setup) -> dict[str, Any]:
    """A client hammers one tenant far above its limit while another tenant polls a run.

    The hammering (wrk, 32 connections, tenant ``runaway``) and the calm tenant (wrk,
    one connection) run at the same time through tollhouse; the calm tenant's latency is
    compared with the same request with nobody hammering.
    """
    path = SCENARIOS[0].path
    url = setup.tollhouse.url + path
    setup.meter.settle(setup.settle)
    run_wrk(url, 32, setup.warmup, header=RUNAWAY)
    quiet = run_wrk(url, 1, setup.duration, header=CALM)
    direct = run_wrk(setup.upstream.url + path, 1, setup.duration)
    mark = setup.meter.mark()
    results: dict[str, LoadResult] = {}

    def hammer() -> None:
        results["runaway"] = run_wrk(url, 32, setup.duration, header=RUNAWAY)

    thread = threading.Thread(target=hammer)
    thread.start()
    results["calm"] = run_wrk(url, 1, setup.duration, header=CALM)
    thread.join()
    hammered, calm = results["runaway"], results["calm"]
    row: dict[str, Any] = {
        "refused_per_s": hammered.errors / hammered.seconds,
        "runaway_rps": hammered.rps,
        "calm": {"rps": calm.rps, "p50_ms": calm.p50_ms, "p99_ms": calm.p99_ms},
        "calm_alone": {"p50_ms": quiet.p50_ms, "p99_ms": quiet.p99_ms},
        "direct": {"p50_ms": direct.p50_ms, "p99_ms": direct.p99_ms},
        "background_cpu": setup.meter.background(mark),
    }
    print(
        f"  runaway tenant refused {row['refused_per_s']:,.0f}/s; calm tenant p50 "
        f"{calm.p50_ms:.3f} / p99 {calm.p99_ms:.3f} ms (alone {quiet.p50_ms:.3f} / "
        f"{quiet.p99_ms:.3f}; direct {direct.p50_ms:.3f} / {direct.p99_ms:.3f})",
        flush=True,
    )
    return row

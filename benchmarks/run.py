"""What tollhouse adds to a request: throughput, latency, time to first SSE event, memory.

Starts fast upstreams and the real ``tollhouse serve`` (pinned to a core of its
own), measures every case directly and through tollhouse, prints a table with
PASS / MISS per target and writes it all as JSON. Exits 0 when every target
passes, 3 when one is missed, 1 when the benchmark failed, 2 without wrk. Usage:

    python benchmarks/run.py [--duration 3] [--repeat 3] [--json benchmarks/results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from loadgen import LoadError, wrk_path
from measure import Setup, first_events, runaway, small_json, transfers
from processes import MB, CpuMeter, Reference, RssSampler, StartError, Tollhouse, Upstream, tail
from report import print_report, targets

HERE = Path(__file__).parent
RESULTS = HERE / "results.json"
POLICY = HERE / "policy.yaml"


def cpus() -> tuple[int, int]:
    """tollhouse's core, and the one shared by the upstream and the load generator."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        print("warning: one CPU only; tollhouse shares it with the load", file=sys.stderr)
        return available[0], available[0]
    return available[0], available[1]


def measure_all(setup: Setup, args: argparse.Namespace) -> dict[str, Any]:
    tollhouse = setup.tollhouse
    memory: dict[str, float] = {"started_mb": tollhouse.rss_mb()}
    mark = setup.meter.mark()
    with RssSampler(tollhouse, interval=0.05) as whole_run:
        print("small JSON requests (wrk):", flush=True)
        rows = small_json(setup)
        print("streaming run creation:", flush=True)
        first_event = first_events(setup, args.sse_requests)
        print("streamed response creation:", flush=True)
        first_response_event = first_events(setup, args.sse_requests, "response")
        print("runaway client on one tenant:", flush=True)
        hammered = runaway(setup)
        print("large bodies:", flush=True)
        bodies = transfers(setup, args.transfer_mb * MB)
    time.sleep(1.0)
    memory |= {"peak_mb": whole_run.peak_mb, "after_run_mb": tollhouse.rss_mb()}
    return {
        "small_json": rows,
        "sse_first_event": first_event,
        "sse_first_event_response": first_response_event,
        "runaway": hammered,
        "transfers": bodies,
        "memory": memory,
        "background_cpu": setup.meter.background(mark),
        "waited_for_quiet_s": setup.meter.waited,
    }


def benchmark(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    proxy_cpu, load_cpu = cpus()
    os.sched_setaffinity(0, {load_cpu})  # wrk and this process's client inherit it
    started: list[Upstream | Reference | Tollhouse] = []
    try:
        with (workdir / "upstream.log").open("wb") as log:
            upstream = Upstream(load_cpu, args.transfer_mb * MB, log)
            started.append(upstream)
            cross_core = Upstream(proxy_cpu, args.transfer_mb * MB, log)
            started.append(cross_core)
            reference = Reference(proxy_cpu, upstream.url, log)
            started.append(reference)
        tollhouse = Tollhouse(proxy_cpu, upstream.url, args.policy, workdir / "tollhouse.log")
        started.append(tollhouse)
        ready_seconds = tollhouse.wait_ready()
        print(f"tollhouse pid {tollhouse.process.pid} on CPU {proxy_cpu}, ready", flush=True)
        setup = Setup(
            upstream=upstream,
            cross_core=cross_core,
            tollhouse=tollhouse,
            reference=reference,
            meter=CpuMeter(upstream.ps, cross_core.ps, reference.ps, tollhouse.ps),
            duration=args.duration,
            warmup=args.warmup,
            repeat=args.repeat,
            settle=args.settle,
        )
        results = measure_all(setup, args)
        stopped = time.monotonic()
        exit_code = tollhouse.stop()
        results["tollhouse"] = {
            "ready_s": ready_seconds,
            "sigint_exit_code": exit_code,
            "sigint_stop_s": time.monotonic() - stopped,
        }
    finally:
        for process in reversed(started):
            process.stop()
    results["machine"] = {
        "cpus": os.cpu_count(),
        "proxy_cpu": proxy_cpu,
        "load_cpu": load_cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    results["settings"] = {
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "repeat": args.repeat,
        "settle_s": args.settle,
        "sse_requests": args.sse_requests,
        "transfer_mb": args.transfer_mb,
        "policy": str(args.policy),
    }
    return results


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per case")
    parser.add_argument("--repeat", type=int, default=3, help="wrk runs per case (median)")
    parser.add_argument(
        "--settle",
        type=float,
        default=20.0,
        help="before each case, wait up to this many seconds for other processes to go quiet",
    )
    parser.add_argument("--sse-requests", type=int, default=300)
    parser.add_argument("--transfer-mb", type=int, default=200, help="upload / download size")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where to write the results")
    parser.add_argument(
        "--policy", type=Path, default=POLICY, help="tollhouse policy (default: never throttles)"
    )
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    try:
        wrk_path()
    except LoadError as exc:
        print(exc, file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="tollhouse-bench-") as workdir:
        try:
            results = benchmark(args, Path(workdir))
        except StartError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        except LoadError as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            log = Path(workdir) / "tollhouse.log"
            if log.exists():
                print(f"tollhouse's log ends with:\n{tail(log)}", file=sys.stderr)
            return 1
    results["targets"] = targets(results)
    print_report(results)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nresults written to {args.json}")
    return 0 if all(target["pass"] for target in results["targets"]) else 3


if __name__ == "__main__":
    sys.exit(main())

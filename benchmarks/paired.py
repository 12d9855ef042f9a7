"""Two versions of tollhouse and the reference proxy, measured side by side, paired.

For a before / after comparison on a machine that is never quiet: the proxies run at the
same time on one core, and every case runs against each of them in turn, in random
order, round after round, so that load from elsewhere hits them all alike. Usage:

    git archive HEAD~1 src | tar -x -C /tmp/before     # the version to compare with
    python benchmarks/paired.py --baseline /tmp/before/src [--rounds 8] [--duration 3]

``--baseline`` is a ``src`` directory put first on that tollhouse's ``PYTHONPATH``; the
other tollhouse is the installed one. Prints medians per case; exits 1 if one failed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from client import Connection
from loadgen import LoadError, run_wrk
from measure import SCENARIOS, SSE_HEADERS, STREAMS, percentile
from processes import MB, PortProcess, Reference, StartError, Tollhouse, Upstream
from run import POLICY, cpus

SSE_PER_ROUND = 50


def start(args: argparse.Namespace, workdir: Path) -> tuple[Upstream, dict[str, Any]]:
    proxy_cpu, load_cpu = cpus()
    os.sched_setaffinity(0, {load_cpu})
    log = (workdir / "upstream.log").open("wb")
    upstream = Upstream(load_cpu, MB, log)
    proxies: dict[str, Tollhouse | PortProcess] = {
        "reference": Reference(proxy_cpu, upstream.url, log)
    }
    for name, path in (("baseline", args.baseline), ("current", None)):
        (workdir / name).mkdir()
        env = os.environ.copy()
        if path is not None:
            os.environ["PYTHONPATH"] = str(path)
        try:
            proxies[name] = Tollhouse(proxy_cpu, upstream.url, POLICY, workdir / name / "log")
        finally:
            os.environ.clear()
            os.environ.update(env)
    for proxy in proxies.values():
        if isinstance(proxy, Tollhouse):
            proxy.wait_ready()
    return upstream, proxies


def one_round(proxies: dict[str, Any], duration: float, runs: dict[str, list[Any]]) -> None:
    for scenario in SCENARIOS:
        for connections in (32, 1):
            order = list(proxies)
            random.shuffle(order)
            for name in order:
                proxy = proxies[name]
                cpu = proxy.cpu_seconds()
                result = run_wrk(
                    proxy.url + scenario.path, connections, duration, scenario.method, scenario.body
                )
                if result.errors:
                    raise LoadError(f"{result.errors} failed requests through {name}")
                used = proxy.cpu_seconds() - cpu
                key = f"{scenario.name}, c={connections}: {name}"
                runs.setdefault(key, []).append(
                    {
                        "rps": result.rps,
                        "p50_ms": result.p50_ms,
                        "p99_ms": result.p99_ms,
                        "cpu_us": used / result.requests * 1e6,
                    }
                )
    connections = {name: Connection(proxy.port) for name, proxy in proxies.items()}
    try:
        for _ in range(SSE_PER_ROUND):
            for name, connection in connections.items():
                path, body = STREAMS["run"]
                response = connection.request("POST", path, SSE_HEADERS, body)
                if response.first_event_seconds is None:
                    raise LoadError(f"no SSE event through {name}: {response.status}")
                key = f"first SSE event: {name}"
                runs.setdefault(key, []).append(response.first_event_seconds * 1000)
    finally:
        for connection in connections.values():
            connection.close()


def report(runs: dict[str, list[Any]]) -> None:
    for key, values in sorted(runs.items()):
        if key.startswith("first SSE event"):
            p50, p99 = percentile(values, 50), percentile(values, 99)
            print(f"{key:<40} p50 {p50:.3f} ms  p99 {p99:.3f} ms")
            continue
        median = {field: statistics.median(run[field] for run in values) for field in values[0]}
        print(
            f"{key:<40} {median['rps']:>8,.0f} req/s  p50 {median['p50_ms']:.3f} ms  "
            f"p99 {median['p99_ms']:.3f} ms  CPU {median['cpu_us']:.0f} us/req"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="src/ of the other version")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    args = parser.parse_args()
    runs: dict[str, list[Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tollhouse-paired-") as workdir:
        upstream, proxies = None, {}
        try:
            upstream, proxies = start(args, Path(workdir))
            for proxy in proxies.values():  # warm-up
                for scenario in SCENARIOS:
                    run_wrk(proxy.url + scenario.path, 32, 1, scenario.method, scenario.body)
            for number in range(args.rounds):
                one_round(proxies, args.duration, runs)
                print(f"round {number + 1} of {args.rounds} done", flush=True)
        except (StartError, LoadError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            return 1
        finally:
            for proxy in proxies.values():
                proxy.stop()
            if upstream is not None:
                upstream.stop()
    report(runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Fixed-duration load with ``wrk``: requests per second and latency percentiles."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPORT_SCRIPT = Path(__file__).with_name("wrk_report.lua")
RESULT_PREFIX = "BENCH_RESULT "
INSTALL_HINT = "wrk is not installed: apt-get install -y wrk (Debian/Ubuntu) or brew install wrk"


class LoadError(Exception):
    """wrk could not be run, or its run had errors."""


@dataclass(frozen=True, slots=True)
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise LoadError(INSTALL_HINT)
    return path


def run_wrk(
    url: str,
    connections: int,
    seconds: float,
    method: str = "GET",
    body: str = "",
    header: str = "",
) -> LoadResult:
    """One wrk thread (the load generator gets one core) holding ``connections`` open."""
    command = [
        wrk_path(),
        "--threads=1",
        f"--connections={connections}",
        f"--duration={max(1, round(seconds))}s",
        "--timeout=10s",
        f"--script={REPORT_SCRIPT}",
        url,
    ]
    env = {**os.environ, "BENCH_METHOD": method, "BENCH_BODY": body, "BENCH_HEADER": header}
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 30, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise LoadError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout}")
    raw = json.loads(lines[-1].removeprefix(RESULT_PREFIX))
    return LoadResult(
        requests=raw["requests"],
        seconds=raw["duration_us"] / 1e6,
        p50_ms=raw["p50_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        errors=raw["errors"] + raw["non_2xx"],
    )

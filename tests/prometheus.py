"""A real Prometheus server for tests, from Debian's ``prometheus`` package.

It runs on a free loopback port with a temporary configuration and data directory,
scrapes the given targets every second and evaluates the given rule files every
second. Like the services in ``tests/services.py``, it skips when the binary is
missing, and fails under ``CI=true``.
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.services import free_port, require
from tollhouse.telemetry.metrics import Metrics

READY = "Server is ready to receive web requests."
JOB = "tollhouse"
INTERVAL = 1  # seconds between scrapes, and between rule evaluations

SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "info": ("_info",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("", "_sum", "_count"),
}


def exported_series() -> set[str]:
    """Every series name tollhouse exports (``tollhouse_requests_total``, ``..._bucket``)."""
    families = {
        family.name: family.type for family in Metrics(CollectorRegistry()).registry.collect()
    }
    return {name + suffix for name, kind in families.items() for suffix in SUFFIXES[kind]}


_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKETS = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBERS = re.compile(r"\b\d[\w.]*")  # 60, 0.95, 1e9, and durations after offset (1d)
_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = {"and", "or", "unless", "offset", "bool", "by", "without", "on", "ignoring"}


def referenced_series(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions and keywords left out)."""
    bare = _LABEL_LISTS.sub(" ", _BRACKETS.sub(" ", _STRINGS.sub(" ", expr)))
    bare = _NUMBERS.sub(" ", bare)
    names = set()
    for match in _NAME.finditer(bare):
        following = bare[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


class QueryFailed(AssertionError):
    """Prometheus refused a query (it did not parse, or could not be evaluated)."""


@dataclass
class Prometheus:
    url: str
    log: list[str] = field(default_factory=list)

    def api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET an ``/api/v1`` endpoint; returns its ``data`` or raises :class:`QueryFailed`."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            answer = json.load(exc)
        if answer.get("status") != "success":
            raise QueryFailed(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at the current time; the result as a list of samples."""
        data = self.api("query", {"query": expr})
        result = data["result"]
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": result}]
        return list(result)

    def wait_until(
        self, what: str, ready: Callable[[], bool], timeout: float = 30.0, every: float = 0.2
    ) -> None:
        """Poll the server (an external process) until ``ready()`` holds, or fail."""
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                pytest.fail(f"Prometheus: timed out waiting for {what}\n" + "".join(self.log[-20:]))
            time.sleep(every)

    def wait_for_scrapes_after(self, moment: float, scrapes: int = 2) -> None:
        """Wait until ``scrapes`` scrapes of every target started after ``moment``."""

        def scraped() -> bool:
            # Scrapes are INTERVAL apart: the last one that late means the ones before it
            # also began after ``moment``.
            samples = self.query(f'timestamp(up{{job="{JOB}"}})')
            return bool(samples) and all(
                float(sample["value"][1]) >= moment + (scrapes - 1) * INTERVAL for sample in samples
            )

        self.wait_until(f"{scrapes} scrapes after {moment}", scraped)

    def wait_for_rule_evaluations_after(self, moment: float) -> None:
        """Wait until every rule group has been evaluated after ``moment``."""

        def evaluated() -> bool:
            groups = self.api("rules")["groups"]
            return all(_epoch(group["lastEvaluation"]) > moment for group in groups)

        self.wait_until(f"rule evaluations after {moment}", evaluated)


def _epoch(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time as Prometheus writes it (ns digits)."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return seconds + float("0." + (fraction or "0"))


def config(targets: Iterable[str], rule_files: Iterable[Path]) -> dict[str, Any]:
    interval = f"{INTERVAL}s"
    return {
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "rule_files": [str(path.resolve()) for path in rule_files],
        "scrape_configs": [
            {"job_name": JOB, "static_configs": [{"targets": list(targets)}]},
        ],
    }


@contextmanager
def prometheus_server(
    targets: Iterable[str], rule_files: Iterable[Path] = ()
) -> Iterator[Prometheus]:
    """A throwaway Prometheus scraping ``targets`` (``host:port``) as job ``tollhouse``."""
    binary = require("prometheus")
    with tempfile.TemporaryDirectory(prefix="tollhouse-prometheus-") as workdir:
        config_file = Path(workdir) / "prometheus.yml"
        config_file.write_text(yaml.safe_dump(config(targets, rule_files)))
        port = free_port()
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.tsdb.path={workdir}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=info",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        server = Prometheus(f"http://127.0.0.1:{port}")
        assert process.stderr is not None
        drain: threading.Thread | None = None
        try:
            for line in process.stderr:  # Prometheus logs this once its API answers
                server.log.append(line)
                if READY in line:
                    break
            else:
                pytest.fail(
                    f"prometheus exited with {process.wait()}:\n" + "".join(server.log[-20:])
                )
            drain = threading.Thread(target=server.log.extend, args=(process.stderr,), daemon=True)
            drain.start()
            yield server
        finally:
            process.terminate()
            process.wait(15)
            if drain is not None:
                drain.join(5)
            process.stderr.close()

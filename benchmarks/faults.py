"""tollhouse's ledger under real faults, compared with the upstream's own record.

Five scenarios, each produced for real on loopback, against the API simulator (in this
process, so its state is the truth) and real ``tollhouse serve`` processes on a real
PostgreSQL cluster:

- ``replicas``: three replicas on one ledger; every request of every client (creates,
  polls, streams, step lists) goes to one of them at random;
- ``outage``: PostgreSQL stopped (fast shutdown) for ``--outage-seconds`` under
  ``--rate`` creates a second and a run load, then started again;
- ``freeze``: PostgreSQL frozen with SIGSTOP for ``--freeze-seconds`` under the same
  load, with lookups of objects this process never saw (uncached owners);
- ``kill``: ``tollhouse serve`` SIGKILLed under load, a run created just before, and
  restarted on the same ledger and spool;
- ``sigterm``: SIGTERM while streams are open upstream.

Each ends by comparing the ledger and ``tollhouse report --format json`` with the
simulator's record (runs, tokens per model, tool calls, Code Interpreter sessions, owners)
and prints expected / recorded / lost / doubled. Exit code: 0 when nothing was lost or
doubled, 3 when something was, 1 when a scenario could not run. Needs PostgreSQL's
binaries (``/usr/lib/postgresql/*/bin``) and root (the cluster runs as ``postgres``).
About three minutes with the defaults; from the repository root:

    python3 benchmarks/faults.py [--scenario outage ...] [--rate 30] [--json faults.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import sys
import tempfile
import threading
import time
import traceback
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests package

import httpx2 as httpx
import openai
import psutil
from sqlalchemy import Engine, func, select, text
from sqlalchemy.engine import make_url
from sqlmodel import col
from tests.servers import ServerThread, TollhouseProcess, serve, tollhouse_process
from tests.services import PostgresCluster
from tests.test_ledger_faults import frozen
from tests.test_replicas import (
    HEADER,
    POLICY,
    TENANTS,
    UpstreamRecord,
    ledger_record,
    report,
    reported,
    tenant_client,
    upstream_record,
)

from tollhouse.ledger import store as ledger
from tollhouse.ledger.engine import engine_from_url, migrate
from tollhouse.ledger.models import RequestCount
from tollhouse_simulator import SimulatorConfig, create_app

SCENARIOS = ("replicas", "outage", "freeze", "kill", "sigterm")
MODELS = {"acme": "gpt-4o", "globex": "gpt-4o-mini", "initech": "gpt-4.1"}
POLL = 0.1  # seconds between a client's polls of a run
# What a client sees when the process it talks to goes away mid-request.
CUT_OFF = (openai.APIError, httpx.HTTPError)
REPLAYED = "replayed: the ledger has everything again"  # logged once the spool is empty
T = TypeVar("T")


def tools_for(tenant: str) -> list[Any]:
    """Code Interpreter for every tenant; File Search too, except for initech."""
    tools: list[Any] = [{"type": "code_interpreter"}]
    if tenant != "initech":
        tools.append({"type": "file_search"})
    return tools


def wait_until(check: Callable[[], T | None], timeout: float, interval: float = 0.1) -> T | None:
    """Poll a real condition until it holds; None if it did not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found is not None or time.monotonic() > deadline:
            return found
        time.sleep(interval)


def percentile(values: list[float], share: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def latency_ms(seconds: list[float]) -> dict[str, float | None]:
    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 1)

    return {
        "p50": ms(percentile(seconds, 0.50)),
        "p99": ms(percentile(seconds, 0.99)),
        "max": ms(max(seconds) if seconds else None),
    }


def show_ms(figures: dict[str, float | None]) -> str:
    if figures["p50"] is None:
        return "n/a"
    return f"{figures['p50']:g} / {figures['p99']:g} / {figures['max']:g} ms"


# -- the client side: answers, paced load, run load -----------------------------------------


@dataclass
class Answer:
    """One request as the client saw it; status 0 means no HTTP answer at all."""

    kind: str
    tenant: str
    at: float  # when it was due (monotonic): queueing in the load generator counts
    seconds: float
    status: int
    code: str | None = None
    object_id: str | None = None


def attempt(kind: str, tenant: str, due: float, call: Callable[[], str]) -> Answer:
    """Make one request with the real client and note what came back."""
    try:
        object_id = call()
    except openai.APIStatusError as exc:
        return Answer(kind, tenant, due, time.monotonic() - due, exc.status_code, exc.code)
    except CUT_OFF as exc:
        return Answer(kind, tenant, due, time.monotonic() - due, 0, type(exc).__name__)
    return Answer(kind, tenant, due, time.monotonic() - due, 200, None, object_id)


class Paced:
    """Requests at a fixed rate, open loop: a slow answer never delays the next request."""

    def __init__(
        self, rate: float, request: Callable[[int, float], Answer], workers: int = 256
    ) -> None:
        self.rate = rate
        self.request = request
        self.answers: list[Answer] = []
        self._workers = workers
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Paced:
        self._thread.start()
        return self

    def stop(self) -> list[Answer]:
        """Stop sending; returns once every request sent has its answer."""
        self._stop.set()
        self._thread.join()
        with self._lock:
            return list(self.answers)

    def _run(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(self._workers, thread_name_prefix="paced") as pool:
            number = 0
            while True:
                due = started + number / self.rate
                if self._stop.wait(max(0.0, due - time.monotonic())):
                    break
                pool.submit(self._one, number, due)
                number += 1

    def _one(self, number: int, due: float) -> None:
        try:
            answer = self.request(number, due)
        except Exception as exc:  # noqa: BLE001 - anything else the client raises is counted too
            answer = Answer("?", "?", due, time.monotonic() - due, -1, repr(exc))
        with self._lock:
            self.answers.append(answer)


def plain_client(url: str, tenant: str) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=url + "/v1",
        api_key="sk-test",
        max_retries=0,
        timeout=30,
        default_headers={HEADER: tenant},
    )


class Creates:
    """Threads and assistants created in turn by the tenants in turn, each with its tenant
    in the metadata (the simulator's record of whose it is)."""

    def __init__(self, url: str) -> None:
        self.clients = {tenant: plain_client(url, tenant) for tenant in TENANTS}

    def __call__(self, number: int, due: float) -> Answer:
        tenant = TENANTS[number % len(TENANTS)]
        client, metadata = self.clients[tenant], {"tenant": tenant}
        if number // len(TENANTS) % 2:
            return attempt(
                "assistant",
                tenant,
                due,
                lambda: client.beta.assistants.create(model=MODELS[tenant], metadata=metadata).id,
            )
        return attempt(
            "thread", tenant, due, lambda: client.beta.threads.create(metadata=metadata).id
        )

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


class Lookups:
    """Retrieves of threads this tollhouse process never saw, each id once: its owner is
    not in the process's memory, so each one asks the ledger."""

    def __init__(self, url: str, threads: list[tuple[str, str]]) -> None:
        self.threads = threads  # (tenant, thread id)
        self.clients = {tenant: plain_client(url, tenant) for tenant in TENANTS}
        self._next = 0
        self._lock = threading.Lock()

    def __call__(self, number: int, due: float) -> Answer:
        with self._lock:
            tenant, thread_id = self.threads[self._next % len(self.threads)]
            self._next += 1
        client = self.clients[tenant]
        return attempt("lookup", tenant, due, lambda: client.beta.threads.retrieve(thread_id).id)

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


@dataclass
class Conversation:
    tenant: str
    assistant_id: str
    thread_id: str


def setup_tenants(urls: list[str], per_tenant: int) -> tuple[list[Conversation], int]:
    """An assistant per tenant (its own model, Code Interpreter) and ``per_tenant`` threads
    each; returns them and the number of POSTs it took."""
    made, posts = [], 0
    for number, tenant in enumerate(TENANTS):
        metadata = {"tenant": tenant}
        with tenant_client(urls, tenant, number) as client:
            assistant = client.beta.assistants.create(
                model=MODELS[tenant], tools=tools_for(tenant), metadata=metadata
            )
            posts += 1
            for _ in range(per_tenant):
                thread = client.beta.threads.create(
                    metadata=metadata, messages=[{"role": "user", "content": "plot 1 to 5"}]
                )
                posts += 1
                made.append(Conversation(tenant, assistant.id, thread.id))
    return made, posts


def one_run(client: openai.OpenAI, rng: random.Random, conversation: Conversation) -> None:
    """A run streamed (three in ten) or polled every ``POLL`` seconds, its steps listed."""
    runs = client.beta.threads.runs
    thread_id, assistant_id = conversation.thread_id, conversation.assistant_id
    if rng.random() < 0.3:
        with runs.stream(thread_id=thread_id, assistant_id=assistant_id) as stream:
            stream.until_done()
        return
    run = runs.create(thread_id=thread_id, assistant_id=assistant_id)
    while run.status in ("queued", "in_progress"):
        time.sleep(POLL)
        run = runs.retrieve(run.id, thread_id=thread_id)
    runs.steps.list(run.id, thread_id=thread_id)


class RunLoad:
    """One client per conversation running runs one after another until stopped; with
    ``halt_on_error`` a client stops at its first error (its proxy went away)."""

    def __init__(
        self, urls: list[str], conversations: list[Conversation], halt_on_error: bool = False
    ) -> None:
        self.urls = urls
        self.conversations = conversations
        self.halt_on_error = halt_on_error
        self.runs = 0
        self.errors: Counter[str] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._worker, args=(c, seed), daemon=True)
            for seed, c in enumerate(conversations)
        ]

    def start(self) -> RunLoad:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _worker(self, conversation: Conversation, seed: int) -> None:
        rng = random.Random(seed)
        with tenant_client(self.urls, conversation.tenant, 1000 + seed) as client:
            while not self._stop.is_set():
                try:
                    one_run(client, rng, conversation)
                except openai.APIStatusError as exc:
                    self._error(f"{exc.status_code} {exc.code}")
                except CUT_OFF as exc:
                    self._error(type(exc).__name__)
                else:
                    with self._lock:
                        self.runs += 1
                    continue
                if self.halt_on_error:
                    return
                self._stop.wait(0.2)

    def _error(self, what: str) -> None:
        with self._lock:
            self.errors[what] += 1


# -- the server side: PostgreSQL, the simulator, tollhouse's metrics --------------------------


class Lab:
    """What the scenarios share: one PostgreSQL cluster (a database each) and a work dir."""

    def __init__(self, stack: ExitStack) -> None:
        self.workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="faults-")))
        self.policy = self.workdir / "policy.yaml"
        self.policy.write_text(POLICY)
        self.cluster = PostgresCluster()
        stack.callback(self.cluster.remove)
        self.cluster.start()

    def database(self, name: str, migrated: bool = False) -> str:
        """A new database on the cluster; its URL."""
        server = engine_from_url(self.cluster.url).execution_options(isolation_level="AUTOCOMMIT")
        try:
            with server.connect() as connection:
                connection.execute(text(f'CREATE DATABASE "faults_{name}"'))
        finally:
            server.dispose()
        url = make_url(self.cluster.url).set(database=f"faults_{name}")
        rendered = url.render_as_string(hide_password=False)
        if migrated:
            engine = engine_from_url(rendered)
            migrate(engine)
            engine.dispose()
        return rendered

    def env(self, database_url: str, name: str, **extra: str) -> dict[str, str]:
        """``tollhouse serve``'s settings: the shipped defaults but for the ledger, the spool,
        the policy and the upstream key (which the collector and the recovery need)."""
        spool = self.workdir / name / "ledger.spool"
        spool.parent.mkdir(parents=True, exist_ok=True)
        return {
            "TOLLHOUSE_DATABASE_URL": database_url,
            "TOLLHOUSE_SPOOL_PATH": str(spool),
            "TOLLHOUSE_POLICY_FILE": str(self.policy),
            "TOLLHOUSE_UPSTREAM_API_KEY": "sk-test",
            **extra,
        }


@contextmanager
def simulator(gate: threading.Event | None = None) -> Iterator[ServerThread]:
    """The API simulator in this process (its state is the record compared against)."""
    with serve(create_app(SimulatorConfig(stream_gate=gate))) as server:
        yield server


def record(sim: ServerThread, settle: float = 1.0) -> UpstreamRecord:
    """The simulator's record once the runs still going have had ``settle`` s to finish."""
    time.sleep(settle)
    return upstream_record(sim)


SPOOL_GAUGES = re.compile(
    r"^(tollhouse_spool_bytes|tollhouse_spool_batches|tollhouse_ledger_write_errors_total) (\S+)$",
    re.MULTILINE,
)


def metrics(admin_url: str) -> dict[str, float]:
    """The spool's gauges and the ledger write errors, from the admin port. The whole
    exposition is large (every tenant, class, operation and outcome), so it is read
    seldom: a scrape holds up the proxy's event loop while it renders."""
    with urllib.request.urlopen(admin_url + "/metrics", timeout=10) as answer:
        exposition = answer.read().decode()
    return {name: float(value) for name, value in SPOOL_GAUGES.findall(exposition)}


class SpoolWatch:
    """The spool's size, scraped every ``interval`` seconds as Prometheus would, and on
    demand (``sample``)."""

    def __init__(self, admin_url: str, interval: float = 15.0) -> None:
        self.admin_url = admin_url
        self.interval = interval
        self.samples: list[tuple[float, float, float]] = []  # monotonic, bytes, batches
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SpoolWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> tuple[float, float] | None:
        """(bytes, batches) now; None if the admin port did not answer."""
        try:
            found = metrics(self.admin_url)
        except OSError:
            return None
        size = found.get("tollhouse_spool_bytes", 0.0)
        batches = found.get("tollhouse_spool_batches", 0.0)
        self.samples.append((time.monotonic(), size, batches))
        return size, batches

    def peak(self) -> tuple[int, int]:
        return (
            int(max((s[1] for s in self.samples), default=0)),
            int(max((s[2] for s in self.samples), default=0)),
        )


class LogWatch:
    """When a log line containing ``text`` first arrives after this watch is made (or
    since the process started, with ``from_start``)."""

    def __init__(self, process: TollhouseProcess, text: str, from_start: bool = False) -> None:
        self.process = process
        self.text = text
        self.seen = 0 if from_start else len(process.log)
        self.at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while self.at is None and not self._stop.wait(0.02):
            lines = self.process.log[self.seen :]
            self.seen += len(lines)
            if any(self.text in line for line in lines):
                self.at = time.monotonic()

    def wait(self, timeout: float) -> float | None:
        """The arrival time, waiting up to ``timeout`` seconds for it."""
        self._thread.join(timeout)
        self._stop.set()
        return self.at


class OthersCpu:
    """CPU time used by processes that are not this run's (not this process, its children,
    or PostgreSQL's), sampled every second: how quiet the machine was."""

    def __init__(self) -> None:
        self.first: dict[tuple[int, float], float] = {}
        self.last: dict[tuple[int, float], float] = {}
        self._mine: dict[tuple[int, float], bool] = {}
        self._me = os.getpid()
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._sample(initial=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _ours(self, process: psutil.Process, key: tuple[int, float]) -> bool:
        if key not in self._mine:
            try:
                family = {process.pid, *(parent.pid for parent in process.parents())}
                self._mine[key] = self._me in family or process.username() == "postgres"
            except psutil.Error:
                self._mine[key] = True
        return self._mine[key]

    def _sample(self, initial: bool = False) -> None:
        for process in psutil.process_iter():
            try:
                key = (process.pid, process.create_time())
                if self._ours(process, key):
                    continue
                times = process.cpu_times()
            except psutil.Error:
                continue
            used = times.user + times.system  # processes that end between samples are missed
            self.first.setdefault(key, used if initial else 0.0)
            self.last[key] = used

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def cores(self) -> float:
        """Cores the other processes kept busy on average so far."""
        used = sum(self.last[key] - self.first[key] for key in self.last)
        return round(used / max(1e-9, time.monotonic() - self._started), 2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(5)
        self._sample()
        return self.cores()


# -- the comparison ---------------------------------------------------------------------------


@dataclass
class Check:
    """One quantity: the simulator's figure, the ledger's, the report's, and the difference."""

    measure: str
    expected: int
    ledger: int
    report: int | None
    lost: int
    doubled: int | None
    wrong: int = 0
    note: str = ""
    known: bool = False  # a difference the README lists under Known limits

    @property
    def exact(self) -> bool:
        return self.known or (self.lost == 0 and not self.doubled and self.wrong == 0)


def owners_check(
    measure: str, truth: dict[str, str], seen: dict[str, str], answered: set[str] | None = None
) -> Check:
    """Owners by id. With ``answered`` (the ids whose creates the client saw answered),
    objects missing from the ledger that the client never got an answer for are told
    apart: creates cut off by a crash, which the README lists as a known limit."""
    missing = set(truth) - set(seen)
    wrong = sum(seen[i] != truth[i] for i in set(truth) & set(seen))
    check = Check(measure, len(truth), len(set(truth) & set(seen)), None, len(missing), None)
    check.wrong = wrong + len(set(seen) - set(truth))
    if answered is not None and missing:
        unanswered = {i for i in missing if i not in answered and not i.startswith("run_")}
        if unanswered == missing and not check.wrong:
            check.known = True
            check.note = f"{len(missing)} created upstream while the process died, never answered"
    return check


def compare(truth: UpstreamRecord, seen: UpstreamRecord, document: dict[str, Any]) -> list[Check]:
    """The ledger (``seen``) and a report by model (``document``) against the simulator."""
    checks = []
    tokens_reported, tools_reported = reported(document)
    expected_runs, ledger_runs = set(truth.runs), set(seen.runs)
    report_runs = int(document["totals"]["runs"])
    checks.append(
        Check(
            "runs",
            len(expected_runs),
            len(ledger_runs),
            report_runs,
            lost=max(len(expected_runs - ledger_runs), len(expected_runs) - report_runs),
            doubled=max(len(ledger_runs - expected_runs), report_runs - len(expected_runs)),
            wrong=sum(seen.runs[i] != truth.runs[i] for i in expected_runs & ledger_runs),
        )
    )
    expected_tokens = truth.tokens()
    ledger_tokens = seen.tokens()
    for model in sorted({model for _, model in expected_tokens | tokens_reported}):
        keys = {k for k in expected_tokens | tokens_reported | ledger_tokens if k[1] == model}

        def total(table: dict[tuple[str, str], Any], key: tuple[str, str]) -> int:
            found = table.get(key)
            return 0 if found is None else int(found[1]) + int(found[2])

        lost = doubled = 0
        for key in keys:
            upstream = total(expected_tokens, key)
            recorded = [total(ledger_tokens, key), total(tokens_reported, key)]
            lost += max(0, *(upstream - r for r in recorded))
            doubled += max(0, *(r - upstream for r in recorded))
        checks.append(
            Check(
                f"tokens {model}",
                sum(total(expected_tokens, k) for k in keys),
                sum(total(ledger_tokens, k) for k in keys),
                sum(total(tokens_reported, k) for k in keys),
                lost,
                doubled,
            )
        )
    # The report counts File Search calls, and Code Interpreter sessions rather than calls.
    file_search_reported = sum(fs for _, fs in tools_reported.values())
    for kind, label, in_report in (
        ("code_interpreter", "Code Interpreter calls", None),
        ("file_search", "File Search calls", file_search_reported),
    ):
        want = {i for i, call in truth.calls.items() if call[0] == kind}
        got = {i for i, call in seen.calls.items() if call[0] == kind}
        gap = 0 if in_report is None else len(want) - in_report
        checks.append(
            Check(
                label,
                len(want),
                len(got),
                in_report,
                lost=max(len(want - got), gap),
                doubled=max(len(got - want), -gap),
                wrong=sum(seen.calls[i] != truth.calls[i] for i in want & got),
            )
        )
    sessions_reported = sum(ci for ci, _ in tools_reported.values())
    gap = len(truth.sessions) - sessions_reported
    checks.append(
        Check(
            "Code Interpreter sessions",
            len(truth.sessions),
            len(seen.sessions),
            sessions_reported,
            lost=max(len(truth.sessions - seen.sessions), gap),
            doubled=max(len(seen.sessions - truth.sessions), -gap),
        )
    )
    return checks


def posts_check(engine: Engine, answered: int) -> Check:
    """POST requests counted in the ledger (request counts are added, not upserted, so a
    replayed batch would count them twice) against the POSTs the clients got answers to."""
    with engine.connect() as connection:
        counted = connection.execute(
            select(func.sum(col(RequestCount.count))).where(
                col(RequestCount.tenant).in_(TENANTS), col(RequestCount.request_class) == "POST"
            )
        ).scalar()
    counted = int(counted or 0)
    return Check(
        "POST requests counted",
        answered,
        counted,
        None,
        max(0, answered - counted),
        max(0, counted - answered),
    )


def caught_up(engine: Engine, truth: UpstreamRecord) -> UpstreamRecord | None:
    """The ledger once every run of the record is in it with its usage, and every tool call."""
    seen = ledger_record(engine)
    complete = seen.runs.keys() >= truth.runs.keys() and seen.calls.keys() >= truth.calls.keys()
    return seen if complete else None


def settle_ledger(
    engine: Engine, truth: UpstreamRecord, timeout: float
) -> tuple[UpstreamRecord, float | None]:
    """Wait (bounded) for the ledger to hold the record; what it holds, and how long it took."""
    started = time.monotonic()
    seen = wait_until(lambda: caught_up(engine, truth), timeout, interval=0.25)
    if seen is None:
        return ledger_record(engine), None
    return seen, time.monotonic() - started


def full_comparison(
    database_url: str,
    truth: UpstreamRecord,
    seen: UpstreamRecord,
    creates: dict[str, str] | None = None,
    answered: set[str] | None = None,
) -> list[Check]:
    """Everything ``compare`` checks, the owners of the creates the clients saw answered
    (``creates``: id -> tenant) and every object's owner; ``answered`` (after a crash)
    tells creates cut off by it apart, see ``owners_check``."""
    checks = compare(truth, seen, report(database_url, "--group-by", "model"))
    if creates is not None:
        engine = engine_from_url(database_url)
        try:
            recorded = dict(ledger.owners(engine, creates))
        finally:
            engine.dispose()
        checks.append(owners_check("owners of answered creates", creates, recorded))
    checks.append(owners_check("owners", truth.owners, seen.owners, answered))
    return checks


# -- the scenarios ----------------------------------------------------------------------------


@dataclass
class Outcome:
    name: str
    title: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0


def answered_ids(answers: list[Answer]) -> dict[str, str]:
    return {a.object_id: a.tenant for a in answers if a.status == 200 and a.object_id}


def window(answers: list[Answer], start: float, end: float) -> list[Answer]:
    return [a for a in answers if start <= a.at < end]


def create_figures(answers: list[Answer]) -> dict[str, Any]:
    statuses = Counter(str(a.status) if a.status else f"no answer ({a.code})" for a in answers)
    return {
        "sent": len(answers),
        "answered_2xx": sum(200 <= a.status < 300 for a in answers),
        "non_2xx": sum(not 200 <= a.status < 300 for a in answers),
        "statuses": dict(statuses),
        "latency_ms": latency_ms([a.seconds for a in answers]),
    }


def replicas(lab: Lab, args: argparse.Namespace, out: Outcome) -> None:
    url = lab.database("replicas", migrated=True)  # before three replicas start at once
    with ExitStack() as stack:
        sim = stack.enter_context(simulator())
        upstream = ("--upstream", sim.url + "/v1")
        processes = [  # each with its own spool, and so its own running marker
            stack.enter_context(tollhouse_process(*upstream, env=lab.env(url, f"replica{n}")))
            for n in range(3)
        ]
        urls = [p.url for p in processes]
        conversations, _ = setup_tenants(urls, per_tenant=args.conversations)
        failures: Counter[str] = Counter()
        started = time.monotonic()

        def talk(conversation: Conversation, seed: int) -> int:
            rng = random.Random(seed)
            with tenant_client(urls, conversation.tenant, seed) as client:
                for _ in range(args.runs):
                    one_run(client, rng, conversation)
                    client.beta.threads.messages.create(
                        conversation.thread_id, role="user", content="and again?"
                    )
                run = client.beta.threads.create_and_run_poll(
                    assistant_id=conversation.assistant_id,
                    thread={
                        "metadata": {"tenant": conversation.tenant},
                        "messages": [{"role": "user", "content": "once more"}],
                    },
                    poll_interval_ms=int(POLL * 1000),
                )
                client.beta.threads.runs.steps.list(run.id, thread_id=run.thread_id)
            return int(args.runs) + 1

        runs = 0
        with ThreadPoolExecutor(len(conversations)) as pool:
            futures = [pool.submit(talk, c, seed) for seed, c in enumerate(conversations)]
            for future in futures:
                try:
                    runs += future.result()
                except CUT_OFF as exc:
                    failures[type(exc).__name__] += 1
        ended = time.monotonic()
        truth = record(sim, settle=0)  # every run was followed to its end
        engine = engine_from_url(url)
        try:
            seen, _ = settle_ledger(engine, truth, timeout=60)
            took = time.monotonic() - ended if caught_up(engine, truth) else None
        finally:
            engine.dispose()
        out.checks = full_comparison(url, truth, seen)
        out.figures = {
            "replicas": len(processes),
            "conversations": len(conversations),
            "runs_by_clients": runs,
            "client_errors": dict(failures),
            "traffic_s": round(ended - started, 1),
            "ledger_complete_after_traffic_s": None if took is None else round(took, 2),
        }


def under_load(
    lab: Lab, args: argparse.Namespace, name: str, stack: ExitStack
) -> tuple[str, ServerThread, TollhouseProcess, list[Conversation], int]:
    url = lab.database(name)
    sim = stack.enter_context(simulator())
    proxy = stack.enter_context(
        tollhouse_process("--upstream", sim.url + "/v1", env=lab.env(url, name))
    )
    conversations, posts = setup_tenants([proxy.url], per_tenant=args.run_clients)
    return url, sim, proxy, conversations, posts


def outage(lab: Lab, args: argparse.Namespace, out: Outcome) -> None:
    with ExitStack() as stack:
        url, sim, proxy, conversations, posts = under_load(lab, args, "outage", stack)
        watch = SpoolWatch(proxy.admin_url).start()
        stack.callback(watch.stop)
        creates = Creates(proxy.url)
        stack.callback(creates.close)
        runs = RunLoad([proxy.url], conversations).start()
        stack.callback(runs.stop)
        paced = Paced(args.rate, creates).start()
        stack.callback(paced.stop)
        time.sleep(args.warmup)
        down_from = time.monotonic()
        lab.cluster.stop()
        down = time.monotonic()
        time.sleep(args.outage_seconds)
        watch.sample()  # the spool only grows while the database is away: its peak
        replayed = LogWatch(proxy, REPLAYED)
        up_from = time.monotonic()
        lab.cluster.start()
        up = time.monotonic()
        time.sleep(args.after)
        answers = paced.stop()
        runs.stop()
        drained_at = replayed.wait(args.drain_timeout)
        left = watch.sample()
        truth = record(sim)
        engine = engine_from_url(url)
        try:
            seen, _ = settle_ledger(engine, truth, timeout=60)
            posts_answered = posts + sum(a.status > 0 for a in answers)
            out.checks = [
                *full_comparison(url, truth, seen, answered_ids(answers)),
                posts_check(engine, posts_answered),
            ]
        finally:
            engine.dispose()
        peak_bytes, peak_batches = watch.peak()
        out.figures = {
            "rate_per_s": args.rate,
            "outage_s": round(up_from - down, 1),
            "creates_before": create_figures(window(answers, 0, down_from)),
            "creates_during_outage": create_figures(window(answers, down_from, up)),
            "creates_after": create_figures(window(answers, up, float("inf"))),
            "runs_by_clients": runs.runs,
            "run_client_errors": dict(runs.errors),
            "spool_peak_bytes": peak_bytes,
            "spool_peak_batches": peak_batches,
            "spool_drained_after_restart_s": (
                None if drained_at is None else round(drained_at - up, 2)
            ),
            "spool_left_at_end": left,
            "postgresql_restart_s": round(up - up_from, 1),
        }


def freeze(lab: Lab, args: argparse.Namespace, out: Outcome) -> None:
    with ExitStack() as stack:
        url, sim, proxy, conversations, posts = under_load(lab, args, "freeze", stack)
        # Threads created through another replica: this process has never seen them, so
        # their lookups have to ask the ledger.
        elsewhere: list[tuple[str, str]] = []
        wanted = int(args.lookup_rate * (args.freeze_seconds + 2)) + len(TENANTS)
        with tollhouse_process(
            "--upstream", sim.url + "/v1", env=lab.env(url, "freeze-other")
        ) as other:
            for number in range(wanted):
                tenant = TENANTS[number % len(TENANTS)]
                with plain_client(other.url, tenant) as client:
                    thread = client.beta.threads.create(metadata={"tenant": tenant})
                elsewhere.append((tenant, thread.id))
        watch = SpoolWatch(proxy.admin_url).start()
        stack.callback(watch.stop)
        creates, lookups = Creates(proxy.url), Lookups(proxy.url, elsewhere)
        stack.callback(creates.close)
        stack.callback(lookups.close)
        runs = RunLoad([proxy.url], conversations).start()
        stack.callback(runs.stop)
        paced = Paced(args.rate, creates).start()
        stack.callback(paced.stop)
        time.sleep(args.warmup)
        frozen_at = time.monotonic()
        with frozen(lab.cluster):
            looking = Paced(args.lookup_rate, lookups).start()
            stack.callback(looking.stop)
            time.sleep(args.freeze_seconds)
            watch.sample()  # the spool only grows while the database is frozen: its peak
            replayed = LogWatch(proxy, REPLAYED)
        thawed = time.monotonic()
        looked = looking.stop()  # lookups still waiting on the ledger get their answers
        time.sleep(args.after)
        answers = paced.stop()
        runs.stop()
        drained_at = replayed.wait(args.drain_timeout)
        left = watch.sample()
        truth = record(sim)
        engine = engine_from_url(url)
        try:
            seen, _ = settle_ledger(engine, truth, timeout=60)
            posts_answered = posts + wanted + sum(a.status > 0 for a in answers)
            out.checks = [
                *full_comparison(url, truth, seen, answered_ids(answers)),
                posts_check(engine, posts_answered),
            ]
        finally:
            engine.dispose()
        refused = [a for a in looked if a.status == 503 and a.code == "ledger_unavailable"]
        peak_bytes, peak_batches = watch.peak()
        out.figures = {
            "rate_per_s": args.rate,
            "freeze_s": round(thawed - frozen_at, 1),
            "creates_before": create_figures(window(answers, 0, frozen_at)),
            "creates_during_freeze": create_figures(window(answers, frozen_at, thawed)),
            "creates_after": create_figures(window(answers, thawed, float("inf"))),
            "uncached_lookups": create_figures(looked),
            "ledger_unavailable_503": len(refused),
            "ledger_unavailable_latency_ms": latency_ms([a.seconds for a in refused]),
            "runs_by_clients": runs.runs,
            "run_client_errors": dict(runs.errors),
            "spool_peak_bytes": peak_bytes,
            "spool_peak_batches": peak_batches,
            "spool_drained_after_thaw_s": (
                None if drained_at is None else round(drained_at - thawed, 2)
            ),
            "spool_left_at_end": left,
        }


RECOVERED = re.compile(r"recovery after the unclean stop done: (\d+) threads, (\d+) runs")


def kill(lab: Lab, args: argparse.Namespace, out: Outcome) -> None:
    url = lab.database("kill")
    with ExitStack() as stack:
        sim = stack.enter_context(simulator())
        env = lab.env(url, "kill")  # the same ledger, spool and running marker for both
        upstream = ("--upstream", sim.url + "/v1")
        with ExitStack() as first_stack:
            first = first_stack.enter_context(tollhouse_process(*upstream, env=env))
            conversations, _ = setup_tenants([first.url], per_tenant=args.run_clients)
            creates = Creates(first.url)
            first_stack.callback(creates.close)
            last_one, working = conversations[0], conversations[1:]
            runs = RunLoad([first.url], working, halt_on_error=True).start()
            first_stack.callback(runs.stop)
            paced = Paced(args.rate, creates).start()
            first_stack.callback(paced.stop)
            time.sleep(args.load_seconds)
            # The last run: created upstream and answered, then the process dies at once.
            with tenant_client([first.url], last_one.tenant, 0) as client:
                last = client.beta.threads.runs.create(
                    thread_id=last_one.thread_id, assistant_id=last_one.assistant_id
                )
                first.process.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            exit_status = first.process.wait(10)
            answers = paced.stop()
            runs.stop()
        truth = record(sim)  # nothing reaches the upstream any more; runs finish
        engine = engine_from_url(url)
        stack.callback(engine.dispose)
        before = ledger_record(engine)
        restarted = time.monotonic()
        second = stack.enter_context(tollhouse_process(*upstream, env=env))
        listening = time.monotonic() - restarted
        recovery = LogWatch(second, "recovery after the unclean stop done", from_start=True)
        seen, _ = settle_ledger(engine, truth, timeout=args.drain_timeout)
        complete = caught_up(engine, truth) is not None
        complete_after = time.monotonic() - restarted
        recovered_at = recovery.wait(timeout=60)
        recovered_after = None if recovered_at is None else recovered_at - restarted
        found = next((m for line in second.log if (m := RECOVERED.search(line))), None)
        seen = ledger_record(engine)
        answered = set(answered_ids(answers))
        answered |= {c.thread_id for c in conversations} | {c.assistant_id for c in conversations}
        out.checks = full_comparison(url, truth, seen, answered_ids(answers), answered)
        out.checks.insert(
            1,
            Check(
                "the run created just before the kill",
                1,
                int(last.id in seen.runs),
                None,
                lost=int(last.id not in seen.runs),
                doubled=0,
                wrong=int(last.id in seen.runs and seen.runs[last.id] != truth.runs[last.id]),
            ),
        )
        second.signal(signal.SIGTERM)
        stopped = second.process.wait(60)
        out.figures = {
            "rate_per_s": args.rate,
            "load_before_kill_s": args.load_seconds,
            "kill_exit_status": exit_status,
            "runs_finished_by_clients_before_kill": runs.runs,
            "runs_upstream": len(truth.runs),
            "runs_in_ledger_at_kill": len(before.runs),
            "last_run_in_ledger_before_restart": last.id in before.runs,
            "creates": create_figures(answers),
            "creates_cut_by_kill": sum(not 200 <= a.status < 300 for a in answers),
            "kill_to_restart_s": round(restarted - killed, 2),
            "restart_listening_s": round(listening, 2),
            "ledger_complete_after_restart_s": round(complete_after, 2) if complete else None,
            "recovery_done_after_restart_s": (
                None if recovered_after is None else round(recovered_after, 2)
            ),
            "recovered_threads": int(found.group(1)) if found else None,
            "recovered_runs": int(found.group(2)) if found else None,
            "restarted_process_sigterm_exit": stopped,
        }


def drain_open_streams(
    proxy: TollhouseProcess, gate: threading.Event, hold: float, futures: list[Future[str]]
) -> dict[str, Any]:
    """SIGTERM while every stream is held open upstream; the upstream lets them go on
    ``hold`` seconds later. What the drain looked like from outside."""
    signalled = time.monotonic()
    proxy.signal(signal.SIGTERM)
    draining = proxy.wait_for_log("SIGTERM: draining", timeout=10)
    try:
        with urllib.request.urlopen(proxy.admin_url + "/readyz", timeout=5) as answer:
            readyz = answer.status
    except urllib.error.HTTPError as exc:
        readyz = exc.code
    except OSError:
        readyz = 0
    time.sleep(max(0.0, signalled + 0.5 - time.monotonic()))
    try:  # a new request half a second into the drain
        with plain_client(proxy.url, TENANTS[0]) as client:
            client.beta.assistants.list(timeout=5)
        new_request = "answered"
    except openai.APIStatusError as exc:
        new_request = f"answered {exc.status_code}"
    except CUT_OFF:
        new_request = "refused"  # the listening socket is closed
    time.sleep(hold)
    gate.set()
    outcomes: Counter[str] = Counter()
    for future in futures:
        try:
            outcomes[future.result(timeout=60)] += 1
        except CUT_OFF as exc:
            outcomes[f"cut ({type(exc).__name__})"] += 1
    exit_code = proxy.process.wait(60)
    return {
        "streams_completed": outcomes.get("completed", 0),
        "stream_outcomes": dict(outcomes),
        "held_open_after_sigterm_s": hold,
        "draining_logged": draining,
        "readyz_while_draining": readyz,
        "new_request_while_draining": new_request,
        "exit_code": exit_code,
        "sigterm_to_exit_s": round(time.monotonic() - signalled, 2),
    }


def sigterm(lab: Lab, args: argparse.Namespace, out: Outcome) -> None:
    url = lab.database("sigterm")
    gate = threading.Event()  # streams hold after their first event until it is set
    with ExitStack() as stack:
        sim = stack.enter_context(simulator(gate))
        proxy = stack.enter_context(
            tollhouse_process("--upstream", sim.url + "/v1", env=lab.env(url, "sigterm"))
        )
        conversations, _ = setup_tenants([proxy.url], per_tenant=args.streams)
        opened = threading.Semaphore(0)

        def stream(conversation: Conversation, seed: int) -> str:
            with (
                tenant_client([proxy.url], conversation.tenant, seed) as client,
                client.beta.threads.runs.stream(
                    thread_id=conversation.thread_id, assistant_id=conversation.assistant_id
                ) as events,
            ):
                for event in events:
                    if event.event == "thread.run.created":
                        opened.release()
                return events.get_final_run().status

        with ThreadPoolExecutor(len(conversations)) as pool:
            futures = [pool.submit(stream, c, n) for n, c in enumerate(conversations)]
            try:
                open_streams = sum(opened.acquire(timeout=30) for _ in conversations)
                drained = drain_open_streams(proxy, gate, args.hold, futures)
            finally:
                gate.set()  # never leave a stream held, whatever happened
        truth = record(sim, settle=0)
        engine = engine_from_url(url)
        try:
            seen = ledger_record(engine)
        finally:
            engine.dispose()
        out.checks = full_comparison(url, truth, seen)
        out.figures = {
            "streams_open_at_sigterm": open_streams,
            **drained,
            "runs_with_usage_recorded": len(set(seen.runs) & set(truth.runs)),
        }


RUNNERS: dict[str, tuple[str, Callable[[Lab, argparse.Namespace, Outcome], None]]] = {
    "replicas": ("three replicas on one PostgreSQL, requests spread at random", replicas),
    "outage": ("PostgreSQL stopped under load, then started again", outage),
    "freeze": ("PostgreSQL frozen (SIGSTOP) under load", freeze),
    "kill": ("tollhouse serve SIGKILLed under load, restarted", kill),
    "sigterm": ("SIGTERM during open streams", sigterm),
}


# -- output -----------------------------------------------------------------------------------


def print_checks(checks: list[Check]) -> None:
    print(f"  {'':36} {'expected':>9} {'ledger':>9} {'report':>9} {'lost':>6} {'doubled':>8}")
    for check in checks:
        cells = [
            f"{check.expected:>9,}",
            f"{check.ledger:>9,}",
            f"{'-' if check.report is None else format(check.report, ','):>9}",
            f"{check.lost:>6,}",
            f"{'-' if check.doubled is None else format(check.doubled, ','):>8}",
        ]
        flags = []
        if check.wrong:
            flags.append(f"{check.wrong} recorded differently")
        if check.note:
            flags.append(check.note + (" (known limit)" if check.known else ""))
        print(f"  {check.measure:36} {' '.join(cells)}  {'; '.join(flags)}".rstrip())


def summary(outcome: Outcome) -> str:
    """The scenario's fault figures in a line."""
    f = outcome.figures
    if outcome.error is not None:
        return f"FAILED: {outcome.error.strip().splitlines()[-1]}"
    if outcome.name == "replicas":
        return (
            f"{f['replicas']} replicas, {f['conversations']} conversations, "
            f"{f['runs_by_clients']} runs in {f['traffic_s']} s; ledger complete "
            f"{f['ledger_complete_after_traffic_s']} s after the traffic"
        )
    if outcome.name in ("outage", "freeze"):
        stop = outcome.name == "outage"
        during = f["creates_during_outage" if stop else "creates_during_freeze"]
        line = (
            f"{during['sent']} creates during the {f['outage_s' if stop else 'freeze_s']} s "
            f"{'stop' if stop else 'freeze'}: {during['non_2xx']} non-2xx, p50/p99/max "
            f"{show_ms(during['latency_ms'])}; spool peak {f['spool_peak_bytes']:,} B / "
            f"{f['spool_peak_batches']:,} batches, empty "
            f"{f['spool_drained_after_restart_s' if stop else 'spool_drained_after_thaw_s']} s "
            "after PostgreSQL was back"
        )
        if not stop:
            lookups = f["uncached_lookups"]
            line += (
                f"; {lookups['sent']} uncached lookups: {f['ledger_unavailable_503']} answered "
                f"503 ledger_unavailable (p50/p99/max "
                f"{show_ms(f['ledger_unavailable_latency_ms'])}), "
                f"{lookups['statuses'].get('200', 0)} answered 200 after the thaw; all lookups "
                f"p50/p99/max {show_ms(lookups['latency_ms'])}"
            )
        return line
    if outcome.name == "kill":
        return (
            f"SIGKILL after {f['load_before_kill_s']:g} s of load ({f['runs_upstream']} runs "
            f"upstream, {f['runs_in_ledger_at_kill']} in the ledger at the kill, "
            f"{f['creates_cut_by_kill']} creates cut off); restarted: listening after "
            f"{f['restart_listening_s']} s, ledger complete after "
            f"{f['ledger_complete_after_restart_s']} s, recovery done after "
            f"{f['recovery_done_after_restart_s']} s"
        )
    return (
        f"{f['streams_completed']} of {f['streams_open_at_sigterm']} open streams completed "
        f"after SIGTERM; /readyz {f['readyz_while_draining']}, a new connection "
        f"{f['new_request_while_draining']}; exit code {f['exit_code']} after "
        f"{f['sigterm_to_exit_s']} s"
    )


def print_table(outcomes: list[Outcome]) -> None:
    print("\n== summary ==")
    for outcome in outcomes:
        print(
            f"{outcome.name:9} {summary(outcome)} [{outcome.seconds:g} s; other processes: "
            f"{outcome.figures.get('other_processes_cpu_cores')} cores]"
        )
    print(
        f"\n{'scenario':9} {'measure':36} {'expected':>9} {'recorded':>9} {'report':>9} "
        f"{'lost':>6} {'doubled':>8}"
    )
    for outcome in outcomes:
        for check in outcome.checks:
            report_cell = "-" if check.report is None else f"{check.report:,}"
            doubled = "-" if check.doubled is None else f"{check.doubled:,}"
            mark = (
                ""
                if check.exact and not check.known
                else ("  known limit" if check.known else "  <-")
            )
            if check.wrong:
                mark += f"  ({check.wrong} differ)"
            print(
                f"{outcome.name:9} {check.measure:36} {check.expected:>9,} {check.ledger:>9,} "
                f"{report_cell:>9} {check.lost:>6,} {doubled:>8}{mark}"
            )


# -- main -------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; default: all, in order)",
    )
    parser.add_argument("--outage-seconds", type=float, default=60.0, help="PostgreSQL stopped")
    parser.add_argument("--freeze-seconds", type=float, default=20.0, help="PostgreSQL frozen")
    parser.add_argument("--rate", type=float, default=30.0, help="creates a second under load")
    parser.add_argument(
        "--run-clients", type=int, default=2, help="clients per tenant running runs under load"
    )
    parser.add_argument("--lookup-rate", type=float, default=2.0, help="uncached lookups / s")
    parser.add_argument(
        "--conversations", type=int, default=4, help="replicas: conversations per tenant"
    )
    parser.add_argument("--runs", type=int, default=12, help="replicas: runs per conversation")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="kill: load before it")
    parser.add_argument("--streams", type=int, default=4, help="sigterm: open streams per tenant")
    parser.add_argument("--hold", type=float, default=3.0, help="sigterm: streams held after it")
    parser.add_argument("--warmup", type=float, default=5.0, help="load before a fault")
    parser.add_argument("--after", type=float, default=10.0, help="load after a fault ends")
    parser.add_argument(
        "--drain-timeout", type=float, default=120.0, help="longest wait for the ledger to catch up"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    args = parser.parse_args()
    args.scenario = args.scenario or list(SCENARIOS)
    return args


def preflight() -> str | None:
    if os.geteuid() != 0:
        return "run as root: the PostgreSQL cluster runs as the user postgres"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")):
        return "PostgreSQL's binaries are missing (apt-get install -y postgresql)"
    return None


def main() -> int:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the Assistants API's
    args = parse_args()
    problem = preflight()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    began = time.monotonic()
    outcomes: list[Outcome] = []
    with ExitStack() as stack:
        lab = Lab(stack)
        for name in dict.fromkeys(args.scenario):
            title, runner = RUNNERS[name]
            outcome = Outcome(name, title)
            print(f"\n== {name}: {title} ==", flush=True)
            started, others = time.monotonic(), OthersCpu()
            try:
                runner(lab, args, outcome)
            except Exception:  # noqa: BLE001 - a scenario that breaks is reported; the rest run
                outcome.error = traceback.format_exc()
                print(outcome.error, file=sys.stderr)
            outcome.seconds = round(time.monotonic() - started, 1)
            outcome.figures["other_processes_cpu_cores"] = others.stop()
            print(json.dumps(outcome.figures, indent=2))
            print_checks(outcome.checks)
            print(f"  ({outcome.seconds} s)", flush=True)
            outcomes.append(outcome)
            if not lab.cluster.running:  # a scenario that failed mid-outage
                lab.cluster.start()
    elapsed = time.monotonic() - began
    print_table(outcomes)
    print(f"\nwhole run: {elapsed:.0f} s")
    if args.json is not None:
        document = {
            "scenarios": {
                o.name: {
                    "title": o.title,
                    "figures": o.figures,
                    "checks": [asdict(c) | {"exact": c.exact} for c in o.checks],
                    "error": o.error,
                    "seconds": o.seconds,
                }
                for o in outcomes
            },
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "elapsed_s": round(elapsed, 1),
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if any(o.error for o in outcomes):
        return 1
    return 0 if all(c.exact for o in outcomes for c in o.checks) else 3


if __name__ == "__main__":
    sys.exit(main())

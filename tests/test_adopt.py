"""``tollhouse adopt`` on the simulator: who gets what, first owner wins, dry run, resume, pacing.

Objects are made on the simulator with the openai client, as an app did before tollhouse
was in front of it; adopt runs on a real ledger (SQLite and PostgreSQL), in process with
a clock that moves only when the pacing sleeps, or as the command an operator runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from tests.servers import ServerThread, serve
from tests.services import free_port
from tests.upstreams import Clock, own
from tollhouse.api.classify import Kind
from tollhouse.cleanup.adopt import (
    AdoptClient,
    Adopter,
    AdoptError,
    Attribution,
    Outcome,
    Report,
    Rules,
    ThreadLine,
    attribute,
    parse_threads,
)
from tollhouse.config.policy import Policy
from tollhouse.ledger.engine import engine_from_url, migrate
from tollhouse.ledger.models import OwnedObject
from tollhouse.quota.admission import Quota
from tollhouse.quota.memory import MemoryBuckets
from tollhouse.upstream.forward import Forwarder, UpstreamError, UpstreamSettings
from tollhouse_simulator import SimulatorConfig, create_app

TENANTS = frozenset({"acme", "globex"})
RULES = Rules(tenant="acme", tenants=TENANTS)
POLICY = """
identify: {mode: header}
tenants: {acme: {}, globex: {}}
organization:
  GET: {requests_per_unit: 600000}
"""


class Gets:
    """The simulator behind an ASGI wrapper that logs GETs and fails the n-th GET of a path."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.log: list[tuple[str, str]] = []  # (path, query) of every GET
        self.fail: dict[str, int] = {}  # path -> which of its GETs gets a 500, once

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "GET":
            path = scope["path"]
            self.log.append((path, scope["query_string"].decode()))
            if self.fail.get(path) == sum(1 for p, _ in self.log if p == path):
                del self.fail[path]
                body = json.dumps({"error": {"message": "injected", "type": "server_error"}})
                headers = [(b"content-type", b"application/json")]
                await send({"type": "http.response.start", "status": 500, "headers": headers})
                await send({"type": "http.response.body", "body": body.encode()})
                return
        await self.app(scope, receive, send)

    def gets(self, path: str) -> list[str]:
        return [query for p, query in self.log if p == path]


@pytest.fixture
def upstream() -> Iterator[tuple[ServerThread, Gets]]:
    gets = Gets(create_app(SimulatorConfig(file_processing_seconds=0)))
    with serve(gets) as server:
        yield server, gets


@dataclass
class World:
    """What was made upstream, and who should own it after adopt with ``RULES``."""

    expected: dict[str, tuple[str, str, bool]] = field(default_factory=dict)  # kind, tenant, keep
    created_at: dict[str, int] = field(default_factory=dict)
    unowned: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    threads: str = ""


def build(server: ServerThread, assistants: int = 130) -> World:
    """Assistants beyond one page, vector stores, files and threads, tagged every way there is."""
    world = World()
    tags = ["acme", "globex", None]
    with openai.OpenAI(base_url=server.url + "/v1", api_key="sk-test", max_retries=0) as client:
        for n in range(assistants):
            tag = tags[n % 3]
            meta = {} if tag is None else {"tollhouse_tenant": tag}
            made = client.beta.assistants.create(model="gpt-4o", metadata=meta)
            world.created_at[made.id] = made.created_at
            world.expected[made.id] = ("assistant", tag or "acme", False)  # --tenant acme
        odd = client.beta.assistants.create(model="gpt-4o", metadata={"tollhouse_tenant": "x"})
        world.unknown.append(odd.id)
        kept = client.vector_stores.create(
            metadata={"tollhouse_tenant": "globex", "tollhouse_keep": "true"}
        )
        plain = client.vector_stores.create()
        file = client.files.create(file=("a.txt", b"hello"), purpose="assistants")
        world.expected |= {
            kept.id: ("vector_store", "globex", True),
            plain.id: ("vector_store", "acme", False),
            file.id: ("file", "acme", False),
        }
        by_meta = client.beta.threads.create(metadata={"tollhouse_tenant": "globex"})
        by_line = client.beta.threads.create()
        by_flag = client.beta.threads.create()
        misnamed = client.beta.threads.create()
        world.expected |= {
            by_meta.id: ("thread", "globex", False),
            by_line.id: ("thread", "globex", False),
            by_flag.id: ("thread", "acme", False),
        }
        world.unknown.append(misnamed.id)
        for made_at in (kept, plain, file, by_meta, by_line, by_flag):
            world.created_at[made_at.id] = made_at.created_at
    world.threads = "\n".join(
        [
            "# threads of the old app",
            f"{by_meta.id} acme   # metadata wins over the line",
            "",
            f"{by_line.id}\tglobex",
            by_flag.id,
            f"{misnamed.id} initech",
            "thread_gone",
        ]
    )
    return world


def adopt(
    server: ServerThread,
    engine: Engine,
    world: World,
    apply: bool = True,
    checkpoint: Path | None = None,
    rules: Rules = RULES,
    clock: Clock | None = None,
    share: float = 0.25,
) -> Report:
    """One run in process, paced on ``clock`` (by default a fresh one at the real time)."""
    clock = clock or Clock(time.time())
    threads = parse_threads(world.threads, "threads.txt")

    async def run() -> Report:
        forwarder = Forwarder(UpstreamSettings(url=server.url + "/v1"))
        quota = Quota(MemoryBuckets(clock), Policy())
        client = AdoptClient(forwarder, quota, "sk-test", share, sleep=clock.sleep)
        await forwarder.open()
        try:
            return await Adopter(engine, client, rules, clock=clock).run(threads, apply, checkpoint)
        finally:
            await forwarder.close()

    return asyncio.run(run())


def ledger_rows(engine: Engine) -> dict[str, OwnedObject]:
    with Session(engine) as session:
        return {row.id: row for row in session.exec(select(OwnedObject)).all()}


def owners(engine: Engine) -> dict[str, tuple[str, str, bool]]:
    return {i: (r.kind, r.tenant, r.keep) for i, r in ledger_rows(engine).items()}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", []),
        ("# only a comment\n\n   \n", []),
        ("thread_a", [ThreadLine(1, "thread_a")]),
        ("\n thread_a  acme \n", [ThreadLine(2, "thread_a", "acme")]),
        ("thread_a\tacme # why\n#thread_b\nthread_c", [ThreadLine(1, "thread_a", "acme"),
                                                        ThreadLine(3, "thread_c")]),
        ("thread_a#acme", [ThreadLine(1, "thread_a")]),
    ],
)  # fmt: skip
def test_the_threads_file(text: str, expected: list[ThreadLine]) -> None:
    assert parse_threads(text, "t.txt") == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("thread_a acme globex", "t.txt:1: expected a thread id and at most a tenant"),
        ("\n../files/x", "t.txt:2: '../files/x' is not a thread id"),
        ("thread_a\n\nthread_a globex", "t.txt:3: thread thread_a is already on line 1"),
    ],
)
def test_a_bad_threads_file_is_refused_by_line(text: str, message: str) -> None:
    with pytest.raises(AdoptError, match=message.replace(".", r"\.")):
        parse_threads(text, "t.txt")


TAGGED = {"id": "x", "metadata": {"tollhouse_tenant": "globex"}}
OPEN = Rules(tenant="acme")  # no policy tenants: any usable name


@pytest.mark.parametrize(
    ("doc", "kind", "rules", "owner", "line", "expected"),
    [
        (TAGGED, Kind.ASSISTANT, RULES, None, None,
         Attribution(Outcome.ATTRIBUTED, "globex", "metadata.tollhouse_tenant")),
        (TAGGED, Kind.THREAD, RULES, None, "acme",
         Attribution(Outcome.ATTRIBUTED, "globex", "metadata.tollhouse_tenant")),
        ({"id": "x", "metadata": {}}, Kind.THREAD, RULES, None, "globex",
         Attribution(Outcome.ATTRIBUTED, "globex", "the threads file")),
        ({"id": "x", "metadata": {"tollhouse_tenant": " "}}, Kind.THREAD, RULES, None, None,
         Attribution(Outcome.ATTRIBUTED, "acme", "--tenant")),
        (TAGGED, Kind.FILE, RULES, None, None,  # files carry no metadata to trust
         Attribution(Outcome.ATTRIBUTED, "acme", "--tenant")),
        ({"id": "x"}, Kind.VECTOR_STORE, Rules(tenants=TENANTS), None, None,
         Attribution(Outcome.UNOWNED)),
        (TAGGED, Kind.ASSISTANT, Rules(metadata_key="team", tenants=TENANTS), None, None,
         Attribution(Outcome.UNOWNED)),
        ({"id": "x", "metadata": {"tollhouse_tenant": "initech"}}, Kind.ASSISTANT, RULES,
         None, None, Attribution(Outcome.UNKNOWN, "initech", "metadata.tollhouse_tenant")),
        ({"id": "x"}, Kind.THREAD, RULES, None, "initech",  # no falling back to --tenant
         Attribution(Outcome.UNKNOWN, "initech", "the threads file")),
        ({"id": "x", "metadata": {"tollhouse_tenant": "initech"}}, Kind.ASSISTANT, OPEN,
         None, None, Attribution(Outcome.ATTRIBUTED, "initech", "metadata.tollhouse_tenant")),
        ({"id": "x", "metadata": {"tollhouse_tenant": "_org"}}, Kind.ASSISTANT, OPEN,
         None, None, Attribution(Outcome.UNKNOWN, "_org", "metadata.tollhouse_tenant")),
        (TAGGED, Kind.ASSISTANT, RULES, "globex", None, Attribution(Outcome.OWNED, "globex")),
        (TAGGED, Kind.ASSISTANT, RULES, "acme", None,
         Attribution(Outcome.OWNED, "acme", "metadata.tollhouse_tenant says globex")),
    ],
)  # fmt: skip
def test_attribution(
    doc: dict[str, Any],
    kind: Kind,
    rules: Rules,
    owner: str | None,
    line: str | None,
    expected: Attribution,
) -> None:
    assert attribute(doc, kind, rules, owner, line) == expected


def test_dry_run_then_apply_then_again(
    upstream: tuple[ServerThread, Gets], engine: Engine, tmp_path: Path
) -> None:
    server, _ = upstream
    world = build(server)
    first = next(iter(world.expected))  # an acme assistant, already globex's in the ledger
    own(engine, "globex", [(first, Kind.ASSISTANT, world.created_at[first])])
    world.expected[first] = ("assistant", "globex", False)
    before = owners(engine)
    checkpoint = tmp_path / "adopt.json"

    dry = adopt(server, engine, world, apply=False, checkpoint=checkpoint)
    assert owners(engine) == before
    assert not checkpoint.exists()
    assistants, threads = dry.tallies[Kind.ASSISTANT], dry.tallies[Kind.THREAD]
    assert asdict(assistants) == {
        "listed": 131,
        "attributed": {"acme": 43 + 44 - 1, "globex": 43},
        "owned": 1,
        "unowned": 0,
        "unknown": {"x": 1},
        "missing": 0,
    }
    assert asdict(threads) == {
        "listed": 5,
        "attributed": {"acme": 1, "globex": 2},
        "owned": 0,
        "unowned": 0,
        "unknown": {"initech": 1},
        "missing": 1,
    }
    assert dry.tallies[Kind.FILE].attributed == {"acme": 1}
    assert dry.tallies[Kind.VECTOR_STORE].attributed == {"acme": 1, "globex": 1}

    start = time.time()
    applied = adopt(server, engine, world, checkpoint=checkpoint)
    assert applied.tallies == dry.tallies
    assert not checkpoint.exists()  # a finished run leaves none behind
    assert owners(engine) == world.expected
    rows = ledger_rows(engine)
    for object_id, created_at in world.created_at.items():
        assert rows[object_id].created_at == created_at
        if object_id != first:  # counted as used when adopted, not when made
            assert rows[object_id].last_used_at >= int(start)
    assert not set(world.unknown) & set(rows)

    again = adopt(server, engine, world, checkpoint=checkpoint)
    assert owners(engine) == world.expected
    assert again.tallies[Kind.ASSISTANT].owned == 130
    assert again.tallies[Kind.ASSISTANT].attributed == {}
    assert again.tallies[Kind.THREAD].owned == 3


def test_objects_that_name_no_tenant_stay_unowned(
    upstream: tuple[ServerThread, Gets], tmp_path: Path
) -> None:
    server, _ = upstream
    world = build(server, assistants=3)
    engine = engine_from_url(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    report = adopt(server, engine, world, rules=Rules(tenants=TENANTS))
    assert report.tallies[Kind.ASSISTANT].unowned == 1
    assert report.tallies[Kind.FILE].unowned == 1
    assert report.tallies[Kind.THREAD].unowned == 1
    assert {kind for kind, _, _ in owners(engine).values()} == {
        "assistant",
        "vector_store",
        "thread",
    }
    engine.dispose()


def test_an_interrupted_run_continues_to_the_same_end(
    upstream: tuple[ServerThread, Gets], engine: Engine, tmp_path: Path
) -> None:
    server, gets = upstream
    world = build(server)
    checkpoint = tmp_path / "adopt.json"
    gets.fail["/v1/assistants"] = 2  # the second page
    with pytest.raises(UpstreamError, match=r"GET /v1/assistants.*status 500: injected"):
        adopt(server, engine, world, checkpoint=checkpoint)
    saved = json.loads(checkpoint.read_text())
    first_page = gets.gets("/v1/assistants")[0]
    assert first_page == "limit=100&order=asc"
    cursor = saved["cursors"]["assistant"]
    assert gets.gets("/v1/assistants")[1] == f"limit=100&order=asc&after={cursor}"
    assert saved["done"] == []
    assert saved["tallies"]["assistant"]["listed"] == 100
    assert len(owners(engine)) == 100

    gets.fail["/v1/threads/thread_gone"] = 1  # then, on the last thread of the file
    with pytest.raises(UpstreamError, match="thread_gone: status 500"):
        adopt(server, engine, world, checkpoint=checkpoint)
    assert gets.gets("/v1/assistants")[2] == f"limit=100&order=asc&after={cursor}"
    saved = json.loads(checkpoint.read_text())
    assert saved["done"] == ["assistant", "vector_store", "file"]
    assert saved["threads_line"] == 0  # the page of threads was not applied

    log_before = len(gets.log)
    report = adopt(server, engine, world, checkpoint=checkpoint)
    assert report.resumed
    assert not checkpoint.exists()
    assert {p for p, _ in gets.log[log_before:]} == {
        f"/v1/threads/{t.id}" for t in parse_threads(world.threads, "t")
    }
    assert owners(engine) == world.expected

    fresh = engine_from_url(f"sqlite:///{tmp_path}/uninterrupted.db")
    migrate(fresh)
    whole = adopt(server, fresh, world)
    assert owners(fresh) == owners(engine)
    assert whole.tallies == report.tallies
    fresh.dispose()


def test_a_checkpoint_of_other_options_is_refused(
    upstream: tuple[ServerThread, Gets], tmp_path: Path
) -> None:
    server, gets = upstream
    world = build(server, assistants=2)
    engine = engine_from_url(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    checkpoint = tmp_path / "adopt.json"
    gets.fail["/v1/files"] = 1
    with pytest.raises(UpstreamError):
        adopt(server, engine, world, checkpoint=checkpoint)
    assert checkpoint.exists()
    other = Rules(tenant="globex", tenants=TENANTS)
    with pytest.raises(AdoptError, match="another tenant; run with the same options"):
        adopt(server, engine, world, checkpoint=checkpoint, rules=other)
    engine.dispose()


@pytest.mark.parametrize("share", [0.25, 0.5])
def test_requests_keep_to_their_share_of_the_get_limit(
    upstream: tuple[ServerThread, Gets], tmp_path: Path, share: float
) -> None:
    server, gets = upstream
    world = build(server, assistants=3)
    engine = engine_from_url(f"sqlite:///{tmp_path}/ledger.db")
    migrate(engine)
    clock = Clock(1_000_000.0)
    adopt(server, engine, world, clock=clock, share=share)
    # 3 lists and 5 threads; the first GET is free, each later one waits its turn
    assert len(gets.log) == 8
    per_minute = share * 1000 - 1  # the bucket of burst one that keeps within the share
    assert clock.now - 1_000_000.0 == pytest.approx(7 * 60 / per_minute, rel=0.01)
    engine.dispose()


def environment(server_url: str, ledger: str, tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "TOLLHOUSE_UPSTREAM_URL": server_url + "/v1",
        "TOLLHOUSE_UPSTREAM_API_KEY": "sk-test",
        "TOLLHOUSE_DATABASE_URL": ledger,
        "TOLLHOUSE_POLICY_FILE": str(policy),
    }


def command(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tollhouse.cli.adopt", *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        cwd=cwd,
    )


def table(stdout: str) -> dict[str, list[str]]:
    """The summary's rows by their first cell."""
    return {line.split()[0]: line.split()[1:] for line in stdout.splitlines()[2:7]}


def test_the_command(upstream: tuple[ServerThread, Gets], engine: Engine, tmp_path: Path) -> None:
    server, gets = upstream
    world = build(server)
    ledger = engine.url.render_as_string(hide_password=False)
    env = environment(server.url, ledger, tmp_path)
    threads = tmp_path / "threads.txt"
    threads.write_text(world.threads)
    args = ("--threads", str(threads), "--tenant", "acme")

    dry = command(env, tmp_path, *args)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Adopt dry run at ")
    rows = table(dry.stdout)
    assert rows["assistant"] == ["131", "130", "0", "0", "1", "0"]
    assert rows["thread"] == ["5", "3", "0", "0", "1", "1"]
    assert rows["total"] == ["139", "136", "0", "0", "2", "1"]
    assert ["globex", "assistant", "43"] in [line.split() for line in dry.stdout.splitlines()]
    assert "unknown tenants, skipped: 'initech' (1), 'x' (1)" in dry.stdout
    assert "would attribute thread" in dry.stderr
    assert owners(engine) == {}

    gets.fail["/v1/assistants"] = len(gets.gets("/v1/assistants")) + 2  # the second page
    stopped = command(env, tmp_path, *args, "--apply")
    assert stopped.returncode == 1
    assert "adopt stopped: " in stopped.stderr
    assert "status 500: injected; tollhouse-adopt.json keeps the progress" in stopped.stderr
    assert (tmp_path / "tollhouse-adopt.json").exists()
    assert len(owners(engine)) == 100
    dry_again = command(env, tmp_path, *args)
    assert "tollhouse-adopt.json holds an unfinished run: --apply continues it" in dry_again.stdout

    other = command(env, tmp_path, "--threads", str(threads), "--apply")
    assert other.returncode == 1
    assert "another tenant" in other.stderr
    resumed = command(env, tmp_path, *args, "--apply")
    assert resumed.returncode == 0, resumed.stderr
    assert "owners recorded (continued from tollhouse-adopt.json)." in resumed.stdout
    assert table(resumed.stdout)["total"] == ["139", "136", "0", "0", "2", "1"]
    assert not (tmp_path / "tollhouse-adopt.json").exists()
    assert owners(engine) == world.expected

    again = command(env, tmp_path, *args, "--apply", "--restart")
    assert table(again.stdout)["total"] == ["139", "0", "136", "0", "2", "1"]


def test_the_command_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    ledger = f"sqlite:///{tmp_path}/ledger.db"
    env = environment(f"http://127.0.0.1:{free_port()}", ledger, tmp_path)
    no_key = command({k: v for k, v in env.items() if "API_KEY" not in k}, tmp_path)
    assert no_key.returncode == 1
    assert "TOLLHOUSE_UPSTREAM_API_KEY is not set" in no_key.stderr
    stranger = command(env, tmp_path, "--tenant", "initech")
    assert stranger.returncode == 1
    assert "--tenant 'initech' is not a tenant of" in stranger.stderr
    bad = tmp_path / "threads.txt"
    bad.write_text("thread_a acme extra\n")
    refused = command(env, tmp_path, "--threads", str(bad))
    assert refused.returncode == 1
    assert f"{bad}:1: expected a thread id" in refused.stderr
    unreachable = command(env, tmp_path, "--apply")
    assert unreachable.returncode == 1
    assert "adopt stopped: http://127.0.0.1:" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr

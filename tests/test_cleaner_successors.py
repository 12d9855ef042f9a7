"""The cleaner on the successor API's objects: conversations, containers, stored responses and
chat completions, made through tollhouse and swept like threads and vector stores."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread
from tests.test_cleaner import DAY, HEADER, cleaner_for, clock, direct, upstream
from tests.upstreams import Clock, Faults
from tollhouse.config.policy import Policy, parse_policy
from tollhouse.telemetry.metrics import CLEANUP_KINDS
from tollhouse_simulator import Simulator

__all__ = ["clock", "upstream"]  # fixtures shared with the Assistants-era cleaner tests


def policy() -> Policy:
    return parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"acme": {}, "globex": {}},
            # globex also ages out its stored responses and chat completions
            "cleanup": {
                "tenants": {"globex": {"ttl": {"responses": "30d", "chat_completions": "30d"}}}
            },
        },
        "test",
    )


@pytest.fixture
def world(
    upstream: tuple[ServerThread, Faults, Simulator], clock: Clock
) -> Iterator[tuple[RunningProxy, dict[str, str]]]:
    server, _, _ = upstream
    with running_proxy(
        server.url + "/v1", policy=policy(), upstream_api_key="sk-test", clock=clock
    ) as proxy:
        acme, globex = (proxy.client(default_headers={HEADER: name}) for name in ("acme", "globex"))
        ids: dict[str, str] = {}
        for name, client in (("acme", acme), ("globex", globex)):
            ids[f"{name}_conversation"] = client.conversations.create().id
            ids[f"{name}_container"] = client.containers.create(name="scratch").id
            ids[f"{name}_response"] = client.responses.create(model="gpt-4o-mini", input="hi").id
            ids[f"{name}_completion"] = client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], store=True
            ).id
        ids["kept_conversation"] = globex.conversations.create(
            metadata={"tollhouse_keep": "true"}
        ).id
        long_lived = {"anchor": "last_active_at", "minutes": 60 * 24 * 60}
        ids["busy_container"] = globex.containers.create(name="busy", expires_after=long_lived).id
        clock.advance(29 * DAY)
        globex.conversations.items.list(ids["globex_conversation"])  # seen by tollhouse
        proxy.flush()
        clock.advance(2 * DAY - 3600)
        # used upstream an hour before the sweep, unseen by tollhouse: its own
        # last_active_at moved on
        direct(server).containers.files.create(
            ids["busy_container"], file=("notes.txt", b"still in use")
        )
        clock.advance(3600)
        yield proxy, ids


async def test_stale_conversations_containers_and_opted_in_stored_objects_are_deleted(
    world: tuple[RunningProxy, dict[str, str]],
    upstream: tuple[ServerThread, Faults, Simulator],
    clock: Clock,
) -> None:
    proxy, ids = world
    server, faults, sim = upstream
    rules = proxy.tollhouse.quota.policy
    async with cleaner_for(proxy.tollhouse.engine, server.url, rules, clock) as cleaner:
        report = await cleaner.sweep(apply=True)
    deleted = {f.record.id for f in report.deleted}
    assert report.failures == []
    # 31 days idle: both tenants' conversations (but the one used since) and containers go;
    # stored responses and completions only where the policy turned them on (globex)
    assert deleted == {
        ids["acme_conversation"],
        ids["acme_container"],
        ids["globex_container"],
        ids["globex_response"],
        ids["globex_completion"],
    }
    assert faults.applied == dict.fromkeys(deleted, 1)
    assert sim.conversations.get(ids["acme_conversation"]) is None
    assert sim.containers.get(ids["acme_container"]) is None
    for kept in ("globex_conversation", "kept_conversation"):
        assert sim.conversations.get(ids[kept]) is not None
    assert sim.containers.get(ids["busy_container"]) is not None
    assert {f.record.kind for f in report.deleted} <= set(CLEANUP_KINDS)


async def test_a_dry_run_names_each_kind_and_deletes_nothing(
    world: tuple[RunningProxy, dict[str, str]],
    upstream: tuple[ServerThread, Faults, Simulator],
    clock: Clock,
) -> None:
    proxy, ids = world
    server, faults, _ = upstream
    rules = proxy.tollhouse.quota.policy
    async with cleaner_for(proxy.tollhouse.engine, server.url, rules, clock) as cleaner:
        report = await cleaner.sweep(apply=False, kinds=["conversation", "container"])
    found = {(f.record.tenant, f.record.kind) for f in report.found}
    assert found == {
        ("acme", "conversation"),
        ("acme", "container"),
        ("globex", "container"),
    }
    assert report.deleted == []
    assert faults.applied == {}
    assert direct(server).containers.retrieve(ids["acme_container"]).id == ids["acme_container"]

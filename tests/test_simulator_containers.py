"""The simulator's Containers API, and the code interpreter's use of containers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.servers import serve
from tollhouse_simulator import SimulatorConfig, create_app

START = 1_700_000_000.0
AUTO = {"type": "code_interpreter", "container": {"type": "auto", "memory_limit": "4g"}}


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def to(self, offset: float) -> None:
        """Moves to START + offset seconds."""
        self.now = START + offset


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _served(config: SimulatorConfig) -> Iterator[openai.OpenAI]:
    with (
        serve(create_app(config)) as server,
        openai.OpenAI(api_key="sk-test", base_url=server.url + "/v1", max_retries=0) as client,
    ):
        yield client


@pytest.fixture
def client(clock: FakeClock) -> Iterator[openai.OpenAI]:
    yield from _served(SimulatorConfig(clock=clock))


@pytest.fixture(scope="module")
def shared() -> Iterator[openai.OpenAI]:
    """One server for the cases that only read errors, so each case does not start one."""
    yield from _served(SimulatorConfig())


def test_container_round_trip(client: openai.OpenAI, clock: FakeClock) -> None:
    created = client.containers.create(
        name="analysis",
        memory_limit="16g",
        expires_after={"anchor": "last_active_at", "minutes": 5},
    )
    assert created.id.startswith("cntr_")
    data = created.to_dict()
    assert (data["object"], data["name"], data["status"], data["memory_limit"]) == (
        "container",
        "analysis",
        "active",
        "16g",
    )
    assert (data["created_at"], data["last_active_at"]) == (START, START)
    assert data["expires_after"] == {"anchor": "last_active_at", "minutes": 5}
    clock.to(1)
    other = client.containers.create(name="other")
    assert (other.memory_limit, other.expires_after.to_dict()) == (
        "1g",
        {"anchor": "last_active_at", "minutes": 20},
    )
    assert [c.id for c in client.containers.list()] == [other.id, created.id]
    assert [c.id for c in client.containers.list(order="asc", limit=1)] == [created.id, other.id]
    assert [c.id for c in client.containers.list(name="other")] == [other.id]
    assert client.containers.retrieve(created.id).name == "analysis"
    client.containers.delete(created.id)
    with pytest.raises(openai.NotFoundError) as missing:
        client.containers.retrieve(created.id)
    assert missing.value.message.endswith(f"No container found with id '{created.id}'.")


def test_container_expires_when_idle_and_use_keeps_it_active(
    client: openai.OpenAI, clock: FakeClock
) -> None:
    container = client.containers.create(
        name="idle", expires_after={"anchor": "last_active_at", "minutes": 1}
    )
    clock.to(50)
    client.containers.files.create(container.id, file=("a.txt", b"alpha"))
    clock.to(100)  # 50 s after the last use, 100 s after creation
    assert client.containers.retrieve(container.id).to_dict()["last_active_at"] == START + 50
    assert client.containers.retrieve(container.id).status == "active"
    clock.to(110)
    assert client.containers.retrieve(container.id).status == "expired"
    with pytest.raises(openai.BadRequestError, match="expired"):
        client.containers.files.create(container.id, file=("b.txt", b"bravo"))


def test_container_files(client: openai.OpenAI, clock: FakeClock) -> None:
    document = client.files.create(file=("data.csv", b"a,b\n1,2\n"), purpose="user_data")
    container = client.containers.create(name="files", file_ids=[document.id])
    [copied] = client.containers.files.list(container.id).data
    assert (copied.bytes, copied.path, copied.source) == (8, "/mnt/data/data.csv", "user")
    clock.to(1)
    uploaded = client.containers.files.create(container.id, file=("notes.txt", b"some notes"))
    assert uploaded.id.startswith("cfile_")
    data = uploaded.to_dict()
    assert (data["object"], data["container_id"], data["bytes"]) == (
        "container.file",
        container.id,
        10,
    )
    by_id = client.containers.files.create(container.id, file_id=document.id)
    assert by_id.path == "/mnt/data/data.csv"
    listed = client.containers.files.list(container.id, order="asc")
    assert [f.id for f in listed.data] == [copied.id, uploaded.id, by_id.id]
    fetched = client.containers.files.retrieve(uploaded.id, container_id=container.id)
    assert fetched.path == "/mnt/data/notes.txt"
    content = client.containers.files.content.retrieve(uploaded.id, container_id=container.id)
    assert content.content == b"some notes"
    raw = client.containers.files.with_raw_response.delete(uploaded.id, container_id=container.id)
    assert raw.http_response.json() == {
        "id": uploaded.id,
        "object": "container.file.deleted",
        "deleted": True,
    }
    with pytest.raises(openai.NotFoundError):
        client.containers.files.retrieve(uploaded.id, container_id=container.id)
    with pytest.raises(openai.NotFoundError, match="No such File object"):
        client.containers.files.create(container.id, file_id="file-nope")


def test_auto_container_is_created_on_first_use(client: openai.OpenAI, clock: FakeClock) -> None:
    before = {c.id for c in client.containers.list()}
    plain = client.responses.create(
        model="gpt-4o", input="no code", tools=[AUTO], tool_choice="none"
    )
    assert [c.id for c in client.containers.list()] == list(before)  # not used, not made
    assert [item.type for item in plain.output] == ["message"]
    response = client.responses.create(
        model="gpt-4o",
        input="count these words",
        tools=[AUTO],
        include=["code_interpreter_call.outputs"],
    )
    call = response.output[0].to_dict()
    assert call["type"] == "code_interpreter_call"
    assert call["outputs"] == [{"type": "logs", "logs": "3\n"}]
    container = client.containers.retrieve(call["container_id"])
    assert (container.status, container.memory_limit) == ("active", "4g")
    assert client.responses.retrieve(response.id).output[0].to_dict()["outputs"] is None


def test_explicit_container_is_used_and_must_exist(client: openai.OpenAI, clock: FakeClock) -> None:
    container = client.containers.create(name="mine")
    clock.to(30)
    tool: Any = {"type": "code_interpreter", "container": container.id}
    response = client.responses.create(model="gpt-4o", input="run", tools=[tool])
    assert response.output[0].to_dict()["container_id"] == container.id
    assert client.containers.retrieve(container.id).to_dict()["last_active_at"] == START + 30
    assert len(client.containers.list().data) == 1
    with pytest.raises(openai.NotFoundError):
        client.responses.create(
            model="gpt-4o",
            input="run",
            tools=[{"type": "code_interpreter", "container": "cntr_nope"}],
        )
    clock.to(30 + 20 * 60)
    with pytest.raises(openai.BadRequestError) as expired:
        client.responses.create(model="gpt-4o", input="run", tools=[tool])
    assert expired.value.param == "tools[0].container"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "name"),
        ({"name": "x", "memory_limit": "2g"}, "memory_limit"),
        (
            {"name": "x", "expires_after": {"anchor": "created_at", "minutes": 5}},
            "expires_after.anchor",
        ),
        ({"name": "x", "expires_after": {"anchor": "last_active_at"}}, "expires_after.minutes"),
        ({"name": "x", "network_policy": {"type": "open"}}, "network_policy"),
        ({"name": "x", "file_ids": "file-1"}, "file_ids"),
    ],
)
def test_invalid_create_bodies_name_the_param(
    shared: openai.OpenAI, body: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as invalid:
        shared.post("/containers", body=body, cast_to=object)
    assert invalid.value.param == param

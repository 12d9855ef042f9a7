"""Isolation for the Responses era: responses, conversations, containers, stored completions."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from tests import test_isolation
from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread
from tests.test_isolation import HEADER, Attempt, Recorder, tenant, tried_as_missing
from tollhouse.ledger.store import owners

# The same recording upstream and isolated proxy as the Assistants isolation tests.
recorder = test_isolation.recorder
isolated = test_isolation.isolated


def acme_world(proxy: RunningProxy) -> dict[str, str]:
    acme = tenant(proxy, "acme")
    response = acme.responses.create(model="gpt-4o", input="hello")
    with acme.responses.stream(model="gpt-4o", input="stream me") as stream:
        streamed = stream.get_final_response()
    conversation = acme.conversations.create(items=[{"role": "user", "content": "secret"}])
    container = acme.containers.create(name="acme box")
    completion = acme.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}], store=True
    )
    return {
        "response": response.id,
        "streamed": streamed.id,
        "conversation": conversation.id,
        "container": container.id,
        "completion": completion.id,
    }


def test_every_object_of_the_responses_era_is_recorded_for_its_creator(
    isolated: RunningProxy,
) -> None:
    world = acme_world(isolated)
    assert owners(isolated.tollhouse.engine, world.values()) == dict.fromkeys(
        world.values(), "acme"
    )
    acme = tenant(isolated, "acme")
    assert acme.responses.retrieve(world["streamed"]).id == world["streamed"]
    assert acme.containers.retrieve(world["container"]).id == world["container"]
    assert acme.chat.completions.retrieve(world["completion"]).id == world["completion"]


ASK = {"model": "gpt-4o", "input": "x"}


def attempts(w: dict[str, str]) -> list[Attempt]:
    r, c, k, cc = w["response"], w["conversation"], w["container"], w["completion"]
    return [
        Attempt("GET", f"/v1/responses/{r}"),
        Attempt("DELETE", f"/v1/responses/{r}"),
        Attempt("POST", f"/v1/responses/{r}/cancel"),
        Attempt("GET", f"/v1/responses/{r}/input_items"),
        Attempt("POST", "/v1/responses", {**ASK, "previous_response_id": r}),
        Attempt("POST", "/v1/responses", {**ASK, "conversation": c}),
        Attempt("POST", "/v1/responses", {**ASK, "conversation": {"id": c}}),
        Attempt(
            "POST",
            "/v1/responses",
            {"model": "gpt-4o", "input": "run code",
             "tools": [{"type": "code_interpreter", "container": k}]},
        ),
        Attempt("GET", f"/v1/conversations/{c}"),
        Attempt("POST", f"/v1/conversations/{c}", {"metadata": {"k": "v"}}),
        Attempt("DELETE", f"/v1/conversations/{c}"),
        Attempt("GET", f"/v1/conversations/{c}/items"),
        Attempt("POST", f"/v1/conversations/{c}/items",
                {"items": [{"role": "user", "content": "x"}]}),
        Attempt("GET", f"/v1/containers/{k}"),
        Attempt("DELETE", f"/v1/containers/{k}"),
        Attempt("GET", f"/v1/containers/{k}/files"),
        Attempt("GET", f"/v1/chat/completions/{cc}"),
        Attempt("POST", f"/v1/chat/completions/{cc}", {"metadata": {"k": "v"}}),
        Attempt("DELETE", f"/v1/chat/completions/{cc}"),
        Attempt("GET", f"/v1/chat/completions/{cc}/messages"),
        Attempt("GET", f"/v1/containers?after={k}"),
        Attempt("GET", f"/v1/chat/completions?after={cc}"),
    ]  # fmt: skip


def test_every_foreign_object_answers_as_a_missing_one(
    isolated: RunningProxy, recorder: tuple[Recorder, ServerThread]
) -> None:
    world = acme_world(isolated)
    upstream = recorder[0]
    for attempt in attempts(world):
        status = tried_as_missing(isolated, upstream, attempt, list(world.values()))
        assert status in (400, 404), attempt
    acme = tenant(isolated, "acme")
    assert acme.responses.retrieve(world["response"]).id == world["response"]
    assert acme.conversations.retrieve(world["conversation"]).id == world["conversation"]


def test_shared_lists_of_the_responses_era_show_only_the_callers(isolated: RunningProxy) -> None:
    world = acme_world(isolated)
    globex = tenant(isolated, "globex")
    mine = globex.containers.create(name="globex box").id
    kept = globex.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "mine"}], store=True
    ).id
    assert [c.id for c in globex.containers.list()] == [mine]
    assert [c.id for c in globex.chat.completions.list()] == [kept]
    assert world["container"] in [c.id for c in tenant(isolated, "acme").containers.list()]


def test_an_auto_container_belongs_to_the_tenant_whose_response_made_it(
    isolated: RunningProxy,
) -> None:
    acme, globex = tenant(isolated, "acme"), tenant(isolated, "globex")
    response = acme.responses.create(
        model="gpt-4o",
        input="run some code",
        tools=[{"type": "code_interpreter", "container": {"type": "auto"}}],
    )
    calls: list[Any] = [item for item in response.output if item.type == "code_interpreter_call"]
    assert calls
    container = calls[0].container_id
    isolated.flush()
    assert owners(isolated.tollhouse.engine, [container]) == {container: "acme"}
    assert acme.containers.retrieve(container).id == container
    with pytest.raises(openai.NotFoundError):
        globex.containers.retrieve(container)


def test_responses_traffic_is_never_throttled_by_the_assistants_limits(
    recorder: tuple[Recorder, ServerThread],
) -> None:
    from tollhouse.config.policy import parse_policy

    tight = parse_policy(
        {
            "identify": {"mode": "header"},
            "tenants": {"acme": {}},
            "organization": {"POST": {"requests_per_unit": 2}, "GET": {"requests_per_unit": 2}},
        },
        "test",
    )
    with running_proxy(recorder[1].url + "/v1", policy=tight) as proxy:
        acme = proxy.client(default_headers={HEADER: "acme"})
        made = [acme.responses.create(model="gpt-4o", input=f"n{n}").id for n in range(10)]
        assert [acme.responses.retrieve(r).id for r in made] == made
        completions = [
            acme.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "x"}]
            )
            for _ in range(5)
        ]
        assert len(completions) == 5
        throttled = proxy.sample(
            "tollhouse_requests_total",
            tenant="acme",
            operation="responses.create",
            outcome="throttled",
            **{"class": "RESPONSE_CREATE"},
        )
        assert throttled == 0

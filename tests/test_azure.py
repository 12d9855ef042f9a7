"""Azure OpenAI's dialect: classified, identified, limited, metered and isolated like OpenAI's.

Apps use the real ``openai.AzureOpenAI`` client (``/openai/...?api-version=``, the
``api-key`` header, ``/openai/deployments/{deployment}/chat/completions``) or the
plain client on Azure's v1 surface (``/openai/v1/...``); the simulator serves both
dialects, and tollhouse forwards each request exactly as it came.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from sqlmodel import Session, select

from tests import test_isolation
from tests.conftest import RunningProxy, running_proxy
from tests.servers import ServerThread, serve
from tests.test_cleanup_cli import cleanup, environment, ledger_url, upstream
from tests.test_isolation import HEADER, Attempt, Recorder, tried_as_missing
from tests.upstreams import Faults, threads
from tollhouse.api.classify import UNKNOWN, RequestClass, classify
from tollhouse.api.dialects import canonical_path
from tollhouse.api.paths import path_problem
from tollhouse.api.references import ID_SHAPE
from tollhouse.config.policy import parse_policy
from tollhouse.ledger.engine import engine_from_url
from tollhouse.ledger.models import RequestCount, Response, Run
from tollhouse.ledger.store import owners
from tollhouse.proxy.isolate import named_ids
from tollhouse.proxy.tenants import (
    AmbiguousKey,
    IdentityRefused,
    Tenants,
    UnknownKey,
    hash_key,
    new_key,
)
from tollhouse.upstream.forward import Forwarder, UpstreamSettings
from tollhouse_simulator import Simulator, SimulatorConfig, create_app

# The same recording upstream and header-mode proxy as the isolation tests; and the
# cleanup job's aged simulator and migrated ledger.
recorder = test_isolation.recorder
isolated = test_isolation.isolated
__all__ = ["ledger_url", "upstream"]

VERSION = "2024-05-01-preview"
Q = f"?api-version={VERSION}"
ACME_KEY, GLOBEX_KEY = new_key(), new_key()
UPSTREAM_KEY = "sk-azure-resource-key"
RESOURCE = "https://example-resource.openai.azure.com"
KEYS_POLICY = parse_policy(
    {
        "identify": {"mode": "keys"},
        "tenants": {
            "acme": {
                "keys": [hash_key(ACME_KEY)],
                "limits": {"RUN_CREATE": {"requests_per_unit": 2, "unit": "minute"}},
            },
            "globex": {"keys": [hash_key(GLOBEX_KEY)]},
        },
    },
    "test",
)


# -- classification: each Azure path is its OpenAI twin's operation ----------------------

T, R, VS = "thread_abc123456", "run_abc123456", "vs_abc123456"
TWINS = [
    ("GET", "/openai/assistants", "/v1/assistants"),
    ("POST", "/openai/assistants", "/v1/assistants"),
    ("GET", "/openai/assistants/asst_abc123456", "/v1/assistants/asst_abc123456"),
    ("HEAD", "/openai/assistants/asst_abc123456", "/v1/assistants/asst_abc123456"),
    ("DELETE", "/openai/assistants/asst_abc123456", "/v1/assistants/asst_abc123456"),
    ("POST", "/openai/threads", "/v1/threads"),
    ("POST", "/openai/threads/runs", "/v1/threads/runs"),
    ("GET", f"/openai/threads/{T}", f"/v1/threads/{T}"),
    ("POST", f"/openai/threads/{T}/messages", f"/v1/threads/{T}/messages"),
    ("POST", f"/openai/threads/{T}/runs", f"/v1/threads/{T}/runs"),
    ("GET", f"/openai/threads/{T}/runs/{R}", f"/v1/threads/{T}/runs/{R}"),
    (
        "POST",
        f"/openai/threads/{T}/runs/{R}/submit_tool_outputs",
        f"/v1/threads/{T}/runs/{R}/submit_tool_outputs",
    ),
    (
        "GET",
        f"/openai/threads/{T}/runs/{R}/steps/step_abc123456",
        f"/v1/threads/{T}/runs/{R}/steps/step_abc123456",
    ),
    ("GET", "/openai/files", "/v1/files"),
    ("POST", "/openai/files", "/v1/files"),
    ("GET", "/openai/files/file-abc123456/content", "/v1/files/file-abc123456/content"),
    ("POST", "/openai/vector_stores", "/v1/vector_stores"),
    ("DELETE", f"/openai/vector_stores/{VS}", f"/v1/vector_stores/{VS}"),
    (
        "POST",
        f"/openai/vector_stores/{VS}/file_batches/vsfb_abc123456/cancel",
        f"/v1/vector_stores/{VS}/file_batches/vsfb_abc123456/cancel",
    ),
    ("POST", "/openai/deployments/gpt-4o-prod/chat/completions", "/v1/chat/completions"),
    ("POST", "/openai/responses", "/v1/responses"),
    ("GET", "/openai/responses/resp_abc123456", "/v1/responses/resp_abc123456"),
    # the v1 surface
    ("POST", "/openai/v1/responses", "/v1/responses"),
    ("POST", "/openai/v1/responses/resp_abc123456/cancel", "/v1/responses/resp_abc123456/cancel"),
    ("POST", "/openai/v1/chat/completions", "/v1/chat/completions"),
    ("GET", "/openai/v1/chat/completions", "/v1/chat/completions"),
    ("POST", "/openai/v1/conversations", "/v1/conversations"),
    (
        "DELETE",
        "/openai/v1/conversations/conv_abc123456/items/msg_abc123456",
        "/v1/conversations/conv_abc123456/items/msg_abc123456",
    ),
    ("POST", "/openai/v1/containers", "/v1/containers"),
    (
        "GET",
        "/openai/v1/containers/cntr_abc123456/files/cfile_abc123456/content",
        "/v1/containers/cntr_abc123456/files/cfile_abc123456/content",
    ),
    ("POST", "/openai/v1/threads/runs", "/v1/threads/runs"),
    ("GET", f"/openai/v1/threads/{T}/messages", f"/v1/threads/{T}/messages"),
]


@pytest.mark.parametrize(("method", "azure", "openai_path"), TWINS)
def test_an_azure_path_is_its_openai_twins_operation(
    method: str, azure: str, openai_path: str
) -> None:
    assert canonical_path(azure) == openai_path
    operation = classify(method, azure)
    assert operation.known
    assert operation == classify(method, openai_path)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/openai/deployments/gpt-4o-prod/embeddings"),  # no route of tollhouse's
        ("POST", f"/openai/deployments/gpt-4o-prod/threads/{T}/runs"),  # not a deployment's
        ("GET", "/openai/deployments/gpt-4o-prod"),
        ("GET", "/openai/deployments"),
        ("GET", "/openai/models"),
        ("GET", "/openai/v1"),
        ("GET", "/openai/v1/v1/assistants"),
        ("GET", "/openai/openai/assistants"),
    ],
)
def test_azure_paths_without_an_openai_twin_are_unknown(method: str, path: str) -> None:
    operation = classify(method, path)
    assert (operation.name, operation.request_class) == (UNKNOWN, RequestClass.UNKNOWN)


DEPLOYMENT = "gpt-4o-2024-08-06"  # a deployment name shaped like an object id


@pytest.mark.parametrize(
    ("method", "raw_path", "strict", "loose"),
    [
        (
            "GET",
            f"/openai/threads/{T}/runs/{R}",
            [T],
            [R],
        ),
        ("POST", f"/openai/deployments/{DEPLOYMENT}/chat/completions", [], []),
        ("POST", f"/openai/deployments/{DEPLOYMENT}/embeddings", [], []),
        ("POST", f"/openai/deployments/{DEPLOYMENT}/threads/{T}", [], [T]),
        ("GET", "/openai/v1/conversations/conv_abc123456/items", ["conv_abc123456"], []),
        ("GET", f"/openai/v1/things/{T}", [], [T]),
    ],
)
def test_isolation_checks_the_ids_an_azure_path_names_never_the_deployment(
    method: str, raw_path: str, strict: list[str], loose: list[str]
) -> None:
    assert ID_SHAPE.match(DEPLOYMENT)  # it would be taken for an id, were it not known
    named = named_ids(classify(method, raw_path), raw_path, Q[1:], None)
    assert (named.strict, named.loose) == (strict, loose)


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/openai/threads/%2e%2e/runs",
        b"/openai/deployments//chat/completions",
        b"/openai/assistants/",
        b"/openai/threads/thread_1%2fruns",
        b"/openai/v1/responses;x",
    ],
)
def test_odd_azure_paths_are_refused_as_openai_ones_are(raw_path: bytes) -> None:
    problem = path_problem(raw_path)
    assert problem is not None
    assert (problem.status, problem.code) == (400, "invalid_path")


def test_well_formed_azure_paths_pass() -> None:
    for _, azure, _ in TWINS:
        assert path_problem(azure.encode()) is None


@pytest.mark.parametrize(
    ("upstream_url", "raw_path", "target"),
    [
        # the resource named by its v1 base URL, as tollhouse's own requests need it
        (RESOURCE + "/openai/v1", "/openai/assistants", RESOURCE + "/openai/assistants"),
        (RESOURCE + "/openai/v1", "/openai/v1/responses", RESOURCE + "/openai/v1/responses"),
        (RESOURCE + "/openai/v1", "/v1/threads", RESOURCE + "/openai/v1/threads"),
        # ... or by its endpoint
        (RESOURCE, "/openai/threads", RESOURCE + "/openai/threads"),
        # behind a gateway's path
        (
            "https://gw.example/aoai/openai/v1",
            "/openai/files",
            "https://gw.example/aoai/openai/files",
        ),
        # OpenAI itself, unchanged
        ("https://api.openai.com/v1", "/v1/threads", "https://api.openai.com/v1/threads"),
    ],
)
def test_an_azure_path_goes_to_the_resources_root(
    upstream_url: str, raw_path: str, target: str
) -> None:
    forwarder = Forwarder(UpstreamSettings(url=upstream_url))
    assert forwarder.target(raw_path, Q[1:]) == target + Q


# -- identity from the api-key header -----------------------------------------------------


def test_a_key_in_api_key_names_the_tenant_and_gives_way_to_the_upstream_key() -> None:
    tenants = Tenants(KEYS_POLICY, upstream_api_key=UPSTREAM_KEY)
    sent = [(b"Api-Key", ACME_KEY.encode()), (b"x-app", b"1")]
    identity, forwarded = tenants.identify(sent)
    assert identity.tenant == "acme"
    assert forwarded == [(b"x-app", b"1"), (b"api-key", UPSTREAM_KEY.encode())]
    # the same key as a bearer token, and in both headers at once
    bearer = (b"authorization", b"Bearer " + ACME_KEY.encode())
    assert tenants.identify([bearer])[1] == [
        (b"authorization", b"Bearer " + b"sk-azure-resource-key")
    ]
    identity, forwarded = tenants.identify([bearer, (b"api-key", ACME_KEY.encode())])
    assert identity.tenant == "acme"
    assert sorted(forwarded) == [
        (b"api-key", UPSTREAM_KEY.encode()),
        (b"authorization", b"Bearer " + UPSTREAM_KEY.encode()),
    ]


@pytest.mark.parametrize(
    ("sent", "refused"),
    [
        (
            [(b"api-key", GLOBEX_KEY.encode()), (b"authorization", b"Bearer " + ACME_KEY.encode())],
            AmbiguousKey,
        ),
        ([(b"api-key", ACME_KEY.encode()), (b"api-key", GLOBEX_KEY.encode())], AmbiguousKey),
        ([(b"api-key", b"th-not-a-key")], UnknownKey),
        ([(b"api-key", b"  ")], UnknownKey),
        ([(b"authorization", b"Basic " + ACME_KEY.encode())], UnknownKey),
    ],
)
def test_keys_that_name_no_one_tenant_are_refused(
    sent: list[tuple[bytes, bytes]], refused: type[IdentityRefused]
) -> None:
    with pytest.raises(refused) as raised:
        Tenants(KEYS_POLICY, upstream_api_key=UPSTREAM_KEY).identify(sent)
    assert raised.value.response().status == 401


def test_header_mode_puts_the_upstream_key_where_the_app_put_its_own() -> None:
    policy = parse_policy({"identify": {"mode": "header"}, "tenants": {"acme": {}}}, "test")
    sent = [(b"x-tollhouse-tenant", b"acme"), (b"api-key", b"app-key")]
    identity, forwarded = Tenants(policy, upstream_api_key=UPSTREAM_KEY).identify(sent)
    assert identity.tenant == "acme"
    assert forwarded == [(b"api-key", UPSTREAM_KEY.encode())]
    # without a key of tollhouse's the app's own passes, as a bearer token would
    assert Tenants(policy).identify(sent)[1] == [(b"api-key", b"app-key")]


# -- end to end, with the real AzureOpenAI client ----------------------------------------


@pytest.fixture
def azure_upstream() -> Iterator[tuple[ServerThread, Simulator]]:
    """The simulator, accepting only the resource's key, as an Azure resource would."""
    app = create_app(
        SimulatorConfig(
            queued_seconds=0.01, in_progress_seconds=0.05, api_keys=frozenset({UPSTREAM_KEY})
        )
    )
    with serve(app) as server:
        yield server, app.state.simulator


@pytest.fixture
def keyed(azure_upstream: tuple[ServerThread, Simulator]) -> Iterator[RunningProxy]:
    """tollhouse in keys mode, its upstream named by the resource's v1 base URL."""
    server, _ = azure_upstream
    with running_proxy(
        server.url + "/openai/v1", policy=KEYS_POLICY, upstream_api_key=UPSTREAM_KEY
    ) as proxy:
        yield proxy


def azure_client(proxy: RunningProxy, key: str, **options: Any) -> openai.AzureOpenAI:
    client = openai.AzureOpenAI(
        azure_endpoint=proxy.url, api_key=key, api_version=VERSION, max_retries=0, **options
    )
    proxy.clients.append(client)
    return client


def test_assistants_runs_and_responses_through_azure_are_the_callers(
    keyed: RunningProxy,
    azure_upstream: tuple[ServerThread, Simulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, simulator = azure_upstream
    caplog.set_level(logging.DEBUG, logger="tollhouse")
    acme = azure_client(keyed, ACME_KEY)
    assistant = acme.beta.assistants.create(model="gpt-4o")
    thread = acme.beta.threads.create(messages=[{"role": "user", "content": "count these words"}])
    run = acme.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    response = acme.responses.create(model="gpt-4o", input="hello")
    chat = acme.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )
    keyed.flush()
    assert run.status == "completed"
    assert run.usage is not None
    assert response.usage is not None
    assert chat.usage is not None

    # forwarded as it came, with the resource's key in place of the tenant's
    seen = list(simulator.requests)
    assert [r.path for r in seen[:3]] == [
        "/openai/assistants",
        "/openai/threads",
        f"/openai/threads/{thread.id}/runs",
    ]
    assert "/openai/deployments/gpt-4o/chat/completions" in [r.path for r in seen]
    assert all(r.query == f"api-version={VERSION}" for r in seen)
    assert all(r.headers.get("api-key") == UPSTREAM_KEY for r in seen)
    assert not any("authorization" in r.headers for r in seen)

    # the tenant named by its api-key, its objects its own, its usage in the ledger
    engine = keyed.tollhouse.engine
    ids = [assistant.id, thread.id, run.id, response.id]
    assert owners(engine, ids) == dict.fromkeys(ids, "acme")
    with Session(engine) as session:
        stored = session.get(Run, run.id)
    assert stored is not None
    assert (stored.tenant, stored.model, stored.prompt_tokens, stored.completion_tokens) == (
        "acme",
        "gpt-4o",
        run.usage.prompt_tokens,
        run.usage.completion_tokens,
    )
    # the run, the response and the chat completion, each metered once, all on gpt-4o
    metered = run.usage.prompt_tokens + response.usage.input_tokens + chat.usage.prompt_tokens
    assert (
        keyed.sample("tollhouse_tokens_total", tenant="acme", model="gpt-4o", direction="input")
        == metered
    )
    with Session(engine) as session:
        answered = session.get(Response, response.id)
    assert answered is not None
    assert (answered.tenant, answered.input_tokens) == ("acme", response.usage.input_tokens)
    for operation, request_class in [
        ("threads.runs.create", "RUN_CREATE"),
        ("responses.create", "RESPONSE_CREATE"),
        ("chat.completions.create", "CHAT_COMPLETION"),
    ]:
        labels = {"tenant": "acme", "operation": operation, "class": request_class}
        assert keyed.sample("tollhouse_requests_total", outcome="forwarded", **labels) == 1
    with Session(engine) as session:
        counted = session.exec(select(RequestCount.request_class, RequestCount.tenant)).all()
    assert {c for c, t in counted if t == "acme"} >= {
        "POST",
        "RUN_CREATE",
        "RESPONSE_CREATE",
        "CHAT_COMPLETION",
    }
    assert {t for _, t in counted} == {"acme"}
    # the tenant's key is never written down
    assert ACME_KEY not in logged(caplog)


def test_a_streamed_azure_run_is_metered_once(keyed: RunningProxy) -> None:
    acme = azure_client(keyed, ACME_KEY)
    assistant = acme.beta.assistants.create(model="gpt-4o")
    thread = acme.beta.threads.create(messages=[{"role": "user", "content": "stream it"}])
    with acme.beta.threads.runs.stream(thread_id=thread.id, assistant_id=assistant.id) as stream:
        stream.until_done()
        run = stream.get_final_run()
    acme.beta.threads.runs.retrieve(run.id, thread_id=thread.id)  # seen again: still once
    keyed.flush()
    assert run.usage is not None
    assert keyed.sample("tollhouse_runs_total", tenant="acme", status="completed") == 1
    tokens = keyed.sample(
        "tollhouse_tokens_total", tenant="acme", model="gpt-4o", direction="output"
    )
    assert tokens == run.usage.completion_tokens


def test_the_reconciler_finishes_azure_runs_nobody_polled() -> None:
    now = [1_764_000_000.0]
    app = create_app(SimulatorConfig(clock=lambda: now[0], api_keys=frozenset({UPSTREAM_KEY})))
    with (
        serve(app) as server,
        running_proxy(
            server.url + "/openai/v1",
            policy=KEYS_POLICY,
            upstream_api_key=UPSTREAM_KEY,
            reconcile_after=0,
        ) as proxy,
    ):
        acme = azure_client(proxy, ACME_KEY)
        assistant = acme.beta.assistants.create(model="gpt-4o")
        run = acme.beta.threads.create_and_run(assistant_id=assistant.id)  # never polled
        assert run.status == "queued"
        proxy.flush()
        now[0] += 60  # it finished upstream; the app never asked again
        collector = proxy.tollhouse.collector
        assert collector is not None
        assert proxy.run(collector.reconcile()) == 1
        proxy.flush()
        asked = app.state.simulator.requests[-1]
        with Session(proxy.tollhouse.engine) as session:
            finished = session.get(Run, run.id)
    assert (asked.method, asked.path) == (
        "GET",
        f"/openai/v1/threads/{run.thread_id}/runs/{run.id}",
    )
    assert asked.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert finished is not None
    assert (finished.tenant, finished.status) == ("acme", "completed")
    assert finished.prompt_tokens is not None


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """What tollhouse's own loggers wrote."""
    return "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("tollhouse"))


def test_a_tenants_limit_applies_on_the_azure_path(keyed: RunningProxy) -> None:
    acme, globex = azure_client(keyed, ACME_KEY), azure_client(keyed, GLOBEX_KEY)
    assistant = acme.beta.assistants.create(model="gpt-4o")
    thread = acme.beta.threads.create()
    acme.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    acme.beta.threads.create_and_run(assistant_id=assistant.id)
    with pytest.raises(openai.RateLimitError) as refused:
        acme.beta.threads.create_and_run(assistant_id=assistant.id)
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.response.headers["x-ratelimit-limit-requests"] == "2"
    labels = {"tenant": "acme", "operation": "threads.create_and_run", "class": "RUN_CREATE"}
    assert keyed.sample("tollhouse_requests_total", outcome="throttled", **labels) == 1
    # another tenant's budget is its own
    theirs = globex.beta.assistants.create(model="gpt-4o")
    for _ in range(3):
        globex.beta.threads.create_and_run(assistant_id=theirs.id)


def test_keys_missing_or_unknown_never_reach_the_resource(
    keyed: RunningProxy,
    azure_upstream: tuple[ServerThread, Simulator],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, simulator = azure_upstream
    caplog.set_level(logging.DEBUG, logger="tollhouse")
    before = len(simulator.requests)
    wrong = "th-" + "x" * 43
    with pytest.raises(openai.AuthenticationError) as unknown:
        azure_client(keyed, wrong).beta.assistants.list()
    assert unknown.value.code == "invalid_api_key"
    assert "refused" in logged(caplog)
    assert wrong not in logged(caplog)
    missing = httpx.get(keyed.url + "/openai/assistants" + Q)
    assert missing.status_code == 401
    assert "api-key" in missing.json()["error"]["message"]
    assert len(simulator.requests) == before


def test_the_plain_client_on_azures_v1_surface(
    keyed: RunningProxy, azure_upstream: tuple[ServerThread, Simulator]
) -> None:
    _, simulator = azure_upstream
    client = openai.OpenAI(base_url=keyed.url + "/openai/v1", api_key=GLOBEX_KEY, max_retries=0)
    keyed.clients.append(client)
    response = client.responses.create(model="gpt-4o", input="hello")
    conversation = client.conversations.create()
    assert simulator.requests[-1].path == "/openai/v1/conversations"
    assert simulator.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    keyed.flush()
    ids = [response.id, conversation.id]
    assert owners(keyed.tollhouse.engine, ids) == dict.fromkeys(ids, "globex")
    # an OpenAI-dialect request reaches the resource on its v1 surface
    openai_dialect = keyed.client(api_key=GLOBEX_KEY)
    assert openai_dialect.responses.retrieve(response.id).id == response.id
    assert simulator.requests[-1].path == f"/openai/v1/responses/{response.id}"


# -- isolation: another tenant's object named in an Azure path ----------------------------


def azure_tenant(proxy: RunningProxy, name: str) -> openai.AzureOpenAI:
    client = openai.AzureOpenAI(
        azure_endpoint=proxy.url,
        api_key="sk-test",
        api_version=VERSION,
        max_retries=0,
        default_headers={HEADER: name},
    )
    proxy.clients.append(client)
    return client


def acme_world(proxy: RunningProxy) -> dict[str, str]:
    acme = azure_tenant(proxy, "acme")
    assistant = acme.beta.assistants.create(model="gpt-4o", instructions="acme's secret prompt")
    thread = acme.beta.threads.create(messages=[{"role": "user", "content": "secret"}])
    run = acme.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
    )
    store = acme.vector_stores.create(name="acme's store")
    response = acme.responses.create(model="gpt-4o", input="secret")
    proxy.flush()
    return {
        "assistant": assistant.id,
        "thread": thread.id,
        "run": run.id,
        "store": store.id,
        "response": response.id,
    }


def attempts(w: dict[str, str]) -> list[Attempt]:
    t, r = f"/openai/threads/{w['thread']}", f"/openai/threads/{w['thread']}/runs/{w['run']}"
    return [
        Attempt("GET", f"/openai/assistants/{w['assistant']}{Q}"),
        Attempt("POST", f"/openai/assistants/{w['assistant']}{Q}", {"name": "mine now"}),
        Attempt("DELETE", f"/openai/assistants/{w['assistant']}{Q}"),
        Attempt("GET", t + Q),
        Attempt("GET", f"{t}/messages{Q}"),
        Attempt("POST", f"{t}/messages{Q}", {"role": "user", "content": "hi"}),
        Attempt("POST", f"{t}/runs{Q}", {"assistant_id": w["assistant"]}),
        Attempt("GET", r + Q),
        Attempt("GET", f"{r}/steps{Q}"),
        Attempt("POST", f"{r}/cancel{Q}"),
        Attempt("GET", f"/openai/vector_stores/{w['store']}{Q}"),
        Attempt("GET", f"/openai/v1/threads/{w['thread']}"),
        Attempt("GET", f"/openai/responses/{w['response']}{Q}"),
        Attempt("GET", f"/openai/v1/responses/{w['response']}/input_items"),
        Attempt("DELETE", f"/openai/v1/responses/{w['response']}"),
        Attempt(
            "POST",
            "/openai/v1/responses",
            {"model": "gpt-4o", "input": "x", "previous_response_id": w["response"]},
        ),
    ]


def test_another_tenants_object_in_an_azure_path_answers_as_a_missing_one(
    isolated: RunningProxy, recorder: tuple[Recorder, ServerThread]
) -> None:
    world = acme_world(isolated)
    assert owners(isolated.tollhouse.engine, world.values()) == dict.fromkeys(
        world.values(), "acme"
    )
    upstream = recorder[0]
    tried = attempts(world)
    refused = [tried_as_missing(isolated, upstream, a, list(world.values())) for a in tried]
    assert set(refused) <= {400, 404}
    assert len(refused) == len(tried)
    acme = azure_tenant(isolated, "acme")
    assert acme.beta.assistants.retrieve(world["assistant"]).instructions == "acme's secret prompt"
    assert acme.responses.retrieve(world["response"]).id == world["response"]
    denied = isolated.sample(
        "tollhouse_isolation_denials_total", tenant="globex", operation="threads.retrieve"
    )
    # on the Azure path and on the v1 surface's, each sent again at an id that exists
    # nowhere (which has no owner and is denied the same way)
    assert denied == 4


def test_an_azure_list_shows_only_the_callers_objects(isolated: RunningProxy) -> None:
    acme, globex = azure_tenant(isolated, "acme"), azure_tenant(isolated, "globex")
    mine = {acme.beta.assistants.create(model="gpt-4o").id for _ in range(3)}
    theirs = globex.beta.assistants.create(model="gpt-4o").id
    isolated.flush()
    assert {a.id for a in acme.beta.assistants.list()} == mine
    assert [a.id for a in globex.beta.assistants.list()] == [theirs]


# -- cleanup against an Azure resource ----------------------------------------------------


def test_the_cleanup_job_deletes_through_azures_v1_surface(
    upstream: tuple[ServerThread, Faults, Simulator], ledger_url: str, tmp_path: Path
) -> None:
    server, faults, sim = upstream
    engine = engine_from_url(ledger_url)
    with openai.AzureOpenAI(
        azure_endpoint=server.url, api_key="sk-test", api_version=VERSION, max_retries=0
    ) as client:
        stale = threads(client, engine, "acme", 2)
    # (the job's import path is the tests', so it runs the tree under test)
    env = environment(
        server,
        ledger_url,
        tmp_path,
        TOLLHOUSE_UPSTREAM_URL=server.url + "/openai/v1",
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    before = len(sim.requests)
    swept = cleanup(env, "--apply")
    assert swept.returncode == 0, swept.stderr
    assert faults.applied == dict.fromkeys(stale, 1)
    deletes = [r.path for r in list(sim.requests)[before:] if r.method == "DELETE"]
    assert sorted(deletes) == sorted(f"/openai/v1/threads/{t}" for t in stale)
    engine.dispose()

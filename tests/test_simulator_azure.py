"""The simulator in Azure OpenAI's dialect: the real AzureOpenAI client, and Azure's own errors."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2 as httpx
import openai
import pytest

from tests.servers import ServerThread, serve
from tollhouse_simulator import Simulator, SimulatorConfig, create_app
from tollhouse_simulator.azure import ACCESS_DENIED, twin_path

VERSION = "2024-05-01-preview"
KEY = "azure-key"


@pytest.fixture
def azure() -> Iterator[tuple[ServerThread, Simulator]]:
    app = create_app(
        SimulatorConfig(queued_seconds=0.01, in_progress_seconds=0.05, api_keys=frozenset({KEY}))
    )
    with serve(app) as server:
        yield server, app.state.simulator


@pytest.mark.parametrize(
    ("path", "twin"),
    [
        ("/openai/assistants", "/v1/assistants"),
        ("/openai/threads/thread_1/runs", "/v1/threads/thread_1/runs"),
        ("/openai/v1/responses", "/v1/responses"),
        ("/openai/deployments/gpt-4o/chat/completions", "/v1/chat/completions"),
        ("/openai/deployments/gpt-4o/embeddings", None),  # not served by the simulator
        ("/openai/deployments/gpt-4o/threads", None),
        ("/v1/assistants", None),
    ],
)
def test_each_azure_path_is_served_as_its_openai_twin(path: str, twin: str | None) -> None:
    assert twin_path(path) == twin


def test_the_azure_client_drives_every_era(azure: tuple[ServerThread, Simulator]) -> None:
    server, simulator = azure
    with openai.AzureOpenAI(
        azure_endpoint=server.url, api_key=KEY, api_version=VERSION, max_retries=0
    ) as client:
        assistant = client.beta.assistants.create(model="gpt-4o")
        thread = client.beta.threads.create()
        run = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id, poll_interval_ms=10
        )
        chat = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        response = client.responses.create(model="gpt-4o", input="hi")
    assert run.status == "completed"
    assert run.usage is not None
    assert chat.usage is not None
    assert response.status == "completed"
    assert simulator.assistants.get(assistant.id) is not None
    paths = [r.path for r in simulator.requests]
    assert "/openai/deployments/gpt-4o/chat/completions" in paths
    assert all(r.headers["api-key"] == KEY for r in simulator.requests)
    # the v1 surface, with the plain client and a bearer key
    with openai.OpenAI(base_url=server.url + "/openai/v1", api_key=KEY, max_retries=0) as v1:
        assert v1.responses.retrieve(response.id).id == response.id
        assert v1.conversations.create().id.startswith("conv_")


@pytest.mark.parametrize(
    ("target", "headers", "status", "error"),
    [
        (
            "/openai/assistants",
            {"api-key": KEY},
            404,
            {"code": "404", "message": "Resource not found"},
        ),
        (
            "/openai/assistants?api-version=latest",
            {"api-key": KEY},
            400,
            {"code": "BadRequest", "message": "API version not supported"},
        ),
        (
            f"/openai/v1/assistants?api-version={VERSION}",
            {"api-key": KEY},
            400,
            {"code": "BadRequest", "message": "API version not supported"},
        ),
        (
            f"/openai/assistants?api-version={VERSION}",
            {},
            401,
            {"code": "401", "message": ACCESS_DENIED},
        ),
        (
            f"/openai/assistants?api-version={VERSION}",
            {"api-key": "wrong"},
            401,
            {"code": "401", "message": ACCESS_DENIED},
        ),
        (
            f"/openai/nothing?api-version={VERSION}",
            {"api-key": KEY},
            404,
            {"code": "404", "message": "Resource not found"},
        ),
        (
            f"/openai/deployments/gpt-4o/threads?api-version={VERSION}",
            {"api-key": KEY},
            404,
            {"code": "404", "message": "Resource not found"},
        ),
        (
            "/openai/v1/nothing",
            {"api-key": KEY},
            404,
            {"code": "404", "message": "Resource not found"},
        ),
    ],
)
def test_azure_answers_its_own_errors(
    azure: tuple[ServerThread, Simulator],
    target: str,
    headers: dict[str, str],
    status: int,
    error: dict[str, str],
) -> None:
    server, _ = azure
    answer = httpx.get(server.url + target, headers=headers)
    assert answer.status_code == status
    assert answer.json() == {"error": error}


def test_azure_needs_no_beta_header_where_openai_does(
    azure: tuple[ServerThread, Simulator],
) -> None:
    server, _ = azure
    azure_answer = httpx.get(
        f"{server.url}/openai/assistants?api-version={VERSION}", headers={"api-key": KEY}
    )
    assert azure_answer.status_code == 200
    openai_answer = httpx.get(
        server.url + "/v1/assistants", headers={"authorization": f"Bearer {KEY}"}
    )
    assert openai_answer.status_code == 400
    assert openai_answer.json()["error"]["code"] == "invalid_beta"

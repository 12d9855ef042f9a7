"""Endpoints for /v1/assistants."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import (
    Body,
    metadata,
    optional_number,
    optional_str,
    read_json,
    required_str,
)
from tollhouse_simulator.state import simulator_of
from tollhouse_simulator.store import list_params, new_id
from tollhouse_simulator.tools import response_format, tool_resources, tools

ASSISTANT_FIELDS = frozenset(
    {
        "model",
        "name",
        "description",
        "instructions",
        "reasoning_effort",
        "tools",
        "tool_resources",
        "metadata",
        "temperature",
        "top_p",
        "response_format",
    }
)


def _settings(body: Body) -> dict[str, Any]:
    """The fields present in the body, validated; absent fields are left out."""
    parsed: dict[str, Any] = {
        "model": optional_str(body, "model"),
        "name": optional_str(body, "name", max_length=256),
        "description": optional_str(body, "description", max_length=512),
        "instructions": optional_str(body, "instructions", max_length=256_000),
        "tools": tools(body, max_items=128),
        "tool_resources": tool_resources(body)[0],
        "metadata": metadata(body),
        "temperature": optional_number(body, "temperature", 0, 2),
        "top_p": optional_number(body, "top_p", 0, 1),
        "response_format": response_format(body),
    }
    optional_str(body, "reasoning_effort")
    return {key: value for key, value in parsed.items() if key in body}


async def list_assistants(request: Request) -> Response:
    sim = simulator_of(request)
    page = sim.assistants.page(list_params(request.query_params))
    return JSONResponse(page.json(dict))


async def create_assistant(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, ASSISTANT_FIELDS)
    required_str(body, "model")
    settings = _settings(body)
    now = int(sim.now())
    assistant = {
        "id": new_id("asst_"),
        "object": "assistant",
        "created_at": now,
        "name": None,
        "description": None,
        "model": settings["model"],
        "instructions": None,
        "tools": [],
        "tool_resources": {},
        "metadata": {},
        "temperature": 1.0,
        "top_p": 1.0,
        "response_format": "auto",
    }
    _apply(assistant, settings)
    sim.assistants.insert(assistant["id"], now, assistant)
    return JSONResponse(assistant)


def _apply(assistant: dict[str, Any], settings: dict[str, Any]) -> None:
    defaults = {"tools": [], "tool_resources": {}, "metadata": {}, "temperature": 1.0}
    defaults |= {"top_p": 1.0, "response_format": "auto"}
    for key, value in settings.items():
        if key == "model" and value is None:
            continue
        assistant[key] = defaults.get(key) if value is None else value


async def retrieve_assistant(request: Request) -> Response:
    sim = simulator_of(request)
    return JSONResponse(sim.assistant(request.path_params["assistant_id"]))


async def update_assistant(request: Request) -> Response:
    sim = simulator_of(request)
    assistant = sim.assistant(request.path_params["assistant_id"])
    body = await read_json(request, ASSISTANT_FIELDS)
    _apply(assistant, _settings(body))
    return JSONResponse(assistant)


async def delete_assistant(request: Request) -> Response:
    sim = simulator_of(request)
    assistant_id = request.path_params["assistant_id"]
    sim.assistant(assistant_id)
    sim.assistants.remove(assistant_id)
    return JSONResponse({"id": assistant_id, "object": "assistant.deleted", "deleted": True})


def routes() -> list[Route]:
    return [
        Route("/v1/assistants", list_assistants, methods=["GET"]),
        Route("/v1/assistants", create_assistant, methods=["POST"]),
        Route("/v1/assistants/{assistant_id}", retrieve_assistant, methods=["GET"]),
        Route("/v1/assistants/{assistant_id}", update_assistant, methods=["POST"]),
        Route("/v1/assistants/{assistant_id}", delete_assistant, methods=["DELETE"]),
    ]

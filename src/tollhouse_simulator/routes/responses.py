"""Endpoints for /v1/responses: create, retrieve or resume a stream, cancel, items, counts."""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import optional_bool, read_json
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.inputs import Item
from tollhouse_simulator.outputs import parse_include, render_item
from tollhouse_simulator.response_requests import compact, count_input_tokens, create_response
from tollhouse_simulator.response_settings import (
    COMPACT_FIELDS,
    RESPONSE_FIELDS,
    TOKEN_COUNT_FIELDS,
)
from tollhouse_simulator.sse import response_stream
from tollhouse_simulator.state import simulator_of
from tollhouse_simulator.store import Table, list_params


def include_of(query: QueryParams) -> frozenset[str]:
    return parse_include(query.getlist("include[]") + query.getlist("include"))


def _flag(query: QueryParams, key: str) -> bool:
    value = query.get(key, "false").lower()
    if value not in ("true", "false"):
        raise bad_request(
            f"Invalid value for '{key}': expected 'true' or 'false', got '{value}'.",
            param=key,
            code="invalid_value",
        )
    return value == "true"


def _starting_after(query: QueryParams) -> int | None:
    raw = query.get("starting_after")
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise bad_request(
            f"Invalid 'starting_after': expected an integer, but got '{raw}' instead.",
            param="starting_after",
            code="invalid_type",
        ) from None


async def create(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, RESPONSE_FIELDS)
    stream = bool(optional_bool(body, "stream"))
    run = create_response(sim, body, sim.now(), stream=stream)
    if stream:
        return response_stream(sim, run, None)
    return JSONResponse(run.render())


async def retrieve(request: Request) -> Response:
    sim = simulator_of(request)
    query = request.query_params
    include = include_of(query)
    stream = _flag(query, "stream")
    after = _starting_after(query)
    run = sim.response(request.path_params["response_id"])
    if stream:
        return response_stream(sim, run, after)
    return JSONResponse(run.render(include))


async def delete(request: Request) -> Response:
    sim = simulator_of(request)
    run = sim.response(request.path_params["response_id"])
    sim.responses.remove(run.id)
    return JSONResponse({"id": run.id, "object": "response", "deleted": True})


async def cancel(request: Request) -> Response:
    sim = simulator_of(request)
    run = sim.response(request.path_params["response_id"])
    if not run.obj["background"]:
        raise bad_request("Only responses created with background=true can be cancelled.")
    if run.status in ("queued", "in_progress"):
        run.cancel()
    elif run.status != "cancelled":
        raise bad_request(f"Cannot cancel a response with status '{run.status}'.")
    return JSONResponse(run.render())


async def input_items(request: Request) -> Response:
    sim = simulator_of(request)
    run = sim.response(request.path_params["response_id"])
    include = include_of(request.query_params)
    items: Table[Item] = Table()
    for item in run.turn.context:
        items.insert(item["id"], run.obj["created_at"], item)
    page = items.page(list_params(request.query_params))
    return JSONResponse(page.json(lambda item: render_item(item, include)))


async def input_tokens(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, TOKEN_COUNT_FIELDS)
    count = count_input_tokens(sim, body)
    return JSONResponse({"object": "response.input_tokens", "input_tokens": count})


async def compact_context(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, COMPACT_FIELDS)
    return JSONResponse(compact(sim, body, sim.now()))


def routes() -> list[Route]:
    response = "/v1/responses/{response_id}"
    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/input_tokens", input_tokens, methods=["POST"]),
        Route("/v1/responses/compact", compact_context, methods=["POST"]),
        Route(response, retrieve, methods=["GET"]),
        Route(response, delete, methods=["DELETE"]),
        Route(response + "/cancel", cancel, methods=["POST"]),
        Route(response + "/input_items", input_items, methods=["GET"]),
    ]

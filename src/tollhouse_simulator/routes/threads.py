"""Endpoints for /v1/threads and their messages."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import metadata, read_json
from tollhouse_simulator.errors import bad_request, not_found
from tollhouse_simulator.messages import MESSAGE_FIELDS, parse_message
from tollhouse_simulator.state import Simulator, simulator_of
from tollhouse_simulator.store import list_params
from tollhouse_simulator.threads import THREAD_FIELDS, add_message, create_thread
from tollhouse_simulator.tools import tool_resources


async def create(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, THREAD_FIELDS)
    return JSONResponse(create_thread(sim, body, sim.now()))


async def retrieve(request: Request) -> Response:
    sim = simulator_of(request)
    return JSONResponse(sim.thread(request.path_params["thread_id"]))


async def update(request: Request) -> Response:
    sim = simulator_of(request)
    thread = sim.thread(request.path_params["thread_id"])
    body = await read_json(request, {"tool_resources", "metadata"})
    resources = tool_resources(body)[0]
    meta = metadata(body)
    if "tool_resources" in body:
        thread["tool_resources"] = resources or {}
    if meta is not None:
        thread["metadata"] = meta
    return JSONResponse(thread)


async def delete(request: Request) -> Response:
    sim = simulator_of(request)
    thread_id = request.path_params["thread_id"]
    sim.thread(thread_id)
    sim.remove_thread(thread_id)
    return JSONResponse({"id": thread_id, "object": "thread.deleted", "deleted": True})


def _advanced(sim: Simulator, request: Request) -> str:
    thread_id: str = request.path_params["thread_id"]
    sim.thread(thread_id)
    sim.advance_thread(thread_id, sim.now())
    return thread_id


async def list_messages(request: Request) -> Response:
    sim = simulator_of(request)
    thread_id = _advanced(sim, request)
    run_id = request.query_params.get("run_id")
    page = sim.messages[thread_id].page(
        list_params(request.query_params),
        keep=None if run_id is None else lambda message: message["run_id"] == run_id,
    )
    return JSONResponse(page.json(dict))


async def create_message(request: Request) -> Response:
    sim = simulator_of(request)
    thread_id = _advanced(sim, request)
    body = await read_json(request, MESSAGE_FIELDS)
    parsed = parse_message(body)
    active = sim.active_runs.get(thread_id)
    if active is not None:
        raise bad_request(f"Can't add messages to {thread_id} while a run {active.id} is active.")
    return JSONResponse(add_message(sim, thread_id, parsed, sim.now()))


def _message(sim: Simulator, request: Request) -> dict[str, object]:
    thread_id = _advanced(sim, request)
    message_id = request.path_params["message_id"]
    message = sim.messages[thread_id].get(message_id)
    if message is None:
        raise not_found("message", message_id)
    return message


async def retrieve_message(request: Request) -> Response:
    return JSONResponse(_message(simulator_of(request), request))


async def update_message(request: Request) -> Response:
    sim = simulator_of(request)
    message = _message(sim, request)
    body = await read_json(request, {"metadata"})
    meta = metadata(body)
    if meta is not None:
        message["metadata"] = meta
    return JSONResponse(message)


async def delete_message(request: Request) -> Response:
    sim = simulator_of(request)
    message = _message(sim, request)
    sim.messages[str(message["thread_id"])].remove(str(message["id"]))
    return JSONResponse({"id": message["id"], "object": "thread.message.deleted", "deleted": True})


def routes() -> list[Route]:
    thread = "/v1/threads/{thread_id}"
    message = thread + "/messages/{message_id}"
    return [
        Route("/v1/threads", create, methods=["POST"]),
        Route(thread, retrieve, methods=["GET"]),
        Route(thread, update, methods=["POST"]),
        Route(thread, delete, methods=["DELETE"]),
        Route(thread + "/messages", list_messages, methods=["GET"]),
        Route(thread + "/messages", create_message, methods=["POST"]),
        Route(message, retrieve_message, methods=["GET"]),
        Route(message, update_message, methods=["POST"]),
        Route(message, delete_message, methods=["DELETE"]),
    ]

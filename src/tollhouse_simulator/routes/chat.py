"""Endpoints for /v1/chat/completions: create (streamed or not) and the stored completions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import metadata, missing, read_json
from tollhouse_simulator.chat import CHAT_FIELDS, parse_chat
from tollhouse_simulator.completions import (
    StoredCompletion,
    cached_tokens,
    complete,
    store_completion,
    stream_chunks,
)
from tollhouse_simulator.sse import chat_stream
from tollhouse_simulator.state import simulator_of
from tollhouse_simulator.store import list_params


async def create(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, CHAT_FIELDS)
    chat = parse_chat(body)
    now = sim.now()
    completion = complete(chat, now, cached_tokens(chat, sim.prompt_prefixes))
    sim.chat_log.append((completion["created"], completion["model"], completion["usage"]))
    if chat.store:
        stored = store_completion(completion, chat)
        sim.chat_completions.insert(stored.id, completion["created"], stored)
    if chat.stream:
        return chat_stream(sim, stream_chunks(completion, chat.include_usage))
    return JSONResponse(completion)


def _metadata_filter(request: Request) -> dict[str, str]:
    """``metadata[key]=value`` query pairs, as the client sends a metadata filter."""
    return {
        key[len("metadata[") : -1]: value
        for key, value in request.query_params.multi_items()
        if key.startswith("metadata[") and key.endswith("]")
    }


async def list_completions(request: Request) -> Response:
    sim = simulator_of(request)
    model = request.query_params.get("model")
    wanted = _metadata_filter(request)

    def keep(stored: StoredCompletion) -> bool:
        if model is not None and stored.completion["model"] != model:
            return False
        return all(stored.metadata.get(key) == value for key, value in wanted.items())

    params = list_params(request.query_params, default_order="asc")
    return JSONResponse(sim.chat_completions.page(params, keep).json(StoredCompletion.render))


def _stored(request: Request) -> StoredCompletion:
    return simulator_of(request).chat_completion(request.path_params["completion_id"])


async def retrieve(request: Request) -> Response:
    return JSONResponse(_stored(request).render())


async def update(request: Request) -> Response:
    stored = _stored(request)
    body = await read_json(request, {"metadata"})
    if "metadata" not in body:
        raise missing("metadata")
    stored.metadata = metadata(body) or {}
    return JSONResponse(stored.render())


async def delete(request: Request) -> Response:
    sim = simulator_of(request)
    stored = _stored(request)
    sim.chat_completions.remove(stored.id)
    return JSONResponse({"object": "chat.completion.deleted", "id": stored.id, "deleted": True})


async def list_messages(request: Request) -> Response:
    stored = _stored(request)
    page = stored.messages.page(list_params(request.query_params, default_order="asc"))
    return JSONResponse(page.json(dict))


def routes() -> list[Route]:
    completion = "/v1/chat/completions/{completion_id}"
    return [
        Route("/v1/chat/completions", list_completions, methods=["GET"]),
        Route("/v1/chat/completions", create, methods=["POST"]),
        Route(completion, retrieve, methods=["GET"]),
        Route(completion, update, methods=["POST"]),
        Route(completion, delete, methods=["DELETE"]),
        Route(completion + "/messages", list_messages, methods=["GET"]),
    ]

"""Endpoints for /v1/conversations and their items."""

from __future__ import annotations

import copy
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import invalid_type, metadata, missing, read_json
from tollhouse_simulator.conversations import MAX_ITEMS_PER_REQUEST, Conversation
from tollhouse_simulator.errors import not_found
from tollhouse_simulator.inputs import Item, parse_items
from tollhouse_simulator.outputs import render_item
from tollhouse_simulator.routes.responses import include_of
from tollhouse_simulator.state import Simulator, simulator_of
from tollhouse_simulator.store import list_params, new_id


def _add(sim: Simulator, conversation: Conversation, value: object) -> list[Item]:
    items = parse_items(value, "items", sim.items.get, max_items=MAX_ITEMS_PER_REQUEST)
    for item in items:
        sim.items[item["id"]] = copy.deepcopy(item)
    return conversation.add(items, sim.now())


async def create(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, {"metadata", "items"})
    meta = metadata(body) or {}
    now = sim.now()
    conversation = Conversation(new_id("conv_"), int(now), meta)
    _add(sim, conversation, body.get("items") or [])
    sim.conversations.insert(conversation.id, conversation.created_at, conversation)
    return JSONResponse(conversation.render())


def _conversation(request: Request) -> Conversation:
    return simulator_of(request).conversation(request.path_params["conversation_id"])


async def retrieve(request: Request) -> Response:
    return JSONResponse(_conversation(request).render())


async def update(request: Request) -> Response:
    conversation = _conversation(request)
    body = await read_json(request, {"metadata"})
    if "metadata" not in body:
        raise missing("metadata")
    conversation.metadata = metadata(body) or {}
    return JSONResponse(conversation.render())


async def delete(request: Request) -> Response:
    sim = simulator_of(request)
    conversation = _conversation(request)
    sim.conversations.remove(conversation.id)
    return JSONResponse({"id": conversation.id, "object": "conversation.deleted", "deleted": True})


def _listing(items: list[Item], include: frozenset[str]) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [render_item(item, include) for item in items],
        "first_id": items[0]["id"] if items else None,
        "last_id": items[-1]["id"] if items else None,
        "has_more": False,
    }


async def create_items(request: Request) -> Response:
    sim = simulator_of(request)
    conversation = _conversation(request)
    include = include_of(request.query_params)
    body = await read_json(request, {"items"})
    value = body.get("items")
    if value is None:
        raise missing("items")
    if not isinstance(value, list):
        raise invalid_type("items", "an array", value)
    return JSONResponse(_listing(_add(sim, conversation, value), include))


async def list_items(request: Request) -> Response:
    conversation = _conversation(request)
    include = include_of(request.query_params)
    page = conversation.items.page(list_params(request.query_params))
    return JSONResponse(page.json(lambda item: render_item(item, include)))


def _item(conversation: Conversation, request: Request) -> Item:
    item_id = request.path_params["item_id"]
    item = conversation.items.get(item_id)
    if item is None:
        raise not_found("item", item_id)
    return item


async def retrieve_item(request: Request) -> Response:
    conversation = _conversation(request)
    include = include_of(request.query_params)
    return JSONResponse(render_item(_item(conversation, request), include))


async def delete_item(request: Request) -> Response:
    conversation = _conversation(request)
    conversation.items.remove(_item(conversation, request)["id"])
    return JSONResponse(conversation.render())


def routes() -> list[Route]:
    conversation = "/v1/conversations/{conversation_id}"
    item = conversation + "/items/{item_id}"
    return [
        Route("/v1/conversations", create, methods=["POST"]),
        Route(conversation, retrieve, methods=["GET"]),
        Route(conversation, update, methods=["POST"]),
        Route(conversation, delete, methods=["DELETE"]),
        Route(conversation + "/items", list_items, methods=["GET"]),
        Route(conversation + "/items", create_items, methods=["POST"]),
        Route(item, retrieve_item, methods=["GET"]),
        Route(item, delete_item, methods=["DELETE"]),
    ]

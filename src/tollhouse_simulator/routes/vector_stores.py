"""Endpoints for /v1/vector_stores: the stores themselves and search."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import (
    invalid_type,
    metadata,
    missing,
    optional_bool,
    optional_int,
    optional_object,
    optional_str,
    read_json,
    string_list,
)
from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.search import validate_filter
from tollhouse_simulator.state import simulator_of
from tollhouse_simulator.store import list_params
from tollhouse_simulator.vector_stores import VectorStore, chunking_strategy, expires_after

CREATE_FIELDS = frozenset(
    {"file_ids", "name", "description", "expires_after", "chunking_strategy", "metadata"}
)
SEARCH_FIELDS = frozenset(
    {"query", "rewrite_query", "max_num_results", "filters", "ranking_options"}
)


async def list_stores(request: Request) -> Response:
    sim = simulator_of(request)
    now = sim.now()
    page = sim.vector_stores.page(list_params(request.query_params))
    return JSONResponse(page.json(lambda store: store.render(now)))


async def create_store(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, CREATE_FIELDS)
    file_ids = string_list(body, "file_ids", max_items=500)
    optional_str(body, "description")
    now = sim.now()
    store = sim.create_vector_store(
        now,
        name=optional_str(body, "name") or "",
        file_ids=file_ids,
        metadata=metadata(body),
        expires_after=expires_after(body),
        chunking_strategy=chunking_strategy(body),
    )
    return JSONResponse(store.render(now))


def _store(request: Request) -> tuple[VectorStore, float]:
    sim = simulator_of(request)
    return sim.vector_store(request.path_params["vector_store_id"]), sim.now()


async def retrieve_store(request: Request) -> Response:
    store, now = _store(request)
    return JSONResponse(store.render(now))


async def update_store(request: Request) -> Response:
    store, now = _store(request)
    body = await read_json(request, {"name", "expires_after", "metadata"})
    name = optional_str(body, "name")
    after = expires_after(body)
    meta = metadata(body)
    if name is not None:
        store.name = name
    if "expires_after" in body:
        store.expires_after = after
    if meta is not None:
        store.metadata = meta
    return JSONResponse(store.render(now))


async def delete_store(request: Request) -> Response:
    sim = simulator_of(request)
    store, _ = _store(request)
    sim.vector_stores.remove(store.id)
    return JSONResponse({"id": store.id, "object": "vector_store.deleted", "deleted": True})


def _queries(value: Any) -> list[str]:
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(q, str) for q in value):
        return list(value)
    if value is None:
        raise missing("query")
    raise invalid_type("query", "a string or an array of strings", value)


async def search_store(request: Request) -> Response:
    sim = simulator_of(request)
    store, _ = _store(request)
    body = await read_json(request, SEARCH_FIELDS)
    queries = _queries(body.get("query"))
    optional_bool(body, "rewrite_query")
    limit = optional_int(body, "max_num_results", 1, 50) or 10
    filters = body.get("filters")
    if filters is not None:
        filters = validate_filter(filters)
    ranking = optional_object(body, "ranking_options") or {}
    threshold = ranking.get("score_threshold", 0.0)
    if not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        raise bad_request(
            "Invalid 'ranking_options.score_threshold': expected a number between 0 and 1.",
            param="ranking_options.score_threshold",
        )
    hits = sim.search([store.id], queries, limit, float(threshold), filters)
    return JSONResponse(
        {
            "object": "vector_store.search_results.page",
            "search_query": queries,
            "data": [
                {
                    "file_id": hit.file_id,
                    "filename": hit.filename,
                    "score": hit.score,
                    "attributes": dict(hit.attributes),
                    "content": [{"type": "text", "text": hit.text}],
                }
                for hit in hits
            ],
            "has_more": False,
            "next_page": None,
        }
    )


def routes() -> list[Route]:
    store = "/v1/vector_stores/{vector_store_id}"
    return [
        Route("/v1/vector_stores", list_stores, methods=["GET"]),
        Route("/v1/vector_stores", create_store, methods=["POST"]),
        Route(store, retrieve_store, methods=["GET"]),
        Route(store, update_store, methods=["POST"]),
        Route(store, delete_store, methods=["DELETE"]),
        Route(store + "/search", search_store, methods=["POST"]),
    ]

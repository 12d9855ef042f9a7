"""Endpoints for the files and file batches of a vector store."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import invalid_type, missing, read_json, required_str, string_list
from tollhouse_simulator.errors import bad_request, not_found, not_in_store
from tollhouse_simulator.state import Simulator, simulator_of
from tollhouse_simulator.store import ListParams, list_params, new_id
from tollhouse_simulator.vector_stores import (
    FILE_STATUSES,
    FileBatch,
    VectorStore,
    VectorStoreFile,
    attributes,
    chunking_strategy,
)

FILE_FIELDS = frozenset({"file_id", "attributes", "chunking_strategy"})
BATCH_FIELDS = frozenset({"file_ids", "files", "attributes", "chunking_strategy"})


def _store(request: Request) -> tuple[Simulator, VectorStore, float]:
    sim = simulator_of(request)
    return sim, sim.vector_store(request.path_params["vector_store_id"]), sim.now()


def _attached(store: VectorStore, request: Request) -> VectorStoreFile:
    file_id = request.path_params["file_id"]
    found = store.files.get(file_id)
    if found is None:
        raise not_in_store(file_id, store.id)
    return found


def _listing(request: Request) -> tuple[ListParams, str | None]:
    status = request.query_params.get("filter")
    if status is not None and status not in FILE_STATUSES:
        raise bad_request(
            f"Invalid value for 'filter': '{status}'. Supported values are: "
            f"{', '.join(FILE_STATUSES)}.",
            param="filter",
            code="invalid_value",
        )
    return list_params(request.query_params), status


async def list_files(request: Request) -> Response:
    _, store, now = _store(request)
    params, status = _listing(request)
    page = store.files.page(params, keep=lambda f: status is None or f.status(now) == status)
    return JSONResponse(page.json(lambda f: f.render(now)))


async def create_file(request: Request) -> Response:
    sim, store, now = _store(request)
    body = await read_json(request, FILE_FIELDS)
    record = sim.file(required_str(body, "file_id"), now)
    attached = sim.attach(
        store,
        record,
        now,
        attributes=attributes(body),
        chunking_strategy=chunking_strategy(body),
    )
    return JSONResponse(attached.render(now))


async def retrieve_file(request: Request) -> Response:
    _, store, now = _store(request)
    return JSONResponse(_attached(store, request).render(now))


async def update_file(request: Request) -> Response:
    _, store, now = _store(request)
    attached = _attached(store, request)
    body = await read_json(request, {"attributes"})
    if "attributes" not in body:
        raise missing("attributes")
    attached.attributes = attributes(body) or {}
    return JSONResponse(attached.render(now))


async def delete_file(request: Request) -> Response:
    _, store, _ = _store(request)
    attached = _attached(store, request)
    store.files.remove(attached.file_id)
    return JSONResponse(
        {"id": attached.file_id, "object": "vector_store.file.deleted", "deleted": True}
    )


async def file_content(request: Request) -> Response:
    sim, store, _ = _store(request)
    attached = _attached(store, request)
    record = sim.files.get(attached.file_id)
    text = record.text() if record is not None else None
    data = [] if text is None else [{"type": "text", "text": text}]
    return JSONResponse(
        {
            "object": "vector_store.file_content.page",
            "data": data,
            "has_more": False,
            "next_page": None,
        }
    )


def _batch_entries(body: dict[str, Any]) -> list[dict[str, Any]]:
    file_ids = string_list(body, "file_ids", max_items=2000)
    files = body.get("files")
    if file_ids is not None and files is not None:
        raise bad_request("'file_ids' and 'files' are mutually exclusive.", param="files")
    if files is None:
        if not file_ids:
            raise missing("file_ids")
        shared = {"attributes": attributes(body), "chunking_strategy": chunking_strategy(body)}
        return [{"file_id": file_id, **shared} for file_id in file_ids]
    if not isinstance(files, list) or not files or len(files) > 2000:
        raise invalid_type("files", "an array of 1 to 2000 objects", files)
    entries = []
    for index, item in enumerate(files):
        if not isinstance(item, dict):
            raise invalid_type(f"files[{index}]", "an object", item)
        entries.append(
            {
                "file_id": required_str(item, "file_id", prefix=f"files[{index}]."),
                "attributes": attributes(item),
                "chunking_strategy": chunking_strategy(item),
            }
        )
    return entries


async def create_batch(request: Request) -> Response:
    sim, store, now = _store(request)
    entries = _batch_entries(await read_json(request, BATCH_FIELDS))
    records = [sim.file(entry["file_id"], now) for entry in entries]
    batch = FileBatch(new_id("vsfb_"), store.id, int(now), [r.id for r in records])
    store.batches.insert(batch.id, batch.created_at, batch)
    for record, entry in zip(records, entries, strict=True):
        sim.attach(
            store,
            record,
            now,
            attributes=entry["attributes"],
            chunking_strategy=entry["chunking_strategy"],
            batch_id=batch.id,
        )
    return JSONResponse(store.render_batch(batch, now))


def _batch(store: VectorStore, request: Request) -> FileBatch:
    batch_id = request.path_params["batch_id"]
    found = store.batches.get(batch_id)
    if found is None:
        raise not_found("file batch", batch_id)
    return found


async def retrieve_batch(request: Request) -> Response:
    _, store, now = _store(request)
    return JSONResponse(store.render_batch(_batch(store, request), now))


async def cancel_batch(request: Request) -> Response:
    _, store, now = _store(request)
    batch = _batch(store, request)
    store.cancel_batch(batch, now)
    return JSONResponse(store.render_batch(batch, now))


async def list_batch_files(request: Request) -> Response:
    _, store, now = _store(request)
    batch = _batch(store, request)
    params, status = _listing(request)
    page = store.files.page(
        params,
        keep=lambda f: f.batch_id == batch.id and (status is None or f.status(now) == status),
    )
    return JSONResponse(page.json(lambda f: f.render(now)))


def routes() -> list[Route]:
    files = "/v1/vector_stores/{vector_store_id}/files"
    batches = "/v1/vector_stores/{vector_store_id}/file_batches"
    batch = batches + "/{batch_id}"
    return [
        Route(files, list_files, methods=["GET"]),
        Route(files, create_file, methods=["POST"]),
        Route(files + "/{file_id}", retrieve_file, methods=["GET"]),
        Route(files + "/{file_id}", update_file, methods=["POST"]),
        Route(files + "/{file_id}", delete_file, methods=["DELETE"]),
        Route(files + "/{file_id}/content", file_content, methods=["GET"]),
        Route(batches, create_batch, methods=["POST"]),
        Route(batch, retrieve_batch, methods=["GET"]),
        Route(batch + "/cancel", cancel_batch, methods=["POST"]),
        Route(batch + "/files", list_batch_files, methods=["GET"]),
    ]

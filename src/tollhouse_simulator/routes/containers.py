"""Endpoints for /v1/containers and their files (uploaded, or copied from /v1/files)."""

from __future__ import annotations

import asyncio
import shutil

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import read_json, required_str, string_list
from tollhouse_simulator.containers import (
    Container,
    ContainerFile,
    idle_minutes,
    memory_limit,
    network_policy,
)
from tollhouse_simulator.errors import bad_request, not_found
from tollhouse_simulator.files import copy_to
from tollhouse_simulator.state import Simulator, simulator_of
from tollhouse_simulator.store import list_params, new_id

CREATE_FIELDS = frozenset(
    {"name", "file_ids", "expires_after", "skills", "memory_limit", "network_policy"}
)


async def create(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, CREATE_FIELDS)
    now = sim.now()
    container = sim.create_container(
        now,
        name=required_str(body, "name"),
        memory_limit=memory_limit(body),
        idle_minutes=idle_minutes(body),
        network_policy=network_policy(body),
        file_ids=string_list(body, "file_ids", max_items=10_000),
    )
    return JSONResponse(container.render(now))


async def list_containers(request: Request) -> Response:
    sim = simulator_of(request)
    name = request.query_params.get("name")
    now = sim.now()
    page = sim.containers.page(
        list_params(request.query_params),
        keep=None if name is None else lambda container: container.name == name,
    )
    return JSONResponse(page.json(lambda container: container.render(now)))


def _container(request: Request) -> tuple[Simulator, Container]:
    sim = simulator_of(request)
    return sim, sim.container(request.path_params["container_id"])


async def retrieve(request: Request) -> Response:
    sim, container = _container(request)
    return JSONResponse(container.render(sim.now()))


async def delete(request: Request) -> Response:
    sim, container = _container(request)
    sim.remove_container(container)
    return JSONResponse({"id": container.id, "object": "container.deleted", "deleted": True})


async def _upload(sim: Simulator, container: Container, request: Request) -> ContainerFile:
    try:
        async with request.form(max_files=1, max_fields=5) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request(
                    "Missing required parameter: 'file'.",
                    param="file",
                    code="missing_required_parameter",
                )
            file_id = new_id("cfile_")
            path = sim.container_path(container, file_id)
            size = await asyncio.to_thread(copy_to, upload.file, path)
            filename = upload.filename or "upload"
    except HTTPException as exc:
        raise bad_request(f"Could not parse the multipart body: {exc.detail}") from None
    return sim.add_container_file(container, file_id, size, filename, sim.now())


async def create_file(request: Request) -> Response:
    sim, container = _container(request)
    now = sim.now()
    if container.status(now) == "expired":
        raise bad_request(f"Container '{container.id}' is expired.", param="container_id")
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        return JSONResponse((await _upload(sim, container, request)).render())
    body = await read_json(request, {"file_id"})
    record = sim.file(required_str(body, "file_id"), now)
    file_id = new_id("cfile_")
    await asyncio.to_thread(shutil.copyfile, record.path, sim.container_path(container, file_id))
    added = sim.add_container_file(container, file_id, record.bytes, record.filename, now)
    return JSONResponse(added.render())


async def list_files(request: Request) -> Response:
    _, container = _container(request)
    page = container.files.page(list_params(request.query_params))
    return JSONResponse(page.json(ContainerFile.render))


def _file(request: Request) -> tuple[Container, ContainerFile]:
    _, container = _container(request)
    file_id = request.path_params["file_id"]
    found = container.files.get(file_id)
    if found is None:
        raise not_found("container file", file_id)
    return container, found


async def retrieve_file(request: Request) -> Response:
    return JSONResponse(_file(request)[1].render())


async def delete_file(request: Request) -> Response:
    container, found = _file(request)
    container.files.remove(found.id)
    found.disk.unlink(missing_ok=True)
    return JSONResponse({"id": found.id, "object": "container.file.deleted", "deleted": True})


async def file_content(request: Request) -> Response:
    return FileResponse(_file(request)[1].disk, media_type="application/octet-stream")


def routes() -> list[Route]:
    container = "/v1/containers/{container_id}"
    stored = container + "/files/{file_id}"
    return [
        Route("/v1/containers", list_containers, methods=["GET"]),
        Route("/v1/containers", create, methods=["POST"]),
        Route(container, retrieve, methods=["GET"]),
        Route(container, delete, methods=["DELETE"]),
        Route(container + "/files", list_files, methods=["GET"]),
        Route(container + "/files", create_file, methods=["POST"]),
        Route(stored, retrieve_file, methods=["GET"]),
        Route(stored, delete_file, methods=["DELETE"]),
        Route(stored + "/content", file_content, methods=["GET"]),
    ]

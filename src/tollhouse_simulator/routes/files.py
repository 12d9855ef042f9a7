"""Endpoints for /v1/files: multipart upload to disk, listing, download, delete."""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.errors import bad_request
from tollhouse_simulator.files import FileRecord, check_purpose, copy_to, file_expiry
from tollhouse_simulator.state import simulator_of
from tollhouse_simulator.store import list_params, new_id


def _field(value: object) -> str | None:
    return value if isinstance(value, str) else None


async def create_file(request: Request) -> Response:
    sim = simulator_of(request)
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise bad_request(
            f"Invalid Content-Type header ({content_type or 'none'}), expected multipart/form-data."
        )
    try:
        async with request.form(max_files=1, max_fields=10) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise bad_request(
                    "Missing required parameter: 'file'.",
                    param="file",
                    code="missing_required_parameter",
                )
            purpose = check_purpose(_field(form.get("purpose")))
            lifetime = file_expiry(
                _field(form.get("expires_after[anchor]")),
                _field(form.get("expires_after[seconds]")),
            )
            now = int(sim.now())
            file_id = new_id("file-")
            path = sim.storage() / file_id
            size = await asyncio.to_thread(copy_to, upload.file, path)
            record = FileRecord(
                id=file_id,
                bytes=size,
                created_at=now,
                filename=upload.filename or "upload",
                purpose=purpose,
                path=path,
                expires_at=None if lifetime is None else now + lifetime,
            )
    except HTTPException as exc:
        raise bad_request(f"Could not parse the multipart body: {exc.detail}") from None
    sim.files.insert(file_id, now, record)
    return JSONResponse(record.render())


async def list_files(request: Request) -> Response:
    sim = simulator_of(request)
    params = list_params(request.query_params, default_limit=10_000, max_limit=10_000)
    purpose = request.query_params.get("purpose")
    now = sim.now()
    page = sim.files.page(
        params,
        keep=lambda f: not f.expired(now) and (purpose is None or f.purpose == purpose),
    )
    return JSONResponse(page.json(FileRecord.render))


async def retrieve_file(request: Request) -> Response:
    sim = simulator_of(request)
    return JSONResponse(sim.file(request.path_params["file_id"], sim.now()).render())


async def delete_file(request: Request) -> Response:
    sim = simulator_of(request)
    record = sim.file(request.path_params["file_id"], sim.now())
    sim.files.remove(record.id)
    record.path.unlink(missing_ok=True)
    return JSONResponse({"id": record.id, "object": "file", "deleted": True})


async def file_content(request: Request) -> Response:
    sim = simulator_of(request)
    record = sim.file(request.path_params["file_id"], sim.now())
    return FileResponse(record.path, media_type="application/octet-stream")


def routes() -> list[Route]:
    return [
        Route("/v1/files", list_files, methods=["GET"]),
        Route("/v1/files", create_file, methods=["POST"]),
        Route("/v1/files/{file_id}", retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", file_content, methods=["GET"]),
    ]

"""Endpoints for /v1/uploads: a large file sent in parts, completed into a File."""

from __future__ import annotations

import asyncio

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tollhouse_simulator.bodies import (
    missing,
    optional_int,
    optional_object,
    read_json,
    required_str,
    string_list,
)
from tollhouse_simulator.errors import bad_request, not_found
from tollhouse_simulator.files import FileRecord, check_purpose, copy_to, file_expiry
from tollhouse_simulator.state import Simulator, simulator_of
from tollhouse_simulator.store import new_id
from tollhouse_simulator.uploads import MAX_UPLOAD_BYTES, UploadRecord, assemble, part_object

CREATE_FIELDS = frozenset({"filename", "purpose", "bytes", "mime_type", "expires_after"})


async def create_upload(request: Request) -> Response:
    sim = simulator_of(request)
    body = await read_json(request, CREATE_FIELDS)
    filename = required_str(body, "filename")
    purpose = check_purpose(required_str(body, "purpose"))
    mime_type = required_str(body, "mime_type")
    size = optional_int(body, "bytes", 0, MAX_UPLOAD_BYTES)
    if size is None:
        raise missing("bytes")
    expiry = optional_object(body, "expires_after")
    lifetime = None if expiry is None else file_expiry(expiry.get("anchor"), expiry.get("seconds"))
    now = int(sim.now())
    upload_id = new_id("upload_")
    directory = sim.storage() / upload_id
    directory.mkdir()
    upload = UploadRecord(
        upload_id, now, filename, size, purpose, mime_type, directory, file_expires_after=lifetime
    )
    sim.uploads.insert(upload_id, now, upload)
    return JSONResponse(upload.render(now))


def _pending(sim: Simulator, request: Request) -> UploadRecord:
    upload_id = request.path_params["upload_id"]
    upload = sim.uploads.get(upload_id)
    if upload is None:
        raise not_found("upload", upload_id)
    status = upload.status(sim.now())
    if status != "pending":
        raise bad_request(f"Upload {upload_id} is {status}; it no longer accepts changes.")
    return upload


async def add_part(request: Request) -> Response:
    sim = simulator_of(request)
    upload = _pending(sim, request)
    part_id = new_id("part_")
    path = upload.directory / part_id
    try:
        async with request.form(max_files=1, max_fields=1) as form:
            data = form.get("data")
            if not isinstance(data, UploadFile):
                raise missing("data")
            size = await asyncio.to_thread(copy_to, data.file, path)
    except HTTPException as exc:
        raise bad_request(f"Could not parse the multipart body: {exc.detail}") from None
    now = int(sim.now())
    upload.parts[part_id] = (size, path)
    return JSONResponse(part_object(part_id, now, upload.id))


async def complete_upload(request: Request) -> Response:
    sim = simulator_of(request)
    upload = _pending(sim, request)
    body = await read_json(request, {"part_ids", "md5"})
    part_ids = string_list(body, "part_ids", max_items=10_000)
    if part_ids is None:
        raise missing("part_ids")
    unknown = [part_id for part_id in part_ids if part_id not in upload.parts]
    if unknown:
        raise bad_request(f"Part {unknown[0]} does not belong to upload {upload.id}.", "part_ids")
    received = sum(upload.parts[part_id][0] for part_id in part_ids)
    if received != upload.bytes:
        raise bad_request(
            f"The parts add up to {received} bytes, but the upload was created for "
            f"{upload.bytes} bytes.",
            param="part_ids",
        )
    now = int(sim.now())
    file_id = new_id("file-")
    target = sim.storage() / file_id
    paths = [upload.parts[part_id][1] for part_id in part_ids]
    size = await asyncio.to_thread(assemble, paths, target)
    lifetime = upload.file_expires_after
    upload.file = FileRecord(
        id=file_id,
        bytes=size,
        created_at=now,
        filename=upload.filename,
        purpose=upload.purpose,
        path=target,
        expires_at=None if lifetime is None else now + lifetime,
    )
    upload.discard_parts()
    sim.files.insert(file_id, now, upload.file)
    return JSONResponse(upload.render(now))


async def cancel_upload(request: Request) -> Response:
    sim = simulator_of(request)
    upload = _pending(sim, request)
    upload.cancelled = True
    upload.discard_parts()
    return JSONResponse(upload.render(sim.now()))


def routes() -> list[Route]:
    upload = "/v1/uploads/{upload_id}"
    return [
        Route("/v1/uploads", create_upload, methods=["POST"]),
        Route(upload + "/parts", add_part, methods=["POST"]),
        Route(upload + "/complete", complete_upload, methods=["POST"]),
        Route(upload + "/cancel", cancel_upload, methods=["POST"]),
    ]

"""The isolation step of the request path, as parts the proxy puts in order.

Which ids a request names (path, query, body) and how strictly each is checked;
reading a write's body whole to check it; and an answer read with its twins mapped
back. The decisions are here; the proxy asks ownership and forwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import unquote

from tollhouse.api import references
from tollhouse.api.classify import Operation
from tollhouse.api.dialects import canonical_path
from tollhouse.api.errors import ErrorResponse, body_too_large, encoded_body, unparseable_body
from tollhouse.proxy.asgi import BodyTooLarge, Receive, request_body, whole_body
from tollhouse.proxy.codings import accepted
from tollhouse.proxy.lists import SHARED_LISTS
from tollhouse.proxy.ownership import path_ids
from tollhouse.proxy.twins import StreamRestorer, query_ids
from tollhouse.upstream.forward import Headers, UpstreamResponse

# Writes whose reference body is multipart: they stream, unread (no field names an object).
MULTIPART_OPERATIONS = frozenset(
    {"files.create", "uploads.parts.create", "containers.files.create"}
)
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
Body = bytes | AsyncIterator[bytes] | None


class Refused(Exception):
    """A request answered by tollhouse itself, before it reaches the upstream."""

    def __init__(self, error: ErrorResponse) -> None:
        super().__init__(error.message)
        self.error = error

    def response(self) -> ErrorResponse:
        return self.error


def header(headers: Headers, name: bytes) -> bytes | None:
    """The first value of the header ``name`` (lower case), if any."""
    return next((v for k, v in headers if k.lower() == name), None)


def inspects_body(method: str, operation: Operation, headers: Headers) -> bool:
    """Whether a request's body is read whole and checked for the objects it names."""
    if method not in BODY_METHODS or operation.name in MULTIPART_OPERATIONS:
        return False
    if operation.known:
        return True
    media = (header(headers, b"content-type") or b"application/json").split(b";")[0].strip()
    return media.lower() in (b"application/json", b"text/plain", b"")


async def checked_body(
    receive: Receive, method: str, operation: Operation, headers: Headers, limit: int
) -> tuple[Body, object]:
    """The request body, and its JSON document when it is one that must be checked.

    Writes with a JSON body are read whole, however they are framed; multipart
    uploads stream untouched. Raises ``Refused`` for a body that cannot be checked.
    """
    if not inspects_body(method, operation, headers):
        return await request_body(receive), None
    coding = header(headers, b"content-encoding")
    if coding and coding.strip().lower() != b"identity":
        raise Refused(encoded_body(coding.decode("latin-1")))
    declared = header(headers, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise Refused(body_too_large(limit))
    try:
        body = await whole_body(receive, limit)
    except BodyTooLarge:
        raise Refused(body_too_large(limit)) from None
    if not body.strip():
        return body, None
    try:
        return body, references.parse(body)
    except references.UnreadableBody:
        # An operation tollhouse does not know may take a body that is not JSON:
        # it is forwarded as it is; a known one gets OpenAI's own 400.
        if not operation.known:
            return body, None
        raise Refused(unparseable_body()) from None


@dataclass(frozen=True, slots=True)
class Named:
    """The ids a request names: ``strict`` must be the caller's (or open), ``loose``
    must only not be another tenant's; ``in_body`` are its body's references."""

    strict: list[str]
    loose: list[str]
    in_body: list[str]


def named_ids(operation: Operation, raw_path: str, query: str, document: object) -> Named:
    if operation.known:
        strict, loose = path_ids(operation)
    else:  # an operation tollhouse does not know: no id in it may be another tenant's
        # (an Azure deployment names a model, not an object: the canonical path has none)
        segments = (unquote(s) for s in canonical_path(raw_path).split("/"))
        strict, loose = [], [s for s in segments if references.ID_SHAPE.match(s)]
    cursors, others = query_ids(query)
    if operation.name in SHARED_LISTS:
        strict += cursors
    else:
        loose += cursors
    loose += others  # filters such as ?run_id=: never another tenant's
    in_body: list[str] = []
    if document is not None:
        in_body = [object_id for _, object_id in references.references(document)]
        strict += in_body
        if not operation.known:
            loose += references.id_strings(document)
    return Named(strict, loose, in_body)


def narrowed(headers: Headers) -> Headers:
    """An isolated tenant's headers: its answers come in codings tollhouse can undo."""
    return [(k, accepted(v) if k.lower() == b"accept-encoding" else v) for k, v in headers]


class RestoredResponse:
    """An upstream stream read through a ``StreamRestorer``: twins mapped back as it flows."""

    def __init__(self, response: UpstreamResponse, restorer: StreamRestorer) -> None:
        self._response = response
        self._restorer = restorer
        self.status = response.status
        self.headers = response.headers
        self.content_length = None  # mapped back as it flows: relayed chunk by chunk
        self.content_type = response.content_type

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self._response.chunks():
            if out := self._restorer.feed(chunk):
                yield out
        if rest := self._restorer.end():
            yield rest

    def close(self) -> None:
        self._response.close()

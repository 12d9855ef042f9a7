"""OpenAI-shaped error responses, and the one place exceptions become HTTP statuses."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class ErrorResponse:
    """A complete error answer: status, extra headers and the JSON envelope."""

    status: int
    message: str
    type: str
    code: str | None = None
    param: str | None = None
    headers: Headers = field(default_factory=list)

    def body(self) -> bytes:
        envelope = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return json.dumps(envelope).encode()

    def asgi_headers(self, body: bytes | None = None) -> Headers:
        length = len(body if body is not None else self.body())
        return [
            (b"content-type", b"application/json"),
            (b"content-length", str(length).encode()),
            *self.headers,
        ]


class TollhouseError(Exception):
    """Base class of errors a client is answered with; each knows its response."""

    def response(self) -> ErrorResponse:
        raise NotImplementedError


def not_found(method: str, path: str) -> ErrorResponse:
    return ErrorResponse(
        status=404,
        message=f"Invalid URL ({method} {path})",
        type="invalid_request_error",
    )


def body_too_large(limit: int) -> ErrorResponse:
    return ErrorResponse(
        status=413,
        message=(
            f"The request body is larger than {limit} bytes, the most tollhouse reads of a "
            "JSON request. Send less in one request (for example, fewer messages or ids)."
        ),
        type="invalid_request_error",
        code="request_too_large",
    )


def unparseable_body() -> ErrorResponse:
    # OpenAI's own wording for a body it cannot parse.
    return ErrorResponse(
        status=400,
        message=(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON.)"
        ),
        type="invalid_request_error",
    )


def encoded_body(encoding: str) -> ErrorResponse:
    return ErrorResponse(
        status=415,
        message=(
            f"Request bodies with Content-Encoding '{encoding[:32]}' are not accepted here: "
            "send the JSON body uncompressed."
        ),
        type="invalid_request_error",
        code="unsupported_content_encoding",
    )
